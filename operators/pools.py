"""Create the Airflow pools the resource profiles name: `python -m operators.pools [--import]`.

Without `--import` it prints the pools as the JSON `airflow pools import` reads (no Airflow import,
instant); with it, it writes that file and runs `airflow pools import` in the current Airflow
environment (create or update: idempotent). `make airflow` and the integration test call it after the
database migration; a deployment runs it once (docker-compose's airflow-init does) or creates the pools
its own way. Sizes: `pools:` in the profiles file, overridden by `SBI_POOL_SLOTS=sbi_gpu=8,...`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from operators.profiles import Pool, load_pools


def pools_json(pools: dict[str, Pool]) -> dict[str, dict[str, Any]]:
    """The pools in the format of `airflow pools import` / `export`."""
    return {p.name: {"slots": p.slots, "description": p.description, "include_deferred": False}
            for p in pools.values()}


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
    args = parser.parse_args(argv)
    pools = load_pools()
    if args.apply:
        import_pools(pools)
        for pool in pools.values():
            print(f"pool {pool.name}: {pool.slots} slots", file=sys.stderr)
    else:
        print(json.dumps(pools_json(pools), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
