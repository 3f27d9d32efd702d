"""Subcommands of the data stage: schema, configure, generate, combine (see `sbi_core.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the data-stage subcommands on the `sbi-core` parser."""
    s = sub.add_parser("schema", help="print the analysis config JSON schema")
    s.add_argument("--indent", type=int, default=None, help="pretty-print (then it is no longer one line)")
    s.set_defaults(handler=_schema)

    s = sub.add_parser("configure", help="validate a config, write config.yaml, plan.json, setup.h5")
    s.add_argument("--config", required=True, help="analysis config YAML (path or URI)")
    s.add_argument("--run", default=None, help="run URI (default: the config's output)")
    add_set_option(s)
    s.set_defaults(handler=lambda a: _steps().configure(a.config, a.run, a.overrides))

    s = sub.add_parser("derive", help="a new run on an existing run's events, with other training/inference settings")
    s.add_argument("--from", dest="source", required=True, help="the existing run URI (configured and combined)")
    s.add_argument("--run", required=True, help="the new run URI")
    add_set_option(s)
    s.set_defaults(handler=lambda a: _steps().derive(a.source, a.run, a.overrides))

    s = sub.add_parser("generate", help="generate shards of a configured run")
    s.add_argument("--run", required=True, help="run URI")
    s.add_argument(
        "--shard",
        dest="shards",
        type=int,
        action="append",
        required=True,
        help="shard index (repeatable: one task may generate a batch of shards)",
    )
    s.set_defaults(handler=lambda a: _steps().generate(a.run, a.shards))

    s = sub.add_parser("combine", help="combine a group of shards, or all groups")
    s.add_argument("--run", required=True, help="run URI")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--group", dest="groups", type=int, action="append",
                       help="combine this group's shards into groups/group-G.h5 (repeatable: a batch of groups)")
    which.add_argument("--all", action="store_true", help="combine every group into events.h5")
    s.set_defaults(handler=_combine)


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


def _steps() -> Any:
    from sbi_core import steps

    return steps


def _schema(_: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.config import json_schema

    return json_schema()


def _combine(args: argparse.Namespace) -> dict[str, Any]:
    steps = _steps()
    return steps.combine(args.run, None) if args.all else steps.combine_groups(args.run, args.groups)
