"""Kubernetes pods and storage: every profile sizes its local staging (ephemeral-storage, SBI_STAGING_LIMIT below
it), and the worker's deployment settings (the MLflow server, the artifact root, the S3 tuning) reach the pod, so
a deployment tracks and configures S3 once for both backends; credentials never travel this way."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiClient
from kubernetes.utils import parse_quantity

from operators.profiles import load_profiles
from operators.settings import profiles_path
from operators.steps import sbi_step

ARGUMENTS = ["generate", "--run", "s3://b/run", "--shard", "0"]


def _env(profile: str) -> tuple[dict[str, str], dict]:
    op = sbi_step("generate", arguments=ARGUMENTS, profile=profile, backend="kubernetes")
    pod = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    return {e["name"]: e.get("value") for e in base.get("env", [])}, base["resources"]


@pytest.mark.parametrize("profile", ["cpu", "gpu", "highmem"])
def test_profile_sizes_staging_and_forwards_the_deployment_settings(monkeypatch, profile):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.sbi.svc:5000")
    monkeypatch.setenv("SBI_ARTIFACT_ROOT", "s3://analysis/runs")
    monkeypatch.setenv("SBI_S3_READ_TIMEOUT", "30")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-in-a-pod-spec")
    monkeypatch.delenv("SBI_S3_PART_SIZE", raising=False)
    env, resources = _env(profile)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.sbi.svc:5000"
    assert env["SBI_ARTIFACT_ROOT"] == "s3://analysis/runs" and env["SBI_S3_READ_TIMEOUT"] == "30"
    assert "SBI_S3_PART_SIZE" not in env, "a setting the worker does not set is not invented"
    assert "AWS_SECRET_ACCESS_KEY" not in env and "never-in-a-pod-spec" not in env.values()
    limit = parse_quantity(resources["limits"]["ephemeral-storage"])
    assert parse_quantity(resources["requests"]["ephemeral-storage"]) <= limit
    from sbi_core.s3 import parse_size

    assert env["SBI_STAGING_DIR"] == "/tmp" and parse_size(env["SBI_STAGING_LIMIT"], "limit") < limit


def test_every_shipped_profile_has_ephemeral_storage():
    profiles, _ = load_profiles(str(profiles_path()))
    for name, p in profiles.items():
        assert "ephemeral-storage" in p.limits and "ephemeral-storage" in p.requests, name
        assert "MLFLOW_TRACKING_URI" in p.forward_env, name
