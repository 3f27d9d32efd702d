"""The step task factory: `sbi_step` turns an `sbi-core` argument list into a task on the configured backend.

    configure = sbi_step("configure", arguments=["configure", "--config", uri, "--run", run])
    generate = sbi_step("generate", profile="cpu", retries=3).expand(arguments=batches)   # mapped
    combine = sbi_step("combine").expand_kwargs(list_of_dicts_with_arguments)              # mapped

The backend comes from `SBI_BACKEND` (`local` or `kubernetes`), read where the DAG file is parsed; in
Airflow 3 a worker parses the file again before it runs a task, so the worker's setting is the one used.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

from operators import settings
from operators.profiles import get_profile

DEFAULT_RETRIES = 2


def step_operator_class(backend: str | None = None) -> type[BaseOperator]:
    """The operator class of a backend; the Kubernetes provider is imported only when it is chosen."""
    if (backend or settings.backend()) == "kubernetes":
        from operators.kubernetes import SbiPodOperator

        return SbiPodOperator
    from operators.local import SbiLocalOperator

    return SbiLocalOperator


def task_defaults() -> dict[str, Any]:
    """`default_args` of every DAG: the small Python tasks (plans, publishing, the inbox claim) retry like the
    steps, so a worker lost in the middle of one loses nothing (bad input still fails at once)."""
    return {"retries": DEFAULT_RETRIES, "retry_delay": timedelta(seconds=settings.retry_delay())}


def sbi_step(
    task_id: str,
    arguments: Sequence[Any] | Any | None = None,
    *,
    profile: str = "cpu",
    retries: int = DEFAULT_RETRIES,
    backend: str | None = None,
    **kwargs: Any,
) -> Any:
    """A task running `sbi-core ARGUMENTS...`; its XCom is the step's JSON summary.

    Give `arguments` (a list, or an XComArg resolving to one) for a single task; leave it out to get
    the `.partial(...)` result, ready for `.expand(arguments=...)` or `.expand_kwargs(...)`.
    `profile` picks the pod resources and the Airflow pool (`operators/profiles.yaml`) on both backends;
    `kwargs` go to the operator (an explicit `pool=` wins).
    """
    operator = step_operator_class(backend)
    options = {"task_id": task_id, "profile": profile, "retries": retries,
               "retry_delay": timedelta(seconds=settings.retry_delay())}
    pool = get_profile(profile).pool
    if pool:
        options["pool"] = pool
    options.update(kwargs)
    if arguments is None:
        return operator.partial(**options)
    return operator(arguments=arguments, **options)
