"""Subcommands of the physics stage: `ingest-lhe`, `train-sampler` (see `sbi_core.cli`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the physics-stage subcommands on the `sbi-core` parser."""
    s = sub.add_parser("ingest-lhe", help="read input LHE file(s) of an lhe run into shards (resumable)")
    s.add_argument("--run", required=True, help="run URI (configured with simulator lhe)")
    s.add_argument(
        "--file",
        dest="files",
        type=int,
        action="append",
        required=True,
        help="index of an input file in simulator.options.files (repeatable: one task may ingest a batch)",
    )
    s.set_defaults(handler=_ingest)

    s = sub.add_parser("train-sampler", help="train the run's phase-space sampler once, before generate (gpu)")
    s.add_argument("--run", required=True, help="run URI (configured)")
    s.add_argument("--sampler", default=None, help="the sampler the plan expects (checked against the config)")
    s.set_defaults(handler=_train_sampler)


def _ingest(args: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.data.ingest import ingest_lhe

    return ingest_lhe(args.run, args.files)


def _train_sampler(args: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.physics.sampler_step import train_sampler

    return train_sampler(args.run, args.sampler)
