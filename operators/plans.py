"""Small Python tasks that turn params and step summaries into the argument lists of the next steps.

They run on the worker in milliseconds and read deployment settings at run time (never at parse).
Each fan-out gets its own task because Airflow maps only over a task's return value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import get_current_context, task

from operators import settings

KEEP = (None, 0, "")  # an override left at one of these keeps the config's value
# UI labels of mapped instances (`map_index_template`), read from the argument lists built below.
GENERATE_LABEL = "shard {{ task.arguments[4] }}{% if task.arguments[5:] %}..{{ task.arguments[-1] }}{% endif %}"
COMBINE_LABEL = "group {{ task.arguments[4] }}{% if task.arguments[5:] %}..{{ task.arguments[-1] }}{% endif %}"
OVERRIDES = {"events": "generation.events", "shards": "generation.shards", "seed": "generation.seed"}


class PlanError(ValueError):
    """A step summary lacks what the next step needs; the message names the key."""


def configure_arguments(params: Mapping[str, Any], run: str) -> list[str]:
    """`configure` for the config the params pick, with their overrides as `--set PATH=VALUE` items."""
    config = params.get("config_uri") or f"{settings.configs_uri()}/{params['config']}.yaml"
    argv = ["configure", "--config", str(config), "--run", run]
    for name, path in OVERRIDES.items():
        if params.get(name) not in KEEP:
            argv += ["--set", f"{path}={params[name]}"]
    for item in params.get("set") or ():
        argv += ["--set", str(item)]
    return argv


def generate_arguments(summary: Mapping[str, Any], max_tasks: int) -> list[list[str]]:
    """One `generate` per shard, or per batch of consecutive shards when there are more than `max_tasks`.

    Each list is `generate --run RUN --shard I [--shard J ...]` (`GENERATE_LABEL` relies on that layout).
    """
    return _batched("generate", "--shard", _get(summary, "run"), _get(summary, "shards"), max_tasks)


def combine_arguments(summary: Mapping[str, Any], max_tasks: int) -> list[list[str]]:
    """One first-level `combine` per group, or per batch of consecutive groups past `max_tasks`.

    Each list is `combine --run RUN --group G [--group H ...]` (`COMBINE_LABEL` relies on that layout).
    """
    return _batched("combine", "--group", _get(summary, "run"), list(range(_get(summary, "n_groups"))), max_tasks)


def _batched(step: str, flag: str, run: str, items: Sequence[int], max_tasks: int) -> list[list[str]]:
    size = max(1, math.ceil(len(items) / max_tasks))
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    return [[step, "--run", run, *_repeat(flag, batch)] for batch in batches]


@task(multiple_outputs=True)
def prepare() -> dict[str, Any]:
    """This run's artifact prefix and the configure argument list, from the trigger params."""
    context = get_current_context()
    run = settings.run_uri(context["dag"].dag_id, context["run_id"])
    return {"run": run, "configure": configure_arguments(context["params"], run)}


@task
def plan_generate(summary: dict[str, Any]) -> list[list[str]]:
    """Argument lists of the mapped generate tasks."""
    return generate_arguments(summary, settings.max_fan_out())


@task
def plan_combine(summary: dict[str, Any]) -> list[list[str]]:
    """Argument lists of the mapped first-level combine tasks."""
    return combine_arguments(summary, settings.max_fan_out())


def _get(summary: Mapping[str, Any], key: str) -> Any:
    if key not in summary:
        raise PlanError(f"step summary {summary.get('step', '?')!r} has no {key!r} (keys: {sorted(summary)})")
    return summary[key]


def _repeat(flag: str, values: Sequence[Any]) -> list[str]:
    return [item for value in values for item in (flag, str(value))]
