"""Subcommands of the learning stage (see `sbi_core.cli`): sample."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the learning-stage subcommands on the `sbi-core` parser."""
    s = sub.add_parser("sample", help="augmented training/validation/test sets of one method")
    s.add_argument("--run", required=True, help="run URI (configured and combined, or derived)")
    s.add_argument("--method", required=True, help="an estimator listed in the run's training.methods")
    s.set_defaults(handler=_sample)


def _sample(args: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.ml.samples import sample

    return sample(args.run, args.method)
