"""Kubernetes backend without a cluster: the pods as the API server would receive them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from operators.command import POD_WRAPPER, pod_command
from operators.plans import generate_arguments
from operators.profiles import ProfileError
from operators.steps import sbi_step
from tests.airflow.conftest import METACHARACTERS, fake_context
from tests.airflow.fake_sbi_core import fake_summary

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
    assert json.loads(xcom.read_text()) == fake_summary(ARGUMENTS)
    xcom.unlink()
    failed = subprocess.run([*command, *ARGUMENTS], env={**env, "FAKE_SBI_EXIT": "3"}, capture_output=True, text=True)
    assert failed.returncode == 3 and "must be > 0" in failed.stderr and not xcom.exists()


def test_mapped_generate_renders_one_pod_per_map_index(dag_of):
    dag = dag_of("sbi_pipeline", "kubernetes")
    run = "s3://b/{{ run_id }}"  # values from XCom are data: Jinja must leave them alone
    summary = {"step": "configure", "run": run, "shards": list(range(6))}
    batches = generate_arguments(summary, 3)
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


def terminated_pod(exit_code: int | None, phase: str = "Failed") -> k8s.V1Pod:
    """A pod as the API server reports it after the step ended (no cluster: built by hand)."""
    state = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code)) \
        if exit_code is not None else k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="ImagePull"))
    status = k8s.V1ContainerStatus(name="base", state=state, image="i", image_id="", ready=False, restart_count=0)
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="sbi-step-x", namespace="sbi"),
                     spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base")]),
                     status=k8s.V1PodStatus(phase=phase, container_statuses=[status]))


@pytest.fixture
def pod_operator(monkeypatch):
    """A step pod operator whose cluster calls (pod deletion, status patches) are no-ops."""
    op = sbi_step("configure", arguments=ARGUMENTS, backend="kubernetes", retries=3)
    for name in ("process_pod_deletion", "patch_already_checked", "is_istio_enabled"):
        monkeypatch.setattr(op, name, lambda *a, **k: None)
    return op


@pytest.mark.parametrize("code, fails_at_once", [(2, True), (1, False), (137, False), (None, False)])
def test_a_pod_that_exits_2_fails_without_retries_like_the_local_backend(pod_operator, code, fails_at_once):
    pod = terminated_pod(code)
    with pytest.raises(AirflowException, match="returned a failure") as info:
        pod_operator.cleanup(pod, pod)
    assert isinstance(info.value, AirflowFailException) is fails_at_once
    if fails_at_once:
        assert "sbi-core configure exited with 2 (bad input)" in str(info.value)


def test_a_pod_that_succeeded_raises_nothing(pod_operator):
    pod = terminated_pod(0, phase="Succeeded")
    pod_operator.cleanup(pod, pod)


def test_pods_know_their_dag_run_for_mlflow_tags(dag_of):
    dag = dag_of("sbi_pipeline", "kubernetes")
    op = dag.get_task("configure")
    context = fake_context(dag, {("prepare", "configure"): ARGUMENTS})
    op.render_template_fields(context)
    env = {e["name"]: e.get("value") for e in base(manifest(op))["env"]}
    assert env["AIRFLOW_CTX_DAG_ID"] == "sbi_pipeline"
    assert env["AIRFLOW_CTX_DAG_RUN_ID"] == context["run_id"]
    assert env["PYTHONUNBUFFERED"] == "1"  # the profile's env is kept


@pytest.mark.parametrize("dag_id", ["sbi_pipeline", "sbi_train"])
def test_train_tasks_of_the_dags_ask_for_a_gpu(dag_of, dag_id):
    dag = dag_of(dag_id, "kubernetes")
    batches = [["train", "--run", "s3://b/r", "--network", "alices-theta-nominal-m00"]]
    context = fake_context(dag, {("training.plan_train", "return_value"): batches}, map_index=0)
    dag.get_task("training.train").render_template_fields(context)
    pod = manifest(context["task"])
    assert base(pod)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["nodeSelector"] == {"sbi.dev/pool": "gpu"}
    assert base(pod)["args"] == batches[0]
    assert context["task"].pool == "sbi_gpu"


def test_hessian_blocks_of_the_dags_get_high_memory(dag_of):
    dag = dag_of("sbi_infer", "kubernetes")
    batches = [["hessian", "--run", "s3://b/r", "--rows", "0:8"]]
    context = fake_context(dag, {("inference.plan_hessian", "return_value"): batches}, map_index=0)
    dag.get_task("inference.hessian").render_template_fields(context)
    pod = manifest(context["task"])
    assert base(pod)["resources"]["limits"]["memory"] == "64Gi"
    assert "nvidia.com/gpu" not in base(pod)["resources"]["limits"]
    assert pod["spec"]["nodeSelector"] == {"sbi.dev/pool": "highmem"}
    assert context["task"].pool == "sbi_highmem"


def test_the_xcom_sidecar_has_requests_and_limits():
    pod = manifest(sbi_step("fit", arguments=["fit"], backend="kubernetes"))
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "airflow-xcom-sidecar")
    assert sidecar["resources"] == {"requests": {"cpu": "1m", "memory": "10Mi"},
                                    "limits": {"cpu": "50m", "memory": "32Mi"}}


def test_a_profile_with_a_compile_cache_mounts_its_volume_and_points_jax_at_it(tmp_path: Path, monkeypatch):
    custom = tmp_path / "profiles.yaml"
    custom.write_text("defaults: {image: i, namespace: n}\nprofiles:\n  cpu: {}\n"
                      "  highmem: {compile_cache: {claim: sbi-jax-cache, mount_path: /cache/jax}}\n")
    monkeypatch.setenv("SBI_PROFILES", str(custom))
    pod = manifest(sbi_step("hessian", arguments=["hessian"], profile="highmem", backend="kubernetes"))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "jax-compile-cache")
    assert volume["persistentVolumeClaim"] == {"claimName": "sbi-jax-cache"}
    assert {"mountPath": "/cache/jax", "name": "jax-compile-cache"} in base(pod)["volumeMounts"]
    assert {"name": "SBI_JAX_CACHE_DIR", "value": "/cache/jax"} in base(pod)["env"]
    plain = manifest(sbi_step("fit", arguments=["fit"], profile="cpu", backend="kubernetes"))
    assert "jax-compile-cache" not in {v["name"] for v in plain["spec"].get("volumes") or []}
    assert "SBI_JAX_CACHE_DIR" not in {e["name"] for e in base(plain)["env"]}
    custom.write_text("defaults: {image: i, namespace: n}\nprofiles: {cpu: {compile_cache: {mount_path: /c}}}\n")
    with pytest.raises(ProfileError, match="compile_cache"):
        manifest(sbi_step("fit", arguments=["fit"], profile="cpu", backend="kubernetes"))


def test_the_shipped_profiles_mount_no_cache_volume_by_default():
    for profile in ("cpu", "gpu", "highmem"):
        pod = manifest(sbi_step("fit", arguments=["fit"], profile=profile, backend="kubernetes"))
        assert "jax-compile-cache" not in {v["name"] for v in pod["spec"].get("volumes") or []}
