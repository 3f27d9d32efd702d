"""S3 credentials come from an Airflow connection: a local step gets them in its environment (and nothing
else does: not its log, not its XCom); a pod gets only a reference to a Kubernetes Secret."""

from __future__ import annotations

import json
import logging

import pytest
from kubernetes.client import ApiClient

from operators.connections import step_environment
from operators.settings import SettingError
from operators.steps import sbi_step

SECRET = "sbi-unit-secret-9d41c0"
CONNECTION = {"conn_type": "aws", "login": "AKIAUNITTEST", "password": SECRET,
              "extra": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}}
WORKER = {"PATH": "/usr/bin", "AWS_SESSION_TOKEN": "stale-token", "SBI_S3_ENDPOINT_URL": "http://elsewhere:1"}


@pytest.fixture
def aws_connection(monkeypatch):
    """The connection as Airflow reads it from its secrets backend (here: AIRFLOW_CONN_<ID>, JSON)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                 "SBI_S3_ENDPOINT_URL", "SBI_AWS_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_SBI_STORE", json.dumps(CONNECTION))
    monkeypatch.setenv("SBI_AWS_CONN_ID", "sbi_store")


def test_a_step_gets_the_connections_credentials_and_endpoint(aws_connection):
    env = step_environment(WORKER)
    assert env == {"PATH": "/usr/bin", "AWS_ACCESS_KEY_ID": "AKIAUNITTEST", "AWS_SECRET_ACCESS_KEY": SECRET,
                   "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "SBI_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
                   "AWS_DEFAULT_REGION": "eu-west-1"}  # the worker's stale token and endpoint are gone


def test_without_a_connection_the_step_keeps_the_workers_environment(monkeypatch):
    monkeypatch.delenv("SBI_AWS_CONN_ID", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    assert step_environment(WORKER) == WORKER


def test_a_connection_the_setting_names_must_exist(monkeypatch):
    monkeypatch.setenv("SBI_AWS_CONN_ID", "no_such_connection")
    with pytest.raises(SettingError, match="SBI_AWS_CONN_ID='no_such_connection'"):
        step_environment(WORKER)


def test_the_local_step_sees_the_secret_but_its_log_and_xcom_do_not(aws_connection, fake_sbi_core, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    summary = sbi_step("configure", arguments=["configure", "--run", "s3://b/r"]).execute(context={})
    seen = fake_sbi_core.calls()[-1]
    assert (seen["AWS_ACCESS_KEY_ID"], seen["AWS_SECRET_ACCESS_KEY"]) == ("AKIAUNITTEST", SECRET)
    assert seen["AWS_SESSION_TOKEN"] is None and seen["SBI_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert SECRET not in json.dumps(summary)
    # the task's log lines reach caplog, or the terminal once a dag.test() in this process configured Airflow's
    # logging (airflow.task then no longer propagates to the root logger)
    logged = caplog.text + "".join(capfd.readouterr())
    assert "Running" in logged and SECRET not in logged


def test_a_pod_gets_a_secret_reference_never_the_secret(aws_connection):
    op = sbi_step("ingest", arguments=["ingest-lhe", "--run", "s3://b/r", "--file", "0"], backend="kubernetes")
    pod = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    assert {"secretRef": {"name": "sbi-s3-credentials"}} in base["envFrom"]
    assert SECRET not in json.dumps(pod) and "AKIAUNITTEST" not in json.dumps(pod)
    assert not {e["name"] for e in base.get("env", [])} & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
