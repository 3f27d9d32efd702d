"""Small Python tasks that turn params and step summaries into the argument lists of the next steps.

What to use when:
- `FANS` (a registry, one `Fan` per mapped step): which summary key lists a step's work items, which
  flag takes them, and how a task takes several (`repeat` the flag, or `single`: one item
  per task, for short lists such as the estimator methods).
- `fan_out(fan, run, items, max_tasks)`: the mapped argument lists, batched by count past `max_tasks`.
- `planned_arguments(fan, run, summaries, limits)`: the mapped argument lists with the items grouped by their
  estimated cost (`operators.fanout`: about SBI_TASK_TARGET_S seconds of work per task).
- `plan` (a task): the same, from the summaries of the step before, with the limits read at planning time
  (SBI_MAX_FAN_OUT checked against Airflow's `core.max_map_length`: a conflict fails the plan, naming both).
- `prepare` / `prepare_derive` (tasks): this run's artifact prefix and its first command; both refuse a
  conf key the form does not have, and take their input from the asset events of a scheduled run.
- `stage_gate` (a short-circuit task): skips every later stage of sbi_pipeline past the form's "Run up to".

They run on the worker in milliseconds and read deployment settings at run time (never at parse).
Each fan-out gets its own task because Airflow maps only over a task's return value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from airflow.sdk import get_current_context, task

from operators import settings
from operators.assets import asset_source, inbox_inputs
from operators.fanout import FanLimits, FanOutConflict, fan_limits, group_by_cost, item_costs, rates
from operators.params import (
    GENERATION_KNOBS,
    INFERENCE_KNOBS,
    STAGES,
    TRAINING_KNOBS,
    Knob,
    override_items,
    unknown_conf_keys,
)

Mode = Literal["repeat", "single"]


class PlanError(ValueError):
    """A step summary or trigger form lacks what the next step needs; the message names the key."""


@dataclass(frozen=True)
class Fan:
    """How a mapped step takes its work items.

    `key` is the summary key listing them (a count `n` means items 0..n-1); `flag` the step's option.
    `mode`: `repeat` (the step takes the flag several times: a batch of items per task; each item keeps
    its own files, so the joins find every configured block whatever the batching), or `single` (one item per task whatever the fan-out limit: the flag takes one value, and the list is
    short by nature, e.g. the methods of `training.methods`).
    """

    step: str
    flag: str
    key: str
    mode: Mode
    noun: str

    @property
    def label(self) -> str:
        """`map_index_template` of the mapped task: its first item, and its last when it has several."""
        return (f"{self.noun} {{{{ task.arguments[4] }}}}"
                "{% if task.arguments[5:] %}..{{ task.arguments[-1] }}{% endif %}")


#: Every mapped step of the pipeline; argument lists are `[step, "--run", RUN, flag, item, (flag, item)...]`.
FANS: dict[str, Fan] = {
    f.step: f
    for f in (
        Fan("train-sampler", "--sampler", "samplers", "single", "sampler"),
        Fan("generate", "--shard", "shards", "repeat", "shard"),
        Fan("combine", "--group", "n_groups", "repeat", "group"),
        Fan("sample", "--method", "methods", "single", "method"),
        Fan("train", "--network", "networks", "repeat", "network"),
        Fan("evaluate", "--batch", "evaluate_batches", "repeat", "batch"),
        Fan("likelihood", "--batch", "likelihood_batches", "repeat", "batch"),
        Fan("hessian", "--rows", "hessian_blocks", "repeat", "rows"),
        Fan("scan", "--points", "scan_blocks", "repeat", "points"),
        Fan("toys", "--toys", "toy_blocks", "repeat", "toys"),
        Fan("ingest-lhe", "--file", "shards", "repeat", "file"),
    )
}
GENERATE_LABEL, COMBINE_LABEL = FANS["generate"].label, FANS["combine"].label


def fan_out(fan: Fan, run: str, items: Sequence[Any], max_tasks: int) -> list[list[str]]:
    """Argument lists of the mapped `fan.step` tasks: one per item, or batches when items exceed `max_tasks`.

    Batches hold consecutive items, at most ceil(len / max_tasks) each. An empty list gives no tasks (Airflow then skips the mapped task).
    """
    if max_tasks < 1:
        raise PlanError(f"{fan.step}: the fan-out limit must be >= 1, got {max_tasks}")
    values = [str(item) for item in items]
    if fan.mode == "single":
        return [[fan.step, "--run", run, fan.flag, value] for value in values]
    return [[fan.step, "--run", run, *_repeat(fan.flag, batch)] for batch in batches(values, max_tasks)]


def batches(values: Sequence[Any], max_tasks: int) -> list[list[Any]]:
    """Consecutive batches of `values`, at most `max_tasks` of them, each of at most ceil(len / max_tasks)."""
    if max_tasks < 1:
        raise PlanError(f"the fan-out limit must be >= 1, got {max_tasks}")
    size = max(1, math.ceil(len(values) / max_tasks))
    return [list(values[i : i + size]) for i in range(0, len(values), size)]


def planned_arguments(fan: Fan, run: str, summaries: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                      limits: FanLimits | int) -> list[list[str]]:
    """Argument lists of the mapped `fan.step` tasks for the items the summaries list: grouped by estimated cost
    (`operators.fanout.group_by_cost`), or by count when `limits` is a plain task count or its target is 0."""
    limits = limits if isinstance(limits, FanLimits) else FanLimits(max_tasks=limits)
    listed = [summaries] if isinstance(summaries, Mapping) else list(summaries)
    if fan.mode == "single":
        return fan_out(fan, run, summary_items(listed, fan.key), limits.max_tasks)
    groups = item_groups(fan.step, listed, lambda summary: summary_items(summary, fan.key), limits)
    return [[fan.step, "--run", run, *_repeat(fan.flag, group)] for group in groups]


def item_groups(step: str, summaries: Sequence[Mapping[str, Any]],
                items_of: Callable[[Mapping[str, Any]], list[Any]], limits: FanLimits) -> list[list[Any]]:
    """The items the summaries list (`items_of(summary)`), in order, cut into one group per task: by estimated
    cost (`operators.fanout`), or by count (`batches`) when the target is 0."""
    items = [item for summary in summaries for item in items_of(summary)]
    if limits.target_s <= 0:
        return batches(items, limits.max_tasks)
    if limits.max_tasks < 1:
        raise PlanError(f"{step}: the fan-out limit must be >= 1, got {limits.max_tasks}")
    # An item whose summary does not tell its size counts as a whole task's work: a task per item, as before.
    costs = item_costs(step, summaries, items_of, rates(), unknown=limits.target_s)
    return [items[a:b] for a, b in group_by_cost(costs, limits)]


def planning_limits(profile: str | None) -> FanLimits:
    """`operators.fanout.fan_limits` in a task: a setting that conflicts with Airflow's fails the task at once
    (`AirflowFailException`: a retry cannot help), naming both settings."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return fan_limits(profile)
    except (FanOutConflict, settings.SettingError) as exc:
        raise AirflowFailException(str(exc)) from exc


