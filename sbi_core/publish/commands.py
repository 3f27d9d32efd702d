"""Subcommand `export-likelihood` (see `sbi_core.cli`); the handler imports the exporter when it runs."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `export-likelihood` on the `sbi-core` parser."""
    s = sub.add_parser("export-likelihood",
                       help="write the run's likelihood as a self-contained artefact (directory and .tar.gz)")
    s.add_argument("--run", required=True, help="run URI")
    s.add_argument("--to", default=None,
                   help="artefact URI (directory; the archive is URI.tar.gz); default RUN/export/likelihood")
    s.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> dict:
    from sbi_core.publish.artefact import export_likelihood

    return export_likelihood(args.run, args.to)
