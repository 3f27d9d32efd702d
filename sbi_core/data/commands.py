"""Subcommands of the data stage: generate, combine (see `sbi_core.cli`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the data-stage subcommands on the `sbi-core` parser."""
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


def _steps() -> Any:
    from sbi_core.data import steps

    return steps


def _combine(args: argparse.Namespace) -> dict[str, Any]:
    steps = _steps()
    return steps.combine(args.run, None) if args.all else steps.combine_groups(args.run, args.groups)
