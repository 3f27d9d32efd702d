"""Real Airflow on 127.0.0.1: scheduler, dag-processor and API server; a REST-triggered run succeeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from airflow_local import LocalAirflow, free_port, stragglers

from tests.conftest import REPO

CONF = {"events": 4000, "shards": 4, "seed": 7, "set": ["generation.shards_per_group=2"]}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> Iterator[LocalAirflow]:
    """Scheduler, dag-processor and API server in their own process groups, stopped even when a test fails."""
    home = tmp_path_factory.mktemp("airflow")
    service = LocalAirflow(
        home=home,
        port=free_port(),
        log_ports=(free_port(), free_port()),
        components=("api-server", "scheduler", "dag-processor"),
        extra_env={
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # so trigger_run has to unpause
            "SBI_BACKEND": "local",
            "SBI_ARTIFACT_ROOT": str(home / "artifacts"),
        },
    )
    with service:
        service.wait_ready(timeout=120)
        yield service
    assert not service.processes
    assert not stragglers(home), "processes of this Airflow outlived stop()"


@pytest.mark.integration
def test_rest_triggered_run_succeeds(airflow, record_property):
    user, password = airflow.credentials()
    env = {**os.environ, "AIRFLOW_API_URL": airflow.url, "AIRFLOW_USERNAME": user, "AIRFLOW_PASSWORD": password}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "trigger_run.py"), "--dag-id", "sbi_pipeline",
         "--conf", json.dumps(CONF), "--timeout", "180", "--poll", "1"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    seconds = time.monotonic() - started
    record_property("rest_run_seconds", round(seconds, 1))
    print(f"REST-triggered sbi_pipeline run: {seconds:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:] + _tail_logs(airflow.log_dir)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "success"
    summary = result["summaries"]["combine_all"]
    assert summary["n_events"] == CONF["events"]
    assert Path(summary["output"]).is_file()
    assert Path(summary["run"]).parent.parent == Path(airflow.env["SBI_ARTIFACT_ROOT"])


@pytest.mark.integration
def test_requests_without_a_token_are_refused(airflow):
    assert requests.get(f"{airflow.url}/api/v2/dags", timeout=10).status_code == 401
    trigger = requests.post(f"{airflow.url}/api/v2/dags/sbi_pipeline/dagRuns", json={"logical_date": None}, timeout=10)
    assert trigger.status_code == 401


def _tail_logs(log_dir: Path, lines: int = 40) -> str:
    return "".join(f"\n--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-lines:]) for p in log_dir.glob("*.log"))
