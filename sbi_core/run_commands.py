"""Subcommands of a whole run: schema, configure, derive, resample, import-madminer (see `sbi_core.cli`)."""

from __future__ import annotations

import argparse
from typing import Any

from sbi_core.cli_helpers import add_set_option


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the whole-run subcommands on the `sbi-core` parser."""
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

    s = sub.add_parser("resample", help="a new run of the same analysis whose events are drawn at a parameter point "
                       "(active learning); then generate, combine, sample it and merge-samples")
    s.add_argument("--from", dest="source", required=True, help="the run whose analysis is resampled")
    s.add_argument("--run", required=True, help="the new run URI")
    s.add_argument("--at", dest="point", action="append", required=True, metavar="NAME=VALUE",
                   help="the point, one parameter per flag (repeatable; every parameter)")
    s.add_argument("--events", type=int, required=True, help="events to generate at the point")
    s.add_argument("--shards", type=int, default=None, help="shards (default: the source's events per shard)")
    s.add_argument("--seed", type=int, default=None, help="generation seed (default: from the source's and the point)")
    add_set_option(s)
    s.set_defaults(handler=_resample)
    s = sub.add_parser("import-madminer", help="a run from a MadMiner event file (after combine_and_shuffle)")
    s.add_argument("--file", required=True, help="the MadMiner HDF5 event file (path or URI)")
    s.add_argument("--run", required=True, help="the new run URI")
    add_set_option(s)
    s.set_defaults(handler=lambda a: _steps().import_madminer(a.file, a.run, a.overrides))


def _steps() -> Any:
    from sbi_core import steps

    return steps


def _resample(a: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.errors import InputError

    point: dict[str, float] = {}
    for item in a.point:
        name, sep, value = item.partition("=")
        if not sep or not name or name in point:
            raise InputError(f"resample: --at {item!r}: expected NAME=NUMBER, each parameter once")
        try:
            point[name] = float(value)
        except ValueError:
            raise InputError(f"resample: --at {item!r}: expected NAME=NUMBER") from None
    return _steps().resample(a.source, a.run, point, a.events, a.shards, a.seed, a.overrides)


def _schema(_: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.config import json_schema

    return json_schema()
