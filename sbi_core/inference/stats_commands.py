"""Subcommands of the inference statistics: scan, limits, toys, report (see `sbi_core.cli`).

Handlers import `sbi_core.inference.stats_steps` (and with it JAX) only when they run.
"""

from __future__ import annotations

import argparse
from typing import Any

from sbi_core.cli_helpers import each_block


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the statistics subcommands on the `sbi-core` parser."""
    s = sub.add_parser("scan", help="profile-likelihood scan: points A:B of the configured grid, observed and expected")
    s.add_argument("--run", required=True, help="run URI")
    s.add_argument("--points", required=True, action="append", metavar="A:B",
                   help="point range, as listed in assemble's scan_blocks (repeatable: a batch of blocks)")
    s.set_defaults(handler=lambda a: each_block("scan", lambda points: _steps().scan(a.run, points), a.points))

    s = sub.add_parser("limits", help="join the scan: Wilks intervals and contours, CLs upper limits")
    s.add_argument("--run", required=True, help="run URI")
    s.set_defaults(handler=lambda a: _steps().limits(a.run))

    s = sub.add_parser("toys", help="toys A:B: resampled pseudo-experiments, each fitted")
    s.add_argument("--run", required=True, help="run URI")
    s.add_argument("--toys", required=True, action="append", metavar="A:B",
                   help="toy range, as listed in assemble's toy_blocks (repeatable: a batch of blocks)")
    s.set_defaults(handler=lambda a: each_block("toys", lambda toys: _steps().toys(a.run, toys), a.toys))

    s = sub.add_parser("report", help="results.json and PNG plots of the fit, intervals, limits and toys")
    s.add_argument("--run", required=True, help="run URI")
    s.set_defaults(handler=lambda a: _steps().report(a.run))


def _steps() -> Any:
    from sbi_core.inference import stats_steps

    return stats_steps
