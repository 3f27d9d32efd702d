"""Real Airflow on 127.0.0.1: scheduler, dag-processor, triggerer and API server; a REST-triggered run succeeds,
the pools exist, and no component listens beyond loopback."""

from __future__ import annotations

import ipaddress
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
from trigger_run import AirflowApi

from operators.profiles import load_pools
from tests.conftest import REPO

CONF = {"events": 4000, "shards": 4, "seed": 7, "set": ["generation.shards_per_group=2"], "until": "events"}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> Iterator[LocalAirflow]:
    """Scheduler, dag-processor and API server in their own process groups, stopped even when a test fails."""
    home = tmp_path_factory.mktemp("airflow")
    service = LocalAirflow(
        home=home,
        port=free_port(),
        log_ports=(free_port(), free_port()),
        components=("api-server", "scheduler", "dag-processor", "triggerer"),
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
         "--conf", json.dumps(CONF), "--timeout", "180", "--poll", "1", "--task", "combine_all"],
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
def test_every_listener_is_on_loopback(airflow):
    """What `ss -ltnp` shows for the components and their children: nothing on 0.0.0.0 or ::, no log servers."""
    listeners = airflow.listeners()
    assert (airflow.host, airflow.port) in {(a, p) for a, p, _ in listeners}  # the check sees the API server
    assert all(ipaddress.ip_address(a).is_loopback for a, _, _ in listeners), listeners
    assert not {p for _, p, _ in listeners} & set(airflow.log_ports)  # serve-logs not started


@pytest.mark.integration
def test_the_pools_of_the_profiles_exist(airflow):
    user, password = airflow.credentials()
    api = AirflowApi(airflow.url, AirflowApi.login(airflow.url, user, password))
    pools = {p["name"]: p["slots"] for p in api.call("GET", "/pools").json()["pools"]}
    assert {name: pools.get(name) for name in load_pools()} == {p.name: p.slots for p in load_pools().values()}


@pytest.mark.integration
def test_requests_without_a_token_are_refused(airflow):
    assert requests.get(f"{airflow.url}/api/v2/dags", timeout=10).status_code == 401
    trigger = requests.post(f"{airflow.url}/api/v2/dags/sbi_pipeline/dagRuns", json={"logical_date": None}, timeout=10)
    assert trigger.status_code == 401


def _tail_logs(log_dir: Path, lines: int = 40) -> str:
    return "".join(f"\n--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-lines:]) for p in log_dir.glob("*.log"))



@pytest.mark.integration
def test_a_study_dag_triggers_itself_round_after_round_then_finishes(airflow, record_property):
    from tests.airflow.study_loop import two_rounds_of_sbi_toy_limits

    seconds = two_rounds_of_sbi_toy_limits(airflow)
    record_property("study_two_rounds_seconds", round(seconds, 1))
    print(f"two rounds of sbi_toy_limits: {seconds:.1f} s")
