"""The stages as task groups, shared by the DAG files (which stay wiring only).

What to use when:
- `mapped_step(step, run, summaries)`: a `plan_<step>` task and the mapped `<step>` tasks it plans
  (work items from `operators.plans.FANS`, grouped by estimated cost: `operators.fanout`).
- `training_group(run, setup)`: sample[method] -> train[network batch] (profile gpu) -> ensemble ->
  evaluate[batch] -> evaluate_report. `setup` is configure's or derive's summary (it lists `methods`).
- `inference_group(run)`: dataset -> likelihood[batch] -> likelihood_join -> fit -> hessian[rows]
  (profile highmem) -> assemble -> scan[points] -> limits -> toys[toys] -> report.

Trigger rules: `ensemble` runs when every train task is done and at least one succeeded
(`all_done_min_one_success`, counted over the train tasks alone: the run URI reaches it as a template, so a
failed configure stops it): the step decides whether enough members of each ensemble succeeded. A task after a mapped step runs unless
something upstream failed (`none_failed`), so a step with nothing to do (no toys: an empty list, which
Airflow marks skipped) does not stop the run.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import TaskGroup

from operators.plans import FANS, plan
from operators.steps import sbi_step

#: ensemble runs when every train task is done and at least one succeeded: it decides about the failed members.
ALL_DONE_MIN_ONE, NONE_FAILED = "all_done_min_one_success", "none_failed"


def mapped_step(step: str, run: Any, summaries: Any, *, task_id: str | None = None, profile: str = "cpu",
                **kwargs: Any) -> tuple[Any, Any]:
    """(`plan_<task id>` task, mapped `<task id>` task running `step`, default task id: the step's name);
    the plan reads the work items from `summaries` at run time."""
    task_id = task_id or step
    planned = plan.override(task_id=f"plan_{task_id}")(step, run, summaries, profile)
    task = sbi_step(task_id, profile=profile, map_index_template=FANS[step].label, **kwargs).expand(arguments=planned)
    return planned, task


def xcom_template(value: Any) -> Any:
    """A Jinja string that pulls an XComArg's value when the task renders its arguments (no dependency);
    anything else unchanged."""
    operator, key = getattr(value, "operator", None), getattr(value, "key", None)
    if operator is None or key is None:
        return value
    return f"{{{{ ti.xcom_pull(task_ids={operator.task_id!r}, key={key!r}) }}}}"


def training_group(run: Any, setup: Any) -> TaskGroup:
    """Learning: samples per method, networks trained in batches, ensembles, evaluation and its report."""
    with TaskGroup("training", tooltip="sample -> train -> ensemble -> evaluate -> evaluate_report") as group:
        _, sample = mapped_step("sample", run, setup)
        _, train = mapped_step("train", run, sample.output, profile="gpu")
        # The run as a template, not an XComArg: ensemble's only upstream is then train, so a failed configure
        # (train upstream_failed) stops it; with `run`'s task upstream, that task's success would count.
        ensemble = sbi_step("ensemble", arguments=["ensemble", "--run", xcom_template(run)],
                            trigger_rule=ALL_DONE_MIN_ONE)
        train >> ensemble
        _, evaluate = mapped_step("evaluate", run, ensemble.output)
        report = sbi_step("evaluate_report", arguments=["evaluate", "--run", run, "--report"], trigger_rule=NONE_FAILED)
        evaluate >> report
    return group


def inference_group(run: Any) -> TaskGroup:
    """Inference: the dataset, its likelihood arrays, the fit, the Hessian, scans, limits, toys, the report."""
    with TaskGroup("inference", tooltip="dataset -> likelihood -> fit -> hessian -> scan -> limits -> toys "
                                        "-> report") as group:
        dataset = sbi_step("dataset", arguments=["dataset", "--run", run])
        _, likelihood = mapped_step("likelihood", run, dataset.output)
        join = sbi_step("likelihood_join", arguments=["likelihood", "--run", run, "--join"], trigger_rule=NONE_FAILED)
        fit = sbi_step("fit", arguments=["fit", "--run", run])
        likelihood >> join >> fit
        _, hessian = mapped_step("hessian", run, fit.output, profile="highmem")
        assemble = sbi_step("assemble", arguments=["assemble", "--run", run], trigger_rule=NONE_FAILED)
        hessian >> assemble
        _, scan = mapped_step("scan", run, assemble.output)
        limits = sbi_step("limits", arguments=["limits", "--run", run], trigger_rule=NONE_FAILED)
        scan >> limits
        plan_toys, toys = mapped_step("toys", run, assemble.output)
        limits >> plan_toys
        report = sbi_step("report", arguments=["report", "--run", run], trigger_rule=NONE_FAILED)
        toys >> report
    return group
