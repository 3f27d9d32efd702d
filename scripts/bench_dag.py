"""DAG figures for `python -m bench dag`: parse duration, and the scheduling overhead of a mapped step.

- parse: `airflow dags report` duration of each DAG file (sbi_pipeline, sbi_train, sbi_infer), per backend
  (the dag-processor's figure). The report parses a folder in one process, so the first file would also pay
  the imports every DAG file shares (Airflow's task decorators, `operators`, the backend's operator class):
  a first file that does only those imports takes that cost, reported on its own row (`00_shared_imports`),
  and each DAG's row is its own.
- mapped overhead: wall time of a run of N mapped no-op steps (`sbi-core schema`) under the real scheduler
  (LocalExecutor, REST-triggered) divided by the same N commands run one after another in one process.
Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from airflow_local import BIN, REPO, LocalAirflow, embedded_env, free_port, migrate
from trigger_run import AirflowApi

NOOP_DAG = '''"""Benchmark only: {n} mapped no-op sbi-core steps."""
from airflow.sdk import dag

from operators.steps import sbi_step


@dag(dag_id="bench_mapped_noop", schedule=None)
def bench_mapped_noop():
    sbi_step("noop", retries=0).expand(arguments=[["schema"]] * {n})


bench_mapped_noop()
'''


DAG_FILES = ("sbi_pipeline.py", "sbi_train.py", "sbi_infer.py")
SHARED_IMPORTS = "00_shared_imports.py"
# Parsed first (the report goes in name order): the imports every DAG file shares, and no DAG. It names
# `airflow` and `dag` so that the dag-processor's safe mode does not skip it.
SHARED_IMPORTS_FILE = """# airflow dag benchmark: the imports every DAG file of this project shares
from airflow.sdk import dag, task  # noqa: F401
import operators.groups, operators.params, operators.plans, operators.steps  # noqa: F401,E401

operators.steps.step_operator_class()  # the backend's operator (SBI_BACKEND=kubernetes: the provider)
"""


def parse_seconds(backend: str, home: Path) -> dict[str, float]:
    """`airflow dags report` duration of each DAG file with SBI_BACKEND=backend, by file name, and of the
    shared imports (`SHARED_IMPORTS`), measured on copies of the DAG files in a folder under `home`."""
    folder = home / "parse-dags"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SHARED_IMPORTS).write_text(SHARED_IMPORTS_FILE)
    for name in DAG_FILES:
        shutil.copyfile(REPO / "dags" / name, folder / name)
    env = {**embedded_env(home, dags_folder=folder), "SBI_BACKEND": backend}
    out = subprocess.run([str(BIN / "airflow"), "dags", "report", "-o", "json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(next(line for line in out.splitlines() if line.startswith("[")))
    return {e["file"].rsplit("/", 1)[-1]: _seconds(e["duration"]) for e in report}


def _seconds(duration: str) -> float:
    t = datetime.strptime(duration, "%H:%M:%S.%f") if "." in duration else datetime.strptime(duration, "%H:%M:%S")
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def one_process_seconds(n: int) -> float:
    """The mapped step's work without Airflow: N no-op steps in a row."""
    sbi_core = BIN / "sbi-core"
    started = time.monotonic()
    for _ in range(n):
        subprocess.run([str(sbi_core), "schema"], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def scheduled_seconds(n: int, workdir: Path) -> dict[str, float]:
    """Trigger-to-success wall time of the N-way mapped DAG, and the run's own start-to-end duration."""
    dags = workdir / "dags"
    dags.mkdir()
    (dags / "bench_mapped_noop.py").write_text(NOOP_DAG.format(n=n))
    airflow = LocalAirflow(home=workdir / "home", port=free_port(), log_ports=(free_port(), free_port()),
                           components=("api-server", "scheduler", "dag-processor"), dags_folder=dags,
                           extra_env={"SBI_BACKEND": "local", "SBI_ARTIFACT_ROOT": str(workdir / "artifacts")})
    with airflow:
        airflow.wait_ready()
        api = AirflowApi(airflow.url, AirflowApi.login(airflow.url, *airflow.credentials()))
        api.wait_for_dag("bench_mapped_noop", time.monotonic() + 120)
        started = time.monotonic()
        run_id = api.trigger("bench_mapped_noop", {})
        while (state := api.run_state("bench_mapped_noop", run_id)) not in ("success", "failed"):
            time.sleep(0.25)
        wall = time.monotonic() - started
        run = api.call("GET", f"/dags/bench_mapped_noop/dagRuns/{run_id}").json()
    if state != "success":
        raise RuntimeError(f"benchmark run {run_id} ended {state}; see {airflow.log_dir}")
    span = datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])
    return {"wall": wall, "run": span.total_seconds()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64, help="mapped no-op steps in the scheduled run")
    parser.add_argument("--skip-scheduler", action="store_true", help="only the parse figures (seconds, no services)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sbi-bench-dag-") as tmp:
        home = Path(tmp) / "parse-home"
        migrate(embedded_env(home))
        for backend in ("local", "kubernetes"):
            seconds = parse_seconds(backend, home)
            for name in (SHARED_IMPORTS, *DAG_FILES):
                _emit({"figure": "dag_parse_seconds", "dag": name.removesuffix(".py"), "backend": backend,
                       "value": round(seconds[name], 4)})
        if not args.skip_scheduler:
            baseline = one_process_seconds(args.tasks)
            scheduled = scheduled_seconds(args.tasks, Path(tmp))
            _emit({"figure": "mapped_step_overhead", "tasks": args.tasks, "cpus": os.cpu_count(),
                   "scheduled_wall_seconds": round(scheduled["wall"], 2),
                   "scheduled_run_seconds": round(scheduled["run"], 2),
                   "one_process_seconds": round(baseline, 2), "ratio": round(scheduled["wall"] / baseline, 2)})
    return 0


def _emit(figure: dict) -> None:
    print(json.dumps({"bench": "dag", **figure}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
