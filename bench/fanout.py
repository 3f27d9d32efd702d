"""fanout: SIZE generate shards through sbi_pipeline and SIZE networks through sbi_train under the real scheduler
(LocalExecutor, SQLite, the shipped fan-out defaults), each against the same work in one process: the ratio of
the step's wall times, the overhead per mapped task, and the API server's and scheduler's memory before and after.

The measuring code lives in scripts/bench_fanout.py (it shares the Airflow launcher with `make airflow`); this
module runs it and turns its lines into figures. The issue's size is 1000 (`--size 1000`, the default); `--quick`
runs 100. Goal at the shipped defaults: scheduled / one process <= 2.0 for both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import emit

REPO = Path(__file__).resolve().parents[1]
FULL_SIZE, QUICK_SIZE = 1000, 100


def run(quick: bool, size: int | None = None) -> list[dict[str, Any]]:
    size = size or (QUICK_SIZE if quick else FULL_SIZE)
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_fanout.py"), "--size", str(size)],
                         capture_output=True, text=True, cwd=REPO, timeout=4 * 3600)
    if res.returncode != 0:
        raise RuntimeError(f"scripts/bench_fanout.py failed:\n{res.stderr[-3000:]}")
    figures = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    records = []
    for fig in figures:
        if fig["figure"] in ("shards", "networks") and "ratio" not in fig:
            rec = {"name": f"fanout[{fig['figure']}]", "sizes": {fig["figure"]: fig["size"]}, "ratio": "",
                   "target": "<= 2.0", "state": fig["state"], "error": fig.get("error")}
        elif fig["figure"] in ("shards", "networks"):
            rec = {"name": f"fanout[{fig['figure']}]", "sizes": {fig["figure"]: fig["size"], "tasks": fig["tasks"],
                                                                 "cpus": fig["cpus"]},
                   "ratio": fig["ratio"], "target": "<= 2.0", "scheduled_s": fig["scheduled_s"],
                   "one_process_s": fig["one_process_s"], "overhead_per_task_s": fig["overhead_per_task_s"],
                   "run_wall_s": fig["run_wall_s"], "state": fig["state"]}
        elif fig["figure"] == "memory_mb":
            rec = {"name": "fanout[memory]", "sizes": {"size": size}, "ratio": "", "target": "(measured)",
                   "before_mb": fig["before"], "after_mb": fig["after"], "parallelism": fig["parallelism"]}
        else:
            continue
        records.append(rec)
        emit(rec)
    return records
