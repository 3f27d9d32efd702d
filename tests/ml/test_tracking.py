"""MLflow tracking: experiment, parent and child runs, metrics, artefacts, registered ensembles; an unreachable
server costs one warning and no exception; a real `mlflow server` (PostgreSQL store, S3 artifacts) gets one parent
from steps that start at once, their children and a registered ensemble (integration)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sbi_core import tracking
from sbi_core.config import config_hash, load_config
from sbi_core.layout import RunLayout
from tests.core import conftest as s3_emulator

REPO = Path(__file__).resolve().parents[2]
s3_server, s3_bucket = s3_emulator.s3_server, s3_emulator.s3_bucket  # the S3 emulator fixtures of tests/core
CONFIG = REPO / "configs" / "benchmark.yaml"
HISTORY = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 1.2 / (e + 1), "learning_rate": 1e-3, "seconds": 0.1}
           for e in range(3)]


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean tracking environment: no server, no artifact root, Airflow context set, tracking state reset."""
    for var in ("MLFLOW_TRACKING_URI", "SBI_ARTIFACT_ROOT", "SBI_TRACKING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "sbi_pipeline")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__2026-01-01")
    tracking.reset()
    yield tmp_path
    tracking.reset()


def _network_files(run: Path, network: str) -> list[str]:
    d = run / "networks" / network
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(b"weights of " + network.encode())
    (d / "history.json").write_text(json.dumps(HISTORY))
    return [str(d / "model.pt"), str(d / "history.json")]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _children(client, exp_id: str, parent: str) -> list:
    return client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


