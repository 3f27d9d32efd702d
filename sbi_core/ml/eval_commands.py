"""Subcommands of the evaluation stage: evaluate (see `sbi_core.cli`). Handlers import heavy modules lazily."""

from __future__ import annotations

import argparse
from typing import Any

from sbi_core.cli_helpers import each_block


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `evaluate` on the `sbi-core` parser."""
    s = sub.add_parser("evaluate", help="evaluate the ensembles on a batch of the test sets, or write the report")
    s.add_argument("--run", required=True, help="run URI (trained: after `sbi-core ensemble`)")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--batch", dest="batches", type=int, action="append",
                       help="evaluate batch I of the test sets (see ensemble's evaluate_batches; repeatable)")
    which.add_argument("--report", action="store_true",
                       help="join the batches: metrics.json, PNG plots, MLflow report and registered ensembles")
    s.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.ml import evaluate

    if args.report:
        return evaluate.evaluate_report(args.run)
    return each_block("evaluate", lambda batch: evaluate.evaluate_batch(args.run, int(batch)), args.batches)
