"""Kubernetes backend: one pod per step, running the core image with the step's resource profile.

Imported only when `SBI_BACKEND=kubernetes` (the provider costs ~2 s to import). The pod runs the
same argument list as the local backend (see `operators.command.pod_command`), writes its summary to
`/airflow/xcom/return.json` for the XCom sidecar, gets S3 credentials from a Kubernetes Secret and
runs as a non-root user. Sizes (the XCom sidecar's too, with limits), images and timeouts come from the
profile, read at pod build; a profile's `compile_cache` mounts a volume for JAX's persistent compilation cache.

Exit codes: a pod whose step exits 2 (bad input) fails the task at once, without retries, as the local
backend does (`cleanup` maps the base container's exit code); any other failure stays retryable.
The pod gets AIRFLOW_CTX_DAG_ID / AIRFLOW_CTX_DAG_RUN_ID (templated), so a step can tag what it logs
(MLflow) with the DAG run, as a local subprocess inherits them from the worker; and the deployment settings
its profile's `forward_env` names (MLFLOW_TRACKING_URI, SBI_ARTIFACT_ROOT, SBI_S3_*), read from the worker's
environment when the pod is built, so one setting configures both backends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.secret import Secret
from airflow.providers.cncf.kubernetes.utils.pod_manager import OnFinishAction
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from kubernetes.client import models as k8s

from operators.command import BAD_INPUT_EXIT, pod_command, step_arguments
from operators.profiles import CacheVolume, Profile, get_profile

LABEL_PREFIX = "sbi.dev"
SIDECAR_NAME = PodDefaults.SIDECAR_CONTAINER_NAME
COMPILE_CACHE_VOLUME = "jax-compile-cache"
#: Environment every step pod gets, rendered per task instance (what the local backend inherits).
CONTEXT_ENV = {"AIRFLOW_CTX_DAG_ID": "{{ dag.dag_id }}", "AIRFLOW_CTX_DAG_RUN_ID": "{{ run_id }}"}


class SbiPodOperator(KubernetesPodOperator):
    """Run `sbi-core ARGUMENTS...` in a pod sized by `profile`; its JSON summary becomes the XCom."""

    ui_color = "#dbe7f7"

    def __init__(self, *, arguments: Sequence[Any], profile: str = "cpu", **kwargs: Any) -> None:
        context_env = (k8s.V1EnvVar(name=k, value=v) for k, v in CONTEXT_ENV.items())
        env = [*_env_list(kwargs.pop("env_vars", None)), *context_env]
        super().__init__(cmds=pod_command(), arguments=arguments, do_xcom_push=True, env_vars=env, **kwargs)
        self.profile = profile
        self._applied: Profile | None = None

    def cleanup(self, pod: k8s.V1Pod, remote_pod: k8s.V1Pod, *args: Any, **kwargs: Any) -> None:
        """The provider's cleanup (pod deletion, failure logs, `AirflowException` on failure); a step that
        exited 2 (bad input) raises `AirflowFailException` instead, so the task fails without retries."""
        try:
            super().cleanup(pod, remote_pod, *args, **kwargs)
        except (AirflowFailException, AirflowSkipException):
            raise
        except AirflowException as exc:
            code = container_exit_code(remote_pod, self.base_container_name)
            if code == BAD_INPUT_EXIT:
                raise AirflowFailException(f"sbi-core {self.arguments[0]} exited with {code} (bad input): "
                                           f"retrying cannot help.\n{exc}") from exc
            raise

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        """The pod for this step (no cluster needed with `dry_run=True`); the XCom sidecar gets the profile's
        requests and limits unless the Kubernetes connection sets its resources."""
        self.arguments = step_arguments(self.arguments)
        profile = get_profile(self.profile)
        self._apply_profile(profile)
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        for container in pod.spec.containers:
            if container.name == SIDECAR_NAME and not getattr(container.resources, "limits", None):
                container.resources = k8s.V1ResourceRequirements(requests=profile.xcom_sidecar_requests,
                                                                 limits=profile.xcom_sidecar_limits)
        return pod

    def _apply_profile(self, profile: Profile) -> None:
        """Set the pod settings the profile owns; explicit `image`/`namespace` arguments win. Idempotent."""
        if self._applied is not None:
            return
        self._applied = profile
        self.image = self.image or profile.image
        self.namespace = self.namespace or profile.namespace
        self.image_pull_policy = self.image_pull_policy or profile.image_pull_policy
        self.service_account_name = self.service_account_name or profile.service_account
        self.container_resources = k8s.V1ResourceRequirements(requests=profile.requests, limits=profile.limits)
        self.node_selector = {**profile.node_selector, **self.node_selector}
        self.tolerations = [*self.tolerations, *(k8s.V1Toleration(**t) for t in profile.tolerations)]
        forwarded = {k: os.environ[k] for k in profile.forward_env if os.environ.get(k)}  # the worker's settings
        self.env_vars = [*(k8s.V1EnvVar(name=k, value=v) for k, v in {**profile.env, **forwarded}.items()),
                         *_env_list(self.env_vars)]
        if profile.compile_cache is not None:
            self._mount_compile_cache(profile.compile_cache)
        if profile.s3_secret:
            self.secrets = [*self.secrets, Secret(deploy_type="env", deploy_target=None, secret=profile.s3_secret)]
        self.security_context = k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=profile.run_as_user,
            run_as_group=profile.run_as_user,
            fs_group=profile.run_as_user,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        )
        self.container_security_context = k8s.V1SecurityContext(
            allow_privilege_escalation=False, capabilities=k8s.V1Capabilities(drop=["ALL"])
        )
        self.xcom_sidecar_container_security_context = self.container_security_context
        self.labels = {
            **self.labels,
            f"{LABEL_PREFIX}/step": self.arguments[0],
            f"{LABEL_PREFIX}/profile": profile.name,
        }
        self.schedule_timeout_seconds = profile.schedule_timeout_seconds
        self.startup_timeout_seconds = profile.startup_timeout_seconds
        self.on_finish_action = OnFinishAction(profile.on_finish_action)

    def _mount_compile_cache(self, cache: CacheVolume) -> None:
        """The profile's PVC mounted at its path, and SBI_JAX_CACHE_DIR pointing there
        (sbi_core/inference/compilation.py)."""
        self.volumes = [*self.volumes, k8s.V1Volume(
            name=COMPILE_CACHE_VOLUME,
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=cache.claim))]
        self.volume_mounts = [*self.volume_mounts,
                              k8s.V1VolumeMount(name=COMPILE_CACHE_VOLUME, mount_path=cache.mount_path)]
        self.env_vars = [*self.env_vars, k8s.V1EnvVar(name="SBI_JAX_CACHE_DIR", value=cache.mount_path)]


def container_exit_code(pod: Any, container: str) -> int | None:
    """Exit code of a terminated container of a pod (`status.container_statuses[].state.terminated`), or None."""
    statuses = getattr(getattr(pod, "status", None), "container_statuses", None) or []
    status = next((s for s in statuses if s.name == container), None)
    terminated = status.state.terminated if status is not None and status.state is not None else None
    return terminated.exit_code if terminated is not None else None


def _env_list(env_vars: Any) -> list[k8s.V1EnvVar]:
    """KPO accepts env as a dict or a list of V1EnvVar; normalise to the list."""
    if isinstance(env_vars, dict):
        return [k8s.V1EnvVar(name=k, value=str(v)) for k, v in env_vars.items()]
    return list(env_vars or [])
