"""The production set-up, for real and started once for this module: Airflow 3 with a fresh PostgreSQL 15
metadata database (created here, dropped afterwards), the CeleryExecutor on Redis 7 with a `celery worker`
process, the scheduler, dag-processor, triggerer and API server on 127.0.0.1, and an S3 emulator that
Airflow reaches through an Airflow connection only (no AWS_* variable anywhere in its environment).

- a sbi_pipeline run on the Celery worker whose worker is SIGKILLed while a mapped task runs (the step has
  written its marker): the task is retried on a restarted worker, the run ends with every event, no task lost;
- an LHE file put under the inbox prefix starts sbi_ingest (the deferrable sensor waits in the triggerer),
  whose asset event starts sbi_train, whose asset event starts sbi_infer, all to success. The chain starts
  before the worker is killed, so its tasks on the worker then are retried (or queued again) too;
- the API reports the next run of the cron-scheduled DAG where the cron says;
- the connection's secret is in no XCom, rendered template, asset event, task log or component log;
- every listener on loopback, the pools exist, requests without a token are refused.
PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) must be running: without them this module fails and
says which is missing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import yaml
from airflow_local import LocalAirflow, free_port, stragglers
from trigger_run import AirflowApi

from operators.profiles import load_pools
from tests.airflow.conftest import REPO
from tests.physics.lhe_files import write_lhe

pytestmark = pytest.mark.integration

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS = ("127.0.0.1", 6379)
CONN_ID = "sbi_s3"
ACCESS_KEY = "AKIASBIOPSTEST0001"
SECRET = "sbi-ops-secret-5c7e19d2aa"  # a distinctive value: looked for everywhere it must not be
BUCKET = "sbi-inbox"
EVENTS, SHARDS = 2000, 4
PIPELINE_CONF = {"events": EVENTS, "shards": SHARDS, "seed": 7, "until": "events",
                 "set": ["generation.shards_per_group=2"]}
HOLD = ["generate", "--shard", "0"]  # the mapped task whose first try the worker dies in
FINISHED = {"success", "failed"}


def far_cron(now: datetime) -> str:
    """A daily cron 12 hours away, so it never fires (nor counts as just missed) while the module runs."""
    return f"{now.minute} {(now.hour + 12) % 24} * * *"


def next_fire(cron: str, now: datetime) -> datetime:
    """The next time a daily `M H * * *` cron fires after `now` (UTC)."""
    minute, hour = (int(x) for x in cron.split()[:2])
    fire = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return fire if fire > now else fire + timedelta(days=1)


def inbox_config(directory: Path) -> Path:
    """configs/lhe_example.yaml at test size: one normalisation systematic, one ensemble member per benchmark
    ratio, one epoch, a 3-point scan of c1, no CLs limits, no toys, an Asimov dataset (what the learned
    likelihood is fitted to)."""
    cfg = yaml.safe_load((REPO / "configs" / "lhe_example.yaml").read_text())
    for parameter in cfg["parameters"]:
        parameter["true_value"] = 0.0
    cfg["nuisance"] = [n for n in cfg["nuisance"] if n["kind"] == "normalization"]
    cfg["simulator"]["options"].pop("energy_scale")
    cfg["simulator"]["options"]["files"] = ["replaced-by-the-inbox.lhe"]
    cfg["training"] = {"methods": ["benchmark_ratio"], "members": 1, "min_members": 1, "variations": False,
                       "optimizer": {"epochs": 1}, "samples": {"train": 300, "test": 100}}
    cfg["inference"] = {"source": "learned", "dataset": {"kind": "asimov"}, "limits": {}, "toys": {"n": 0},
                        "scan": {"parameters": [["c1"]], "points": 3, "blocks": 1}, "confidence_levels": [0.68]}
    path = directory / "inbox.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh database for this module's Airflow, dropped afterwards."""
    import psycopg2

    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL 15 is needed on {PG['host']}:{PG['port']} (user {PG['user']}, trust auth): {exc}")
    admin.autocommit = True
    name = f"sbi_airflow_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    """A key prefix of our own on the Redis broker (other test sessions may share it); its keys deleted after."""
    import redis

    client = redis.Redis(*REDIS, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis 7 is needed on {REDIS[0]}:{REDIS[1]} as the Celery broker: {exc}")
    prefix = f"sbi-test-{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """The S3 emulator (moto server) on 127.0.0.1 with the inbox bucket; stopped afterwards."""
    import boto3

    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the S3 emulator (moto_server) did not start")
            time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    assert boto3  # imported above so a missing boto3 fails here, before Airflow starts


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET)


@pytest.fixture(scope="module")
def prod(postgres_url, redis_prefix, s3_endpoint, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """Airflow on PostgreSQL + Celery, with the AWS connection made through the REST API."""
    home = tmp_path_factory.mktemp("airflow-prod")
    hold = home / "hold"
    hold.mkdir()
    shim = home / "bin" / "sbi-core"
    shim.parent.mkdir()
    shim.write_text(f"#!{sys.executable}\n{(Path(__file__).with_name('hold_sbi_core.py')).read_text()}")
    shim.chmod(0o755)
    now = datetime.now(UTC)
    cron = far_cron(now)
    queue = redis_prefix.rstrip(":")
    env = {
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": redis_prefix,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
        # As many tasks queued as the worker runs, so a task queued for long was lost with a killed worker
        # (it had not started): it is queued again after task_queued_timeout.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",  # parsed once: no CPU spent re-parsing
        "SBI_BACKEND": "local",
        "SBI_ARTIFACT_ROOT": str(home / "artifacts"),
        "SBI_CORE": str(shim),
        "SBI_HOLD_DIR": str(hold),
        "SBI_HOLD_MATCH": json.dumps(HOLD),
        "SBI_MAX_FAN_OUT": "2",
        "SBI_TASK_TARGET_S": "0",  # batches by count: 4 shards make 2 generate tasks (one is held and killed)
        "SBI_RETRY_DELAY": "2",
        "SBI_CHAIN_STAGES": "true",
        "SBI_SCHEDULE_SBI_INFER": cron,
        "SBI_AWS_CONN_ID": CONN_ID,
        "SBI_LHE_INBOX": f"s3://{BUCKET}/incoming",
        "SBI_LHE_POLL": "2",
        "SBI_LHE_CONFIG": str(inbox_config(home)),
        "SBI_TRACKING": "off",
    }
    with pytest.MonkeyPatch.context() as mp:  # no S3 credential reaches Airflow but through its connection
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                     "SBI_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
            mp.delenv(name, raising=False)
        service = LocalAirflow(home=home, port=free_port(), log_ports=(free_port(), free_port()),
                               database=postgres_url, executor="celery", extra_env=env)
        with service:
            service.wait_ready(timeout=240)
            service.wait_for_log("celery-worker", " ready.", timeout=120)
            user, password = service.credentials()
            api = AirflowApi(service.url, AirflowApi.login(service.url, user, password))
            deadline = time.monotonic() + 240  # a healthy dag-processor may not have parsed every file yet
            for dag_id in ("sbi_pipeline", "sbi_ingest", "sbi_train", "sbi_infer", "sbi_lhe_inbox"):
                api.wait_for_dag(dag_id, deadline)
            extra = json.dumps({"endpoint_url": s3_endpoint, "region_name": "us-east-1"})
            api.call("POST", "/connections", ok=(201,), json={"connection_id": CONN_ID, "conn_type": "aws",
                                                              "login": ACCESS_KEY, "password": SECRET, "extra": extra})
            yield SimpleNamespace(airflow=service, api=api, home=home, hold=hold, cron=cron, now=now,
                                  s3=s3_client(s3_endpoint), database=postgres_url, queue=queue)
    assert not service.processes
    assert not stragglers(home), "processes of this Airflow outlived stop()"


def wait_for(predicate, timeout: float, what: str, airflow: LocalAirflow, poll: float = 1.0):
    """Poll `predicate` until it returns something truthy; fail with the components' log tails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"{what} after {timeout:.0f} s" + _tail_logs(airflow.log_dir))


