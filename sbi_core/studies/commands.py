"""`sbi-core study ...`: the study steps (see `sbi_core.studies.steps`). Handlers import the steps when they run.

    sbi-core study --create --study URI (--config FILE | --set kind=toy_limits --set run=RUN ...)
    sbi-core study --plan --study URI [--round R]
    sbi-core study --work --study URI --round R --item I [--item J ...]
    sbi-core study --aggregate --study URI --round R
    sbi-core study --finish --study URI
    sbi-core study --drive --study URI          (every remaining round in this process, then finish)
    sbi-core study --show URI
    sbi-core study --stop URI [--reason TEXT]
    sbi-core study --schema [--indent 2]
"""

from __future__ import annotations

import argparse
from typing import Any

from sbi_core.cli_helpers import add_set_option
from sbi_core.errors import InputError

ACTIONS = ("create", "plan", "work", "aggregate", "finish", "drive")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `sbi-core study` on the parser."""
    s = sub.add_parser("study", help="iterative studies (toy limits, ...): create, plan, work, aggregate, finish, "
                       "show, stop")
    action = s.add_mutually_exclusive_group(required=True)
    action.add_argument("--create", action="store_true", help="validate a study config and create the study")
    action.add_argument("--plan", action="store_true", help="plan a round (the current one by default)")
    action.add_argument("--work", action="store_true", help="evaluate work items of a round (mapped)")
    action.add_argument("--aggregate", action="store_true", help="fold a round's results; decide continue or finish")
    action.add_argument("--finish", action="store_true", help="final results and plots of an ended study")
    action.add_argument("--drive", action="store_true", help="run the remaining rounds here, then finish (no Airflow)")
    action.add_argument("--show", metavar="URI", help="where a study stands, why it stopped, its history")
    action.add_argument("--stop", metavar="URI", help="set the stop flag: the study ends at its next aggregate")
    action.add_argument("--schema", action="store_true", help="the study config's JSON schema (every kind)")
    s.add_argument("--study", metavar="URI", help="the study's prefix (local directory or s3://)")
    s.add_argument("--config", default=None, help="study config YAML (path or URI) for --create")
    add_set_option(s)
    s.add_argument("--round", type=int, default=None, help="round number (1, 2, ...)")
    s.add_argument("--item", dest="items", action="append", default=[], help="work item id (repeatable)")
    s.add_argument("--reason", default="", help="why the study is stopped (--stop)")
    s.add_argument("--indent", type=int, default=None, help="pretty-print --schema")
    s.set_defaults(handler=_study)


def _need(args: argparse.Namespace, action: str, *names: str) -> None:
    missing = [f"--{n}" for n in names if not getattr(args, n if n != "item" else "items")]
    if missing:
        raise InputError(f"study --{action} needs {' and '.join(missing)}")


def _study(args: argparse.Namespace) -> dict[str, Any]:
    from sbi_core.studies import steps

    if args.schema:
        from sbi_core.studies.schema import study_schema

        return study_schema()
    if args.show:
        return steps.show(args.show)
    if args.stop:
        return steps.stop(args.stop, args.reason)
    action = next(a for a in ACTIONS if getattr(args, a))
    _need(args, action, "study")
    if action == "create":
        return steps.create(args.study, args.config, args.overrides)
    if action == "plan":
        return steps.plan(args.study, args.round)
    if action == "finish":
        return steps.finish(args.study)
    if action == "drive":
        return steps.drive(args.study)
    _need(args, action, "round", *(["item"] if action == "work" else []))
    if action == "work":
        return steps.work(args.study, args.round, args.items)
    return steps.aggregate(args.study, args.round)
