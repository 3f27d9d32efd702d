"""`sbi-core <step> ...`: the ONE entry point that pods and local runs call.

stdout carries exactly one line: the step's JSON summary (it becomes the Airflow task's XCom).
Everything else (logs, progress, library chatter, even from C code) goes to stderr.
Exit codes: 0 success, 2 bad input (the message names the field, file, shard or setting, on one line), 1 failure
(a traceback; a transient one, such as an object store that kept timing out, as one line).
"""

from __future__ import annotations

import argparse
import importlib
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


#: Modules that add subcommands: each has `add_commands(sub)`, which registers argparse subparsers and sets
#: `handler` (args -> summary dict) on each with `set_defaults`. They must import cheaply (no torch, jax,
#: h5py at module level): the handler imports what it needs when it runs.
COMMAND_MODULES = (
    "sbi_core.run_commands",
    "sbi_core.data.commands",
    "sbi_core.physics.morphing_commands",
    "sbi_core.physics.commands",
    "sbi_core.ml.commands",
    "sbi_core.ml.train_commands",
    "sbi_core.ml.eval_commands",
    "sbi_core.inference.commands",
    "sbi_core.inference.stats_commands",
    "sbi_core.studies.commands",
    "sbi_core.publish.commands",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sbi-core", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"sbi-core {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return p


def _dispatch(args: argparse.Namespace) -> dict[str, Any]:
    handler: Callable[[argparse.Namespace], dict[str, Any]] = args.handler
    return handler(args)


def main(argv: list[str] | None = None) -> int:
    """Run one step; print its summary on the real stdout; return the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # the S3 client's chatter ("Found credentials in environment variables.")
        for name in ("botocore", "aiobotocore", "s3fs", "fsspec"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # Point fd 1 at stderr while the step runs, so nothing (not even C code) pollutes the summary line.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        from sbi_core.errors import InputError, TransientError

        try:
            if getattr(args, "run", None):
                from sbi_core.storage import check_within_root

                check_within_root(args.run, "--run")
            summary = _dispatch(args)
        except InputError as exc:
            print(f"sbi-core {args.step}: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except TransientError as exc:
            print(f"sbi-core {args.step}: error (worth a retry): {exc}", file=sys.stderr)
            return EXIT_FAILURE
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