def summary_items(summaries: Mapping[str, Any] | Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    """The work items under `key` of one summary, or of several (a mapped step's), concatenated in order.

    A count (an int) means items 0..n-1."""
    if isinstance(summaries, Mapping):
        summaries = [summaries]
    items: list[Any] = []
    for summary in summaries:
        if not isinstance(summary, Mapping):
            raise PlanError(f"expected a step summary (a JSON object), got {type(summary).__name__}: {summary!r}")
        value = _get(summary, key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = list(range(value))
        if not isinstance(value, list):
            raise PlanError(f"step summary {summary.get('step', '?')!r}: {key!r} must be a list, got {value!r}")
        items.extend(value)
    return items


def generate_arguments(summary: Mapping[str, Any], limits: FanLimits | int) -> list[list[str]]:
    """`generate --run RUN --shard I [--shard J ...]` per shard, or per group of shards (`planned_arguments`)."""
    return planned_arguments(FANS["generate"], _get(summary, "run"), summary, limits)


def combine_arguments(summary: Mapping[str, Any], limits: FanLimits | int) -> list[list[str]]:
    """`combine --run RUN --group G [--group H ...]` per first-level group, or per group of them."""
    return planned_arguments(FANS["combine"], _get(summary, "run"), summary, limits)


def configure_arguments(params: Mapping[str, Any], run: str) -> list[str]:
    """`configure` for the config the params pick, with the form's overrides as `--set PATH=VALUE` items."""
    config = params.get("config_uri") or f"{settings.configs_uri()}/{params['config']}.yaml"
    knobs = (*GENERATION_KNOBS, *TRAINING_KNOBS, *INFERENCE_KNOBS)
    return ["configure", "--config", str(config), "--run", run, *_set_items(params, knobs)]


def source_run(params: Mapping[str, Any]) -> str:
    """The existing run a sbi_train / sbi_infer run starts from: a run URI, or a DAG id and run id."""
    uri = (params.get("source_run") or "").strip()
    if uri:
        return uri
    dag_id, run_id = (params.get("source_dag_id") or "").strip(), (params.get("source_run_id") or "").strip()
    if not (dag_id and run_id):
        raise PlanError("give the source run: 'source_run' (a run URI), or 'source_dag_id' and 'source_run_id'")
    return settings.run_uri(dag_id, run_id)


def derive_arguments(params: Mapping[str, Any], run: str, knobs: Sequence[Knob]) -> list[str]:
    """`derive --from SRC --run NEW` with the form's overrides of the stage settings."""
    return ["derive", "--from", source_run(params), "--run", run, *_set_items(params, knobs)]


def _set_items(params: Mapping[str, Any], knobs: Sequence[Knob]) -> list[str]:
    items = [*override_items(params, knobs), *(str(item) for item in params.get("set") or ())]
    return [arg for item in items for arg in ("--set", item)]


@task(multiple_outputs=True)
def prepare() -> dict[str, Any]:
    """This run's artifact prefix and the configure argument list, from the trigger params (and, for a run
    that new LHE files started, the files of its asset events)."""
    context = get_current_context()
    params = checked_params(context)
    run = settings.run_uri(context["dag"].dag_id, context["run_id"])
    config_uri, sets = inbox_inputs(context)
    if config_uri or sets:
        more = [*sets, *(params.get("set") or ())]
        params = {**params, "config_uri": config_uri or params.get("config_uri"), "set": more}
    return {"run": run, "configure": configure_arguments(params, run)}


@task(multiple_outputs=True)
def prepare_derive(stage: str) -> dict[str, Any]:
    """This run's prefix and the `derive` command for a run of another run's events (`stage`'s overrides).

    The source run is the form's; when the form names none, the run named by the newest event of the task's
    inlet asset (`.override(inlets=[EVENTS])`): the one that triggered this run, or, on a cron run, the
    asset's newest. A scheduled run with no such event yet is skipped; a manual one fails."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    context = get_current_context()
    params = checked_params(context)
    run = settings.run_uri(context["dag"].dag_id, context["run_id"])
    knobs = {"training": TRAINING_KNOBS, "inference": INFERENCE_KNOBS}[stage]
    if context["task"].inlets and not (params.get("source_run") or params.get("source_run_id")):
        found = asset_source(context)
        if found is None and context["dag_run"].run_type != "manual":
            raise AirflowSkipException("no asset event names a run yet: nothing to start from")
        params = {**params, "source_run": found[1] if found else None}
    try:
        argv = derive_arguments(params, run, knobs)
    except PlanError as exc:
        raise AirflowFailException(str(exc)) from exc  # bad input: a retry cannot help
    return {"run": run, "source": argv[2], "derive": argv}


def checked_params(context: Mapping[str, Any]) -> dict[str, Any]:
    """The run's params, once its conf is known to hold only fields of the form (`AirflowFailException`:
    a misspelt key fails the run's first task at once, naming the key, instead of being ignored)."""
    from airflow.sdk.exceptions import AirflowFailException

    params = dict(context["params"])
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    message = unknown_conf_keys(conf, context["dag"].params)
    if message:
        raise AirflowFailException(message)
    return params


@task
def plan(step: str, run: str, summaries: Any, profile: str = "cpu") -> list[list[str]]:
    """Argument lists of the mapped `step` tasks (run in `profile`'s pool), from the items its predecessor's
    summary (or summaries) list, grouped by cost."""
    return planned_arguments(FANS[step], run, _plain(summaries), planning_limits(profile))


@task
def plan_generate(summary: dict[str, Any]) -> list[list[str]]:
    """Argument lists of the mapped generate tasks, from configure's summary (which names the run)."""
    return generate_arguments(summary, planning_limits("cpu"))


@task
def plan_combine(summary: dict[str, Any]) -> list[list[str]]:
    """Argument lists of the mapped first-level combine tasks, from configure's summary (sbi_ingest uses it)."""
    return combine_arguments(summary, planning_limits("cpu"))


@task.short_circuit(ignore_downstream_trigger_rules=True)
def stage_gate(stage: str) -> bool:
    """Go on to `stage` only when the form's "Run up to" reaches it; otherwise every later task is skipped."""
    until = get_current_context()["params"].get("until") or STAGES[-1]
    return STAGES.index(stage) <= STAGES.index(until)


def _plain(summaries: Any) -> Any:
    """A mapped step's XCom arrives as a lazy sequence: make it a list (a single summary stays a dict)."""
    return summaries if isinstance(summaries, Mapping) else list(summaries)


def _get(summary: Mapping[str, Any], key: str) -> Any:
    if key not in summary:
        raise PlanError(f"step summary {summary.get('step', '?')!r} has no {key!r} (keys: {sorted(summary)})")
    return summary[key]


def _repeat(flag: str, values: Sequence[Any]) -> list[str]:
    return [item for value in values for item in (flag, str(value))]