def test_embedded_store_holds_runs_metrics_artefacts_and_registered_ensemble(env):
    cfg = load_config(str(CONFIG))
    run = env / "runs" / "r1"
    layout = RunLayout(str(run))
    ids = ["alices-theta-nominal-m00", "alices-theta-nominal-m01"]
    for nid in ids:
        tracking.log_network(layout, cfg, nid, {"method": "alices", "network": {"hidden": [64, 64]}}, HISTORY,
                             _network_files(run, nid))
    tracking.log_network(layout, cfg, ids[0], {"method": "alices"}, HISTORY, [str(run / "networks" / ids[0] / "model.pt")])
    tracking.log_ensemble(layout, cfg, "alices", "theta", "nominal", ids, {"rms": 0.1})
    tracking.log_ensemble(layout, cfg, "alices", "theta", "nominal", ids, {"rms": 0.1})  # a retried task
    assert tracking._off_reason is None, tracking._off_reason

    uri = tracking.tracking_uri(layout)
    assert uri == "sqlite:///" + str(env / "runs" / "mlflow" / "mlflow.db") and (env / "runs" / "mlflow" / "mlflow.db").exists()
    client = _client(uri)
    exp = client.get_experiment_by_name(cfg.name)
    assert exp is not None
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`sbi.kind` = 'pipeline'")
    assert len(parents) == 1
    tags = parents[0].data.tags
    assert tags["sbi.run_uri"] == layout.root and tags["sbi.config_hash"] == config_hash(cfg)
    assert tags["sbi.dag_id"] == "sbi_pipeline" and tags["sbi.dag_run_id"] == "manual__2026-01-01"
    children = _children(client, exp.experiment_id, parents[0].info.run_id)
    networks = sorted((r for r in children if r.data.tags["sbi.kind"] == "network"), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in networks] == ids  # the re-logged network replaced its first record
    history = client.get_metric_history(networks[1].info.run_id, "val_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(e, 1.2 / (e + 1)) for e in range(3)]
    assert networks[1].data.params["network.hidden.0"] == "64"
    assert {a.path for a in client.list_artifacts(networks[1].info.run_id)} == {"model.pt", "history.json"}
    local = client.download_artifacts(networks[1].info.run_id, "model.pt", str(env))
    assert Path(local).read_bytes() == b"weights of " + ids[1].encode()

    name = tracking.registered_model_name(cfg, "alices", "theta", "nominal")
    versions = client.search_model_versions(f"name = '{name}'")
    assert len(versions) == 1, "a retried ensemble with the same members registers no second version"
    current = client.get_model_version_by_alias(name, tracking.ENSEMBLE_ALIAS)
    assert current.version == versions[0].version
    ens_run = client.get_run(current.run_id)
    assert ens_run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id and ens_run.data.metrics["rms"] == 0.1

    # Another member set: a new version, the alias moves to it.
    tracking.log_ensemble(layout, cfg, "alices", "theta", "nominal", ids[:1], {"rms": 0.2})
    assert int(client.get_model_version_by_alias(name, tracking.ENSEMBLE_ALIAS).version) == int(current.version) + 1


def test_concurrent_processes_share_one_parent(env):
    """Two train-like processes start at once on a fresh store (the first use creates it): one experiment, one
    parent found by tag, both networks under it; this process's report lands there too."""
    cfg = load_config(str(CONFIG))
    run = env / "runs" / "r2"
    layout = RunLayout(str(run))
    code = ("import sys; from sbi_core import tracking; from sbi_core.config import load_config; "
            "from sbi_core.layout import RunLayout; "
            "tracking.log_network(RunLayout(sys.argv[1]), load_config(sys.argv[2]), sys.argv[3], {}, [], []); "
            "sys.exit(tracking._off_reason is not None)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(run), str(CONFIG), f"carl-theta-nominal-m0{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    tracking.log_report(layout, cfg, {"auc": {"alices": 0.7}, "plots": "x"}, [])
    client = _client(tracking.tracking_uri(layout))
    assert len([e for e in client.search_experiments() if e.name == cfg.name]) == 1
    exp = client.get_experiment_by_name(cfg.name)
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`sbi.kind` = 'pipeline'")
    assert len(parents) == 1
    children = _children(client, exp.experiment_id, parents[0].info.run_id)
    assert sorted(r.info.run_name for r in children) == ["carl-theta-nominal-m00", "carl-theta-nominal-m01",
                                                          "evaluation"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_warns_once_and_never_raises(env, monkeypatch, caplog):
    cfg = load_config(str(CONFIG))
    layout = RunLayout(str(env / "run"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    for key in tracking.HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    clients = []  # what bounds the cost, counted rather than timed: the server is tried by the first call only
    build = tracking._client
    monkeypatch.setattr(tracking, "_client", lambda store: clients.append(store.uri) or build(store))
    with caplog.at_level(logging.WARNING, logger="sbi_core.tracking"):
        for i in range(3):
            tracking.log_network(layout, cfg, f"carl-theta-nominal-m{i:02d}", {"a": 1}, HISTORY, [])
        tracking.log_ensemble(layout, cfg, "carl", "theta", "nominal", ["carl-theta-nominal-m00"], {})
        tracking.log_report(layout, cfg, {"auc": 0.5}, [])
        tracking.log_fit(layout, cfg, {"cW": 0.1}, [])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "sbi_core.tracking"]
    assert len(warnings) == 1 and "storage remain the record" in warnings[0].getMessage()
    assert len(clients) == 1, f"the server was tried by {len(clients)} calls; after the first failure none should"
    # and that one try fails fast: MLflow's HTTP client with a short timeout and one retry
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10" and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert not (env / "mlflow").exists()


def test_tracking_can_be_turned_off_and_object_store_runs_need_a_server(env, monkeypatch, caplog):
    cfg = load_config(str(CONFIG))
    assert tracking.tracking_uri(RunLayout("s3://bucket/runs/r1")) is None
    monkeypatch.setenv("SBI_ARTIFACT_ROOT", str(env / "root"))
    assert tracking.tracking_uri(RunLayout(str(env / "root" / "dag" / "r1"))) == \
        "sqlite:///" + str(env / "root" / "mlflow" / "mlflow.db")
    monkeypatch.setenv("SBI_TRACKING", "off")
    with caplog.at_level(logging.WARNING, logger="sbi_core.tracking"):
        tracking.log_report(RunLayout(str(env / "root" / "dag" / "r1")), cfg, {"auc": 0.5}, [])
    assert not caplog.records and not (env / "root" / "mlflow").exists()


def test_flatten_makes_metric_keys():
    assert tracking.flatten({"a": {"b": [1, 2.5]}, "c d": "x", "e": [{"f": 1}], "g": ["s"]}) == \
        {"a.b.0": 1, "a.b.1": 2.5, "c d": "x", "e.0.f": 1, "g": ["s"]}


POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}

_RACER = """
import sys, time
from pathlib import Path
import mlflow  # the slow imports and the client are ready before the start line
from sbi_core import storage, tracking
from sbi_core.config import load_config
from sbi_core.layout import RunLayout
run, config, network, go = sys.argv[1:5]
cfg, layout = load_config(config), RunLayout(run)
storage.exists(run + "/plan.json")
Path(go + "." + network).touch()
while not Path(go).exists():
    time.sleep(0.001)
tracking.log_network(layout, cfg, network, {"method": "carl"}, [], [])
sys.exit(tracking._off_reason is not None)
"""


@pytest.fixture
def postgres_db():
    """A fresh PostgreSQL database on 127.0.0.1:5432 for the test, dropped afterwards."""
    import uuid

    import psycopg2

    name = f"sbi_mlflow_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **POSTGRES)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"this test needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth): {exc}")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://{POSTGRES['user']}@{POSTGRES['host']}:{POSTGRES['port']}/{name}"
    finally:
        cur = admin.cursor()
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture
def mlflow_server(env, postgres_db, s3_bucket):
    """`mlflow server` on 127.0.0.1 (free port): PostgreSQL backend store, artifacts on the S3 emulator (proxied
    by the server). Stopped in the finally even when the test fails."""
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    server_env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": os.environ["SBI_S3_ENDPOINT_URL"],
                  "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes: starts faster
    proc = subprocess.Popen(
        [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", postgres_db, "--artifacts-destination", f"s3://{s3_bucket}/mlflow"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=server_env)
    try:
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


@pytest.mark.integration
@pytest.mark.slow
def test_mlflow_server_postgres_s3_one_parent_for_steps_that_start_at_once(mlflow_server, s3_bucket, monkeypatch,
                                                                         tmp_path):
    """Against a real `mlflow server` (PostgreSQL store, S3 artifacts), for a run on S3: two train steps released
    at the same instant on the fresh server share one parent run (tagged with the DAG run), each logs its network
    as a child; the ensemble is registered with its alias; the network's model.pt comes back from S3."""
    uri = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = load_config(str(CONFIG))
    run = f"s3://{s3_bucket}/runs/r1"
    layout = RunLayout(run)
    from sbi_core import storage

    go = tmp_path / "go"
    ids = ["carl-theta-nominal-m00", "carl-theta-nominal-m01"]
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, run, str(CONFIG), nid, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
             for nid in ids]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"go.{nid}").exists() for nid in ids):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "the racing steps did not get ready in 120 s"
        time.sleep(0.01)
    go.touch()  # both start now
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]

    client = _client(uri)
    exp = client.get_experiment_by_name(cfg.name)
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`sbi.kind` = 'pipeline'")
    assert len(parents) == 1, f"{len(parents)} parent runs for one pipeline run"
    assert storage.read_json(tracking.parent_marker(layout, uri))["run_id"] == parents[0].info.run_id
    assert parents[0].data.tags["sbi.dag_run_id"] == "manual__2026-01-01"
    children = _children(client, exp.experiment_id, parents[0].info.run_id)
    assert sorted(r.info.run_name for r in children) == ids

    nid = "alices-theta-nominal-m00"
    for name, data in (("model.pt", b"weights of " + nid.encode()), ("history.json", json.dumps(HISTORY).encode())):
        storage.write_bytes(layout.network_file(nid, name), data)
    tracking.log_network(layout, cfg, nid, {"method": "alices"}, HISTORY,
                         [layout.network_file(nid, n) for n in ("model.pt", "history.json")])
    tracking.log_ensemble(layout, cfg, "alices", "theta", "nominal", [nid], {"rms": 0.1})
    assert tracking._off_reason is None, tracking._off_reason
    (net,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`sbi.network_id` = '{nid}'")
    assert net.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert len(client.get_metric_history(net.info.run_id, "train_loss")) == 3
    local = client.download_artifacts(net.info.run_id, "model.pt", str(tmp_path))
    assert Path(local).read_bytes() == b"weights of " + nid.encode()
    assert any(k.startswith("mlflow/") for k in _keys(s3_bucket)), "artifacts must land on S3"
    name = tracking.registered_model_name(cfg, "alices", "theta", "nominal")
    assert client.get_model_version_by_alias(name, tracking.ENSEMBLE_ALIAS).version == "1"


def _keys(bucket: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["SBI_S3_ENDPOINT_URL"], region_name="us-east-1")
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
