"""dag: parse cost of each DAG file as the dag-processor sees it, and the scheduling overhead of
a mapped step (64 mapped no-op steps under the real scheduler vs the same 64 commands in one process).

The measuring code lives in scripts/bench_dag.py (it shares the Airflow launcher with `make airflow`);
this module runs it and turns its lines into figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import emit

REPO = Path(__file__).resolve().parents[1]


def run(quick: bool) -> list[dict[str, Any]]:
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_dag.py"), "--tasks", "64"],
                         capture_output=True, text=True, cwd=REPO, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"scripts/bench_dag.py failed:\n{res.stderr[-3000:]}")
    records = []
    for line in res.stdout.splitlines():
        if not line.startswith("{"):
            continue
        fig = json.loads(line)
        if fig.get("figure") == "dag_parse_seconds":
            shared = fig["dag"].startswith("00_")
            rec = {"name": f"dag_parse[{fig['dag']}, {fig['backend']}]", "sizes": {"dag": fig["dag"]},
                   "ratio": "", "target": "(measured)" if shared or fig["backend"] != "local" else "< 0.2 s",
                   "seconds": fig["value"]}
        elif fig.get("figure") == "mapped_step_overhead":
            n = fig["tasks"]
            rec = {"name": "mapped_step_overhead", "sizes": {"mapped_tasks": n, "cpus": fig["cpus"]},
                   "ratio": fig["ratio"], "target": "(measured)",
                   "scheduled_wall_s": fig["scheduled_wall_seconds"], "one_process_s": fig["one_process_seconds"],
                   "overhead_per_task_s": round((fig["scheduled_wall_seconds"] - fig["one_process_seconds"]) / n, 3)}
        else:
            continue
        records.append(rec)
        emit(rec)
    return records
