"""A loop DAG on a real scheduler, as a function any module that starts Airflow calls with its `LocalAirflow`:
sbi_toy_limits on a counting experiment with max_rounds 2. The first run (round 1) triggers
`study-loop-round-0002`, whose aggregate ends the study and whose finish writes the results."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from trigger_run import AirflowApi

DAG = "sbi_toy_limits"
STUDY = "loop"
CONF = {"study_name": STUDY, "model": "counting", "upper": 4.0, "grid_points": 3, "toys": 20, "toys_per_task": 20,
        "max_rounds": 2, "budget": 5000, "set": ["options.counting={observed: 12, signal: 5.0, background: 10.0}"]}


def _tail_logs(log_dir: Path, lines: int = 40) -> str:
    return "".join(f"\n--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-lines:]) for p in log_dir.glob("*.log"))


def two_rounds_of_sbi_toy_limits(airflow: Any, timeout: float = 300.0) -> float:
    """Trigger the study, wait for both rounds, check what each run did; the seconds it took."""
    user, password = airflow.credentials()
    api = AirflowApi(airflow.url, AirflowApi.login(airflow.url, user, password))
    started = time.monotonic()
    deadline = started + timeout  # a guard against a hang, not a measurement
    api.wait_for_dag(DAG, deadline)
    api.unpause(DAG)
    first, second = api.trigger(DAG, CONF), f"study-{STUDY}-round-0002"
    while True:
        runs = {r["dag_run_id"]: r for r in api.call("GET", f"/dags/{DAG}/dagRuns").json()["dag_runs"]}
        if runs[first]["state"] == "failed" or (second in runs and runs[second]["state"] in ("success", "failed")):
            break
        assert time.monotonic() < deadline, {k: r["state"] for k, r in runs.items()}
        time.sleep(1.0)
    seconds = time.monotonic() - started
    assert {k: r["state"] for k, r in runs.items()} == {first: "success", second: "success"}, \
        _tail_logs(airflow.log_dir)
    study = api.summary(DAG, first, "prepare_study")["study"]
    assert Path(study).parent.parent == Path(airflow.env["SBI_ARTIFACT_ROOT"])
    assert runs[second]["conf"] == {"study": study, "round": 2}
    assert runs[second]["note"] == f"study {STUDY}, round 2 ({study})"
    first_agg = api.summary(DAG, first, "aggregate")
    assert (first_agg["round"], first_agg["decision"]) == (1, "continue")
    assert api.summary(DAG, first, "finish") is None  # the branch skipped it
    last = api.summary(DAG, second, "aggregate")
    assert (last["round"], last["decision"], last["status"]) == (2, "finish", "finished")
    assert last["reason"].startswith("max_rounds reached (2 of 2)")
    results = json.loads(Path(api.summary(DAG, second, "finish")["results"]).read_text())
    assert results["rounds"] == 2 and results["status"] == "finished" and results["points"]
    return seconds
