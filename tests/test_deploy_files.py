"""docker-compose.yaml and the Dockerfiles cannot be built here (no Docker engine): check what can be checked."""

from __future__ import annotations

import yaml

from tests.conftest import REPO


def test_compose_parses_binds_loopback_and_points_steps_at_minio():
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "mlflow"} <= set(services)
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    env = compose["x-airflow"]["environment"]
    assert env["SBI_ARTIFACT_ROOT"].startswith("s3://")
    assert "AWS_ENDPOINT_URL" in env  # sbi_core.storage reads it (or SBI_S3_ENDPOINT_URL)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "python -m operators.pools --import" in init  # the profiles' pools


def test_core_image_installs_torch_first_and_runs_as_non_root():
    text = (REPO / "docker" / "Dockerfile.core").read_text()
    assert text.index('"torch==${TORCH_VERSION}"') < text.index("/opt/sbi;")
    assert "USER 1000:1000" in text
    assert "apache-airflow" not in text and "[airflow]" not in text and "[dev]" not in text  # steps need no Airflow
