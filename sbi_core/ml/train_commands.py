"""Subcommands of the training stage: train, ensemble (see `sbi_core.cli`). Handlers import torch lazily."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `train` and `ensemble` on the `sbi-core` parser."""
    s = sub.add_parser("train", help="train networks of a run (a batch, one after another; resumes checkpoints)")
    s.add_argument("--run", required=True, help="run URI (configured, sampled)")
    s.add_argument("--network", dest="networks", action="append", required=True,
                   help="network id <method>-<head>-<variation>-mNN (repeatable: a batch)")
    s.set_defaults(handler=_train)

    s = sub.add_parser("ensemble", help="group trained networks into ensembles; fails below training.min_members")
    s.add_argument("--run", required=True, help="run URI")
    s.set_defaults(handler=_ensemble)


def _train(args: argparse.Namespace) -> dict:
    from sbi_core.ml.train_step import train

    return train(args.run, args.networks)


def _ensemble(args: argparse.Namespace) -> dict:
    from sbi_core.ml.ensemble import build_ensembles

    return build_ensembles(args.run)
