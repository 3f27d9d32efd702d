"""The sbi_ingest DAG's own pieces: its trigger form and the argument lists of its mapped ingest tasks.

`prepare`, `plan_combine` and the step factory are shared with sbi_pipeline (operators.plans, operators.steps);
this module adds only what reading input files needs. Runs on the worker in milliseconds; nothing here
imports sbi_core.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param, task

from operators.fanout import FanLimits
from operators.params import shipped_configs, trigger_params
from operators.plans import FANS, PlanError, planned_arguments, planning_limits

DEFAULT_CONFIG = "lhe_example"
# UI label of a mapped ingest task, read from its argument list (`ingest-lhe --run RUN --file I [--file J ...]`).
INGEST_LABEL = "file {{ task.arguments[4] }}{% if task.arguments[5:] %}..{{ task.arguments[-1] }}{% endif %}"


def ingest_params(configs: list[str] | None = None) -> dict[str, Param]:
    """The trigger form: the sbi_pipeline form with an LHE config chosen by default and no shard override
    (an LHE run has one shard per input file; `events` caps the events kept, `seed` drives the detector)."""
    configs = configs or shipped_configs()
    params = trigger_params(configs=configs)
    old = params["config"]
    default = DEFAULT_CONFIG if DEFAULT_CONFIG in configs else old.value
    params["config"] = Param(default, description=f"An analysis config with simulator `lhe`. {old.description}",
                             **old.schema)  # replacing a key keeps its place in the form
    del params["shards"]
    return params


def ingest_arguments(summary: Mapping[str, Any], limits: FanLimits | int) -> list[list[str]]:
    """One `ingest-lhe` per input file, or per group of consecutive files (`operators.plans.planned_arguments`)."""
    if "run" not in summary:
        raise PlanError(f"step summary {summary.get('step', '?')!r} has no 'run' (keys: {sorted(summary)})")
    return planned_arguments(FANS["ingest-lhe"], summary["run"], summary, limits)


@task
def plan_ingest(summary: dict[str, Any]) -> list[list[str]]:
    """Argument lists of the mapped ingest tasks (one per input file of the configured run)."""
    return ingest_arguments(summary, planning_limits("cpu"))
