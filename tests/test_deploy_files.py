"""docker-compose.yaml, the Dockerfiles and .dockerignore. No Docker engine here: `docker compose config`
(or Debian's `docker-compose config`) validates the file without one; the rest is checked as text."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

#: What tests/airflow/test_production.py runs, as compose services.
SERVICES = {"postgres", "redis", "minio", "minio-init", "mlflow", "airflow-init", "airflow-apiserver",
            "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def compose_command() -> list[str]:
    """`docker compose` (the plugin) or `docker-compose`; fails naming what to install when neither is there."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose): "
                "needed to validate docker-compose.yaml")


def test_compose_passes_docker_compose_config():
    done = subprocess.run([*compose_command(), "-f", str(REPO / "docker-compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr


def test_compose_runs_what_the_production_test_ran(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    env = compose["x-airflow"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    assert services["postgres"]["image"].startswith("postgres:15")  # the version the test runs against
    assert services["redis"]["image"].startswith("redis:7")
    worker = services["airflow-worker"]["command"]  # Celery's concurrency sized to the pools, then the worker
    assert worker[:2] == ["bash", "-c"] and worker[2].endswith("exec airflow celery worker")
    assert "python -m operators.pools --concurrency" in worker[2]
    assert env["SBI_ARTIFACT_ROOT"].startswith("s3://") and env["SBI_LHE_INBOX"].startswith("s3://")
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "python -m operators.pools --import" in init  # the profiles' pools
    assert "airflow connections add aws_default --conn-type aws" in init


def test_only_the_connection_holds_the_s3_keys_on_the_airflow_side(compose):
    env = compose["x-airflow"]["environment"]
    assert not {k for k in env if k.startswith("AWS_")}, "S3 keys belong in the aws_default connection"
    assert env["SBI_AWS_CONN_ID"] == "aws_default" and env["AIRFLOW__CORE__FERNET_KEY"]


def test_mlflow_server_accepts_the_airflow_containers_and_keeps_runs_in_postgres_and_s3(compose):
    mlflow = compose["services"]["mlflow"]
    command = mlflow["command"].split()
    hosts = command[command.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in hosts and "mlflow" in hosts  # Host: mlflow:5000 from the Airflow containers
    assert command[command.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")
    assert command[command.index("--artifacts-destination") + 1].startswith("s3://")
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert (REPO / "docker" / "postgres-init.sh").is_file()
    assert "CREATE DATABASE mlflow" in (REPO / "docker" / "postgres-init.sh").read_text()


def test_every_image_is_pinned_and_every_port_on_loopback(compose):
    for name, svc in compose["services"].items():
        image = svc.get("image", "")
        if "build" not in svc:
            assert ":" in image and not image.endswith(":latest"), f"{name}: {image!r} is not pinned"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert compose["services"]["minio"]["image"].split(":")[1].startswith("RELEASE.")


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".airflow", "artifacts", ".env"} <= ignored


def test_images_take_a_base_image_and_the_core_has_cpu_and_cuda_variants():
    for name in ("Dockerfile.core", "Dockerfile.airflow"):
        text = (REPO / "docker" / name).read_text()
        assert "ARG BASE_IMAGE=" in text and "FROM ${BASE_IMAGE}" in text, name
    core = (REPO / "docker" / "Dockerfile.core").read_text()
    assert "cpu)" in core and "cuda)" in core and "ARG VARIANT=cpu" in core


def test_core_image_installs_torch_first_and_runs_as_non_root():
    text = (REPO / "docker" / "Dockerfile.core").read_text()
    assert text.index('"torch==${TORCH_VERSION}"') < text.index("/opt/sbi;")
    assert "USER 1000:1000" in text
    assert "apache-airflow" not in text and "[airflow]" not in text and "[dev]" not in text  # steps need no Airflow
