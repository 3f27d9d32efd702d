"""Helpers every stage's subcommands share: the `--set` option and running a batch of blocks in one task."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["add_set_option", "each_block"]


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """`--set PATH=VALUE` (repeatable): a config override, as configure takes it."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a config value, e.g. generation.events=10000 (repeatable)",
    )


def each_block(step: str, run_block: Callable[[str], dict[str, Any]], blocks: list[str]) -> dict[str, Any]:
    """Run a block step for every block a task was given (a batch, past the fan-out limit), one after another.

    Each block still writes its own files, so a join finds the configured blocks whatever the batching.
    One block gives that block's summary; several give `{"step", "blocks": [summaries]}`."""
    results = [run_block(block) for block in blocks]
    return results[0] if len(results) == 1 else {"step": step, "blocks": results}
