"""`sbi-core <step> ...`: the ONE entry point that pods and local runs call.

stdout carries exactly one line: the step's JSON summary (it becomes the Airflow task's XCom).
Everything else (logs, progress, library chatter, even from C code) goes to stderr.
Exit codes: 0 success, 2 bad input (the message names the field, file or shard), 1 failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from sbi_core import __version__

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
log = logging.getLogger("sbi_core")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sbi-core", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"sbi-core {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")

    s = sub.add_parser("schema", help="print the analysis config JSON schema")
    s.add_argument("--indent", type=int, default=None, help="pretty-print (then it is no longer one line)")

    s = sub.add_parser("configure", help="validate a config, write config.yaml, plan.json, setup.h5")
    s.add_argument("--config", required=True, help="analysis config YAML (path or URI)")
    s.add_argument("--run", default=None, help="run URI (default: the config's output)")
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a config value, e.g. generation.events=10000 (repeatable)",
    )

    s = sub.add_parser("generate", help="generate shards of a configured run")
    s.add_argument("--run", required=True, help="run URI")
    s.add_argument(
        "--shard",
        dest="shards",
        type=int,
        action="append",
        required=True,
        help="shard index (repeatable: one task may generate a batch of shards)",
    )

    s = sub.add_parser("combine", help="combine a group of shards, or all groups")
    s.add_argument("--run", required=True, help="run URI")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--group", dest="groups", type=int, action="append",
                       help="combine this group's shards into groups/group-G.h5 (repeatable: a batch of groups)")
    which.add_argument("--all", action="store_true", help="combine every group into events.h5")
    return p


def _dispatch(args: argparse.Namespace) -> dict[str, Any]:
    if args.step == "schema":
        from sbi_core.config import json_schema

        return json_schema()
    from sbi_core import steps

    handlers: dict[str, Callable[[], dict[str, Any]]] = {
        "configure": lambda: steps.configure(args.config, args.run, args.overrides),
        "generate": lambda: steps.generate(args.run, args.shards),
        "combine": lambda: steps.combine(args.run, None) if args.all else steps.combine_groups(args.run, args.groups),
    }
    return handlers[args.step]()


def main(argv: list[str] | None = None) -> int:
    """Run one step; print its summary on the real stdout; return the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Point fd 1 at stderr while the step runs, so nothing (not even C code) pollutes the summary line.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        from sbi_core.errors import InputError

        try:
            summary = _dispatch(args)
        except InputError as exc:
            print(f"sbi-core {args.step}: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except Exception:  # noqa: BLE001 - the whole point: any other failure is exit 1 with a traceback
            traceback.print_exc(file=sys.stderr)
            return EXIT_FAILURE
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    indent = getattr(args, "indent", None)
    line = json.dumps(summary, indent=indent, sort_keys=indent is not None)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
