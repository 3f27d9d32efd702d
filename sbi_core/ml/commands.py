"""Subcommands of the learning stage (see `sbi_core.cli`): sample, merge-samples."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the learning-stage subcommands on the `sbi-core` parser."""
    s = sub.add_parser("sample", help="augmented training/validation/test sets of one method")
    s.add_argument("--run", required=True, help="run URI (configured and combined, or derived)")
    s.add_argument("--method", required=True, help="an estimator listed in the run's training.methods")
    s.set_defaults(handler=_sample)

    s = sub.add_parser("merge-samples", help="a run's training sets as the union of other runs' sets (train and val; "
                       "the test set is the first part's)")
    s.add_argument("--run", required=True, help="the run whose sets are written (configured or derived)")
    s.add_argument("--method", required=True, help="an estimator listed in the run's training.methods")
    s.add_argument("--part", dest="parts", action="append", required=True,
                   help="a sampled run whose sets are added, in order (repeatable; the first gives the test set)")
    s.set_defaults(handler=_merge)


def _sample(args: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.ml.samples import sample

    return sample(args.run, args.method)


def _merge(args: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.ml.merge import merge_samples

    return merge_samples(args.run, args.method, args.parts)