def task_instances(api: AirflowApi, dag_id: str, run_id: str) -> list[dict]:
    return api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}).json()[
        "task_instances"]


def dag_runs(api: AirflowApi, dag_id: str) -> list[dict]:
    return api.call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"}).json()["dag_runs"]


def finished_run(api: AirflowApi, dag_id: str, run_id: str) -> dict | None:
    run = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
    return run if run["state"] in FINISHED else None


@pytest.fixture(scope="module")
def chain(prod) -> float:
    """An LHE file dropped in the inbox, and the four DAGs of the chain unpaused: the chain runs while the
    worker-kill test does (a killed chain task is retried too). Returns when it started."""
    lhe = prod.home / "drop.lhe.gz"
    write_lhe(lhe, 400, seed=3)
    for dag_id in ("sbi_ingest", "sbi_train", "sbi_infer", "sbi_lhe_inbox"):
        prod.api.unpause(dag_id)
    prod.s3.upload_file(str(lhe), BUCKET, "incoming/run-42/drop.lhe.gz")
    return time.monotonic()


def test_pipeline_on_celery_loses_no_task_when_its_worker_is_killed(prod, chain, record_property):
    """Triggered as CI does (scripts/trigger_run.py); SIGKILL the worker and everything under it once the held
    generate task has started, then restart it, as a supervisor would. The LHE chain runs meanwhile."""
    airflow = prod.airflow
    user, password = airflow.credentials()
    env = {**os.environ, "AIRFLOW_API_URL": airflow.url, "AIRFLOW_USERNAME": user, "AIRFLOW_PASSWORD": password}
    started = time.monotonic()
    ci = subprocess.Popen([sys.executable, str(REPO / "scripts" / "trigger_run.py"), "--dag-id", "sbi_pipeline",
                           "--conf", json.dumps(PIPELINE_CONF), "--timeout", "400", "--poll", "1",
                           "--task", "combine_all"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (prod.hold / "held").exists(), 180, "the held generate task never started", airflow)
        worker_log = airflow.log_dir / "celery-worker.log"
        killed = airflow.kill_component("celery-worker")
        assert int((prod.hold / "held").read_text()) in killed  # the step itself died with its worker
        after = worker_log.stat().st_size
        airflow.start_component("celery-worker")
        airflow.wait_for_log("celery-worker", " ready.", after=after, timeout=120)
        out, err = ci.communicate(timeout=420)
    finally:
        if ci.poll() is None:
            ci.kill()
    record_property("celery_kill_run_seconds", round(time.monotonic() - started, 1))
    result = json.loads(out.strip().splitlines()[-1])
    tis = task_instances(prod.api, "sbi_pipeline", result["run_id"])
    assert ci.returncode == 0 and result["state"] == "success", (err[-2000:], [
        (t["task_id"], t["map_index"], t["state"]) for t in tis], _tail_logs(airflow.log_dir))
    generate = [t for t in tis if t["task_id"] == "generate"]
    assert len(generate) == SHARDS // 2 and all(t["state"] == "success" for t in generate)  # batches of 2 shards
    held_ti = next(t for t in generate if t["map_index"] == 0)
    assert held_ti["try_number"] >= 2  # the killed try, then the one that finished
    assert {t["queue"] for t in tis if t["state"] == "success"} == {prod.queue}  # all ran on our Celery worker
    assert result["summaries"]["combine_all"]["n_events"] == EVENTS


def test_an_lhe_file_in_the_inbox_starts_ingest_then_train_then_infer(prod, chain, record_property):
    api, airflow = prod.api, prod.airflow

    def infer_done():
        runs = [r for r in dag_runs(api, "sbi_infer") if r["run_type"] == "asset_triggered"]
        failed = [(d, r["dag_run_id"]) for d in ("sbi_lhe_inbox", "sbi_ingest", "sbi_train")
                  for r in dag_runs(api, d) if r["state"] == "failed"]
        assert not failed, failed
        return runs[0] if runs and runs[0]["state"] in FINISHED else None

    infer = wait_for(infer_done, 540, "no asset-triggered sbi_infer run finished", airflow, poll=2.0)
    record_property("asset_chain_seconds", round(time.monotonic() - chain, 1))
    assert infer["state"] == "success", [(t["task_id"], t["state"]) for t in task_instances(
        api, "sbi_infer", infer["dag_run_id"])]
    # Each stage is its own run, started by the asset event of the one before, which names the run it wrote.
    chain = {}
    for dag_id, asset in (("sbi_ingest", "sbi_lhe_files"), ("sbi_train", "sbi_events"), ("sbi_infer", "sbi_networks")):
        runs = [r for r in dag_runs(api, dag_id) if r["run_type"] == "asset_triggered"]
        assert runs and runs[0]["state"] == "success", (dag_id, runs)
        events = api.call("GET", f"/dags/{dag_id}/dagRuns/{runs[0]['dag_run_id']}/upstreamAssetEvents").json()
        assert [e["name"] for e in events["asset_events"]] == [asset], events
        chain[dag_id] = (runs[0]["dag_run_id"], events["asset_events"][0]["extra"])
    inbox_runs = dag_runs(api, "sbi_lhe_inbox")  # continuous: after the claim, the next run waits again
    assert len(inbox_runs) >= 2 and inbox_runs[-1]["state"] == "success", inbox_runs
    claimed = chain["sbi_ingest"][1]["files"]
    assert len(claimed) == 1 and claimed[0].startswith(f"s3://{BUCKET}/incoming-claimed/")
    assert not prod.s3.list_objects_v2(Bucket=BUCKET, Prefix="incoming/").get("Contents")  # the inbox is empty
    ingest_run = api.summary("sbi_ingest", chain["sbi_ingest"][0], "prepare")["run"]
    assert chain["sbi_train"][1]["run"] == ingest_run  # sbi_train trained on the events sbi_ingest wrote
    train_run = api.summary("sbi_train", chain["sbi_train"][0], "prepare_derive")
    assert train_run["source"] == ingest_run and chain["sbi_infer"][1]["run"] == train_run["run"]
    report = api.summary("sbi_infer", infer["dag_run_id"], "inference.report")
    assert report["valid"] is True and Path(report["results"]).is_file()


def test_the_api_reports_the_next_run_where_the_cron_says(prod):
    dag = prod.api.call("GET", "/dags/sbi_infer").json()
    assert prod.cron in dag["timetable_summary"], dag["timetable_summary"]
    expected = next_fire(prod.cron, prod.now)
    assert datetime.fromisoformat(dag["next_dagrun_run_after"]) == expected, dag
    assert dag["max_active_runs"] == 1


def test_the_connection_secret_is_in_no_xcom_template_event_or_log(prod):
    import psycopg2

    queries = {"xcom": "SELECT value::text FROM xcom", "rendered": "SELECT rendered_fields::text FROM "
               "rendered_task_instance_fields", "asset events": "SELECT extra::text FROM asset_event"}
    url = prod.database.replace("postgresql://", "postgresql://", 1)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        for what, query in queries.items():
            cur.execute(query)
            rows = [r[0] for r in cur.fetchall()]
            assert rows, f"no {what} to look at"
            assert not [r for r in rows if SECRET in (r or "")], f"the secret is in {what}"
    logs = [p for p in (prod.home / "logs").rglob("*") if p.is_file()]
    assert any("ingest-lhe" in p.read_text(errors="replace") for p in logs)  # the S3 steps' logs are there
    assert not [str(p) for p in logs if SECRET in p.read_text(errors="replace")]


def test_a_study_dag_triggers_itself_round_after_round_then_finishes(prod, record_property):
    """sbi_toy_limits on a counting experiment: round 1 triggers round 2, whose aggregate ends the study."""
    from tests.airflow.study_loop import two_rounds_of_sbi_toy_limits

    seconds = two_rounds_of_sbi_toy_limits(prod.airflow)
    record_property("study_two_rounds_seconds", round(seconds, 1))


def test_every_listener_is_on_loopback(prod):
    """What `ss -ltnp` shows for the components and their children (the worker too): nothing beyond loopback."""
    airflow = prod.airflow
    listeners = airflow.listeners()
    assert (airflow.host, airflow.port) in {(a, p) for a, p, _ in listeners}
    assert all(ipaddress.ip_address(a).is_loopback for a, _, _ in listeners), listeners
    assert not {p for _, p, _ in listeners} & set(airflow.log_ports)  # serve-logs not started


def test_the_pools_of_the_profiles_exist(prod):
    pools = {p["name"]: p["slots"] for p in prod.api.call("GET", "/pools").json()["pools"]}
    assert {name: pools.get(name) for name in load_pools()} == {p.name: p.slots for p in load_pools().values()}


def test_requests_without_a_token_are_refused(prod):
    url = prod.airflow.url
    assert requests.get(f"{url}/api/v2/dags", timeout=10).status_code == 401
    assert requests.post(f"{url}/api/v2/dags/sbi_pipeline/dagRuns", json={"logical_date": None},
                         timeout=10).status_code == 401


def _tail_logs(log_dir: Path, lines: int = 40) -> str:
    return "".join(f"\n--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
                   for p in log_dir.glob("*.log"))
