"""Kubernetes backend without a cluster: the pods as the API server would receive them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from operators.command import POD_WRAPPER, pod_command
from operators.plans import generate_arguments
from operators.profiles import ProfileError
from operators.steps import sbi_step
from tests.airflow.conftest import METACHARACTERS, fake_context

ARGUMENTS = ["configure", "--config", "/c.yaml", "--run", "s3://b/run", "--set", METACHARACTERS]


def manifest(op) -> dict:
    """The pod of a Kubernetes step as a plain dict (what `kubectl get pod -o json` would show)."""
    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


def base(pod: dict) -> dict:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "base")


def test_gpu_pod_has_gpu_limit_toleration_pool_secret_and_non_root_user():
    pod = manifest(sbi_step("train", arguments=ARGUMENTS, profile="gpu", backend="kubernetes"))
    container, spec = base(pod), pod["spec"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"sbi.dev/pool": "gpu"}
    assert {"secretRef": {"name": "sbi-s3-credentials"}} in container["envFrom"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["image"].endswith("-cuda")
    assert pod["metadata"]["labels"]["sbi.dev/profile"] == "gpu"


def test_pod_runs_exactly_the_local_argument_list(fake_sbi_core):
    op = sbi_step("configure", arguments=ARGUMENTS, backend="kubernetes")
    container = base(manifest(op))
    sbi_step("configure", arguments=ARGUMENTS).execute(context={})
    assert container["command"] == pod_command()
    assert container["args"] == fake_sbi_core.argv() == ARGUMENTS


def test_pod_pushes_its_summary_through_the_xcom_sidecar_and_survives_scale_up():
    op = sbi_step("generate", arguments=["generate"], profile="highmem", backend="kubernetes")
    pod = manifest(op)
    assert {"mountPath": "/airflow/xcom", "name": "xcom"} in base(pod)["volumeMounts"]
    assert any(c["name"] == "airflow-xcom-sidecar" for c in pod["spec"]["containers"])
    assert base(pod)["resources"]["limits"]["memory"] == "64Gi"
    assert "nvidia.com/gpu" not in base(pod)["resources"]["limits"]
    assert op.do_xcom_push and op.on_finish_action.value == "delete_succeeded_pod"
    assert op.schedule_timeout_seconds >= 900 and op.startup_timeout_seconds >= 600


def test_pod_wrapper_passes_arguments_unchanged_and_writes_the_summary(fake_sbi_core, tmp_path):
    """Run the container command with sh, as the pod would, against the fake sbi-core on PATH."""
    xcom = tmp_path / "return.json"
    command = ["sh", "-c", POD_WRAPPER.replace("/airflow/xcom/return.json", str(xcom)), *pod_command()[3:]]
    env = {**os.environ, "PATH": f"{fake_sbi_core.path.parent}:{os.environ['PATH']}"}
    done = subprocess.run([*command, *ARGUMENTS], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert fake_sbi_core.argv() == ARGUMENTS
    assert json.loads(xcom.read_text()) == {"step": "configure", "argv": ARGUMENTS}
    xcom.unlink()
    failed = subprocess.run([*command, *ARGUMENTS], env={**env, "FAKE_SBI_EXIT": "3"}, capture_output=True, text=True)
    assert failed.returncode == 3 and "must be > 0" in failed.stderr and not xcom.exists()


def test_mapped_generate_renders_one_pod_per_map_index(dag_of):
    dag = dag_of("sbi_pipeline", "kubernetes")
    run = "s3://b/{{ run_id }}"  # values from XCom are data: Jinja must leave them alone
    summary = {"step": "configure", "run": run, "shards": list(range(6))}
    batches = generate_arguments(summary, max_tasks=3)
    pods = []
    for index in range(len(batches)):
        context = fake_context(dag, {("plan_generate", "return_value"): batches}, map_index=index)
        dag.get_task("generate").render_template_fields(context)
        pods.append(manifest(context["task"]))
    assert [base(p)["args"] for p in pods] == batches
    assert batches[1] == ["generate", "--run", run, "--shard", "2", "--shard", "3"]
    assert {p["metadata"]["labels"]["sbi.dev/step"] for p in pods} == {"generate"}
    assert len({p["metadata"]["name"] for p in pods}) == len(batches)


def test_combine_all_renders_the_run_prefix_from_prepare(dag_of):
    dag = dag_of("sbi_pipeline", "kubernetes")
    op = dag.get_task("combine_all")
    op.render_template_fields(fake_context(dag, {("prepare", "run"): "s3://b/run"}))
    assert base(manifest(op))["args"] == ["combine", "--run", "s3://b/run", "--all"]


def test_profiles_come_from_the_file_named_by_sbi_profiles(tmp_path: Path, monkeypatch):
    custom = tmp_path / "profiles.yaml"
    custom.write_text("defaults: {image: my/core:1, namespace: lab}\nprofiles: {gpu: {limits: {nvidia.com/gpu: '2'}}}")
    monkeypatch.setenv("SBI_PROFILES", str(custom))
    pod = manifest(sbi_step("train", arguments=["train"], profile="gpu", backend="kubernetes"))
    assert base(pod)["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert (base(pod)["image"], pod["metadata"]["namespace"]) == ("my/core:1", "lab")
    broken = tmp_path / "broken.yaml"
    broken.write_text("defaults: {image: i, namespace: n, gpus: 1}\nprofiles: {gpu: {}}\n")
    monkeypatch.setenv("SBI_PROFILES", str(broken))
    with pytest.raises(ProfileError, match="unknown keys \\['gpus'\\]"):
        manifest(sbi_step("train", arguments=["train"], profile="gpu", backend="kubernetes"))
