"""Create the Airflow pools the resource profiles name: `python -m operators.pools [--import]`.

Without `--import` it prints the pools as the JSON `airflow pools import` reads (no Airflow import,
instant); with it, it writes that file and runs `airflow pools import` in the current Airflow
environment (create or update: idempotent). `--concurrency` prints Airflow's caps that match the pools
(`[core] parallelism`, `max_active_tasks_per_dag`, the Celery worker's concurrency) as `export` lines for a
shell (those already set in the environment are kept): `make airflow` and docker-compose's scheduler and
worker start with them. `make airflow` and the integration test call it after the
database migration; a deployment runs it once (docker-compose's airflow-init does) or creates the pools
its own way. Sizes: `pools:` in the profiles file; on the local backend the cpu and training pools follow the
machine's cores (`SBI_TRAIN_SLOTS` sets the training pool); `SBI_POOL_SLOTS=sbi_gpu=8,...` overrides them all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

from operators.profiles import Pool, load_pools


def pools_json(pools: dict[str, Pool]) -> dict[str, dict[str, Any]]:
    """The pools in the format of `airflow pools import` / `export`."""
    return {p.name: {"slots": p.slots, "description": p.description, "include_deferred": False}
            for p in pools.values()}


#: Slots beyond the pools' for the short Python tasks (plans, gates, publishing) that run in Airflow's default pool.
PYTHON_TASK_HEADROOM = 4
#: Airflow's settings that cap concurrent tasks whatever the pools say (the scheduler's and a Celery worker's).
CONCURRENCY_SETTINGS = ("AIRFLOW__CORE__PARALLELISM", "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG",
                        "AIRFLOW__CELERY__WORKER_CONCURRENCY")


def concurrency(pools: dict[str, Pool]) -> int:
    """Tasks Airflow should run at once to fill every pool: all their slots plus the Python tasks' headroom."""
    return sum(p.slots for p in pools.values()) + PYTHON_TASK_HEADROOM


def concurrency_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Airflow's concurrency settings that match the pools the deployment settings in `environ` give; a setting
    `environ` already has is kept (a site's own choice wins)."""
    with mock.patch.dict(os.environ, environ, clear=True):  # the SBI_* settings are read from os.environ
        n = concurrency(load_pools())
    return {name: environ.get(name) or str(n) for name in CONCURRENCY_SETTINGS}


def import_pools(pools: dict[str, Pool], env: dict[str, str] | None = None) -> None:
    """Create or update the pools with `airflow pools import` (in `env`, default this process's environment)."""
    env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="sbi-pools-") as tmp:
        path = Path(tmp) / "pools.json"
        path.write_text(json.dumps(pools_json(pools)))
        subprocess.run([_airflow(), "pools", "import", str(path)], env=env, check=True, stdout=subprocess.DEVNULL)


def _airflow() -> str:
    """The `airflow` command next to this Python (a venv's bin), else on PATH."""
    beside = Path(sys.executable).with_name("airflow")
    return str(beside) if beside.is_file() else (shutil.which("airflow") or "airflow")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m operators.pools", description=__doc__.splitlines()[0])
    parser.add_argument("--import", dest="apply", action="store_true", help="create/update them in Airflow")
    parser.add_argument("--concurrency", action="store_true",
                        help="print `export` lines of Airflow's parallelism settings that match the pools")
    args = parser.parse_args(argv)
    pools = load_pools()
    if args.concurrency:
        print("\n".join(f"export {k}={v}" for k, v in concurrency_env(os.environ).items()))
    elif args.apply:
        import_pools(pools)
        for pool in pools.values():
            print(f"pool {pool.name}: {pool.slots} slots", file=sys.stderr)
    else:
        print(json.dumps(pools_json(pools), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
