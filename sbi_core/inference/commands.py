"""Subcommands of the inference stage: dataset, likelihood, fit, bootstrap, hessian, assemble (see `sbi_core.cli`).

Handlers import `sbi_core.inference.steps` (and with it JAX) only when they run.
"""

from __future__ import annotations

import argparse
from typing import Any

from sbi_core.cli_helpers import each_block


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the inference-stage subcommands on the `sbi-core` parser."""
    s = sub.add_parser("dataset", help="build the configured dataset (pseudo, asimov or file) the fit runs on")
    s.add_argument("--run", required=True, help="run URI")
    s.set_defaults(handler=lambda a: _steps().dataset(a.run))

    s = sub.add_parser("likelihood", help="per-event likelihood arrays of the dataset: a batch, or join them")
    s.add_argument("--run", required=True, help="run URI")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--batch", dest="batches", type=int, action="append",
                       help="compute this batch of the dataset's events (repeatable)")
    which.add_argument("--join", action="store_true", help="join every batch into the dataset's likelihood file")
    s.set_defaults(handler=_likelihood)

    s = sub.add_parser("fit", help="global fit of the dataset (iminuit Migrad, JAX gradient)")
    s.add_argument("--run", required=True, help="run URI")
    s.set_defaults(handler=lambda a: _steps().fit(a.run))

    s = sub.add_parser("bootstrap", help="fit ensemble members' likelihoods alone: the method uncertainty")
    s.add_argument("--run", required=True, help="run URI")
    s.add_argument("--member", dest="members", type=int, action="append",
                   help="member index (repeatable; default: every member)")
    s.set_defaults(handler=_bootstrap)

    s = sub.add_parser("hessian", help="rows A:B of the NLL Hessian at the best fit (Hessian-vector products)")
    s.add_argument("--run", required=True, help="run URI")
    s.add_argument("--rows", required=True, action="append", metavar="A:B",
                   help="row range, as listed in fit's hessian_blocks (repeatable: a batch of blocks)")
    s.set_defaults(handler=lambda a: each_block("hessian", lambda rows: _steps().hessian(a.run, rows), a.rows))

    s = sub.add_parser("assemble", help="join the Hessian blocks: covariance, correlation, impacts")
    s.add_argument("--run", required=True, help="run URI")
    s.set_defaults(handler=lambda a: _steps().assemble(a.run))


def _steps() -> Any:
    from sbi_core.inference import steps

    return steps


def _likelihood(args: argparse.Namespace) -> dict[str, Any]:
    steps = _steps()
    return steps.likelihood_join(args.run) if args.join else steps.likelihood(args.run, args.batches)


def _bootstrap(args: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.inference.bootstrap import fit_members

    return fit_members(args.run, args.members)
