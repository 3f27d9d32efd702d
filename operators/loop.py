"""A study's loop as Airflow tasks, written once: ONE DAG run is ONE round of a study (`sbi_core.studies`).

    prepare_study -> create -> plan -> plan_work -> work[item batch] -> aggregate -> decide -> finish
                                                                                          \\-> next_round

- `prepare_study`: the study's URI and the commands of this run. A run triggered from the form creates a new
  study under `$SBI_ARTIFACT_ROOT/<dag id>/<study name or run id>` from the form's fields; a run whose params
  name a study (`study`, and `round`: what `next_round` passes, or a person continuing a study) continues it.
- `create`: `sbi-core study --create` (validates the form's config, exit 2 naming the field: no round starts);
  on a continuing run it only checks that the study exists.
- `plan`: `study --plan` (the run's round; a replanned round keeps its plan); `plan_work` turns the items into
  the mapped `study --work` argument lists, grouped by cost like `operators/plans.py` does
  (`aggregate` reads the round from `plan`'s summary).
- `work` (mapped, the kind's profile: cpu, or gpu for trainings), then `aggregate` (`study --aggregate`: the new
  state, the decision), runs unless something upstream failed, so an empty round (a stopped study) still ends.
- `decide` (`@task.branch`): `finish` (`study --finish`: results and plots) or `next_round`, a
  TriggerDagRunOperator of the same DAG with `{"study": URI, "round": r + 1}` as conf, the run id
  `study-<name>-round-<r+1>` and a note naming the study: deterministic, so a retried branch never starts two
  runs (an existing run is skipped).
Every step is idempotent, so a failed round is cleared and rerun from the UI.

What to use when: `study_loop(kind)` inside a `@dag` function builds all of it; `study_params(kind)` is the
trigger form (from `sbi_core/schema/study-v1.json`, read without importing sbi_core); `KIND_KNOBS` lists the
form fields of each kind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, get_current_context, task

from operators import settings
from operators.fanout import FanLimits
from operators.params import Knob, knob_params, override_items, schema_path
from operators.plans import PlanError, checked_params, item_groups, planning_limits
from operators.steps import sbi_step

STUDY_SCHEMA_FILE = "study-v1.json"
NONE_FAILED = "none_failed"

#: The form fields every study has (paths in the study section).
STUDY_KNOBS = (
    Knob("max_rounds", "max_rounds", "Study"),
    Knob("budget", "budget", "Study"),
    Knob("tolerance", "tolerance", "Study"),
    Knob("points_per_round", "points_per_round", "Study"),
    Knob("seed", "seed", "Study"),
)
#: The form fields of each kind (paths under the study's `options`).
KIND_KNOBS: dict[str, tuple[Knob, ...]] = {
    "toy_limits": tuple(
        Knob(name, f"options.{name}", "Toy limits")
        for name in ("model", "poi", "null", "level", "upper", "grid", "grid_points", "toys", "toys_per_task",
                     "max_toys", "source")
    ),
    "active_learning": tuple(
        Knob(name, f"options.{name}", "Active learning")
        for name in ("objective", "parameters", "searcher", "initial_points", "acquisition", "statistic", "min_gain",
                     "method", "search_rounds", "events_per_point", "samples_per_point", "source_samples_per_point",
                     "source_points", "weighting", "retrain_epochs")
    ),
    "hpo": tuple(
        Knob(name, f"options.{name}", "Hyperparameter search")
        for name in ("networks", "objective", "searcher", "initial_points", "acquisition", "patience", "alias")
    ),
}


@lru_cache(maxsize=1)
def study_schema() -> dict[str, Any]:
    """The shipped study schema (`{"study": ..., "kinds": {kind: options schema}}`), cached per process."""
    return json.loads((schema_path().parent / STUDY_SCHEMA_FILE).read_text())


def form_schema(kind: str) -> dict[str, Any]:
    """One schema document for a kind's form: the study section with `options` replaced by the kind's options,
    so `options.poi` resolves like any other path."""
    schema = study_schema()
    if kind not in schema["kinds"]:
        raise KeyError(f"no study kind {kind!r} in {STUDY_SCHEMA_FILE} (known: {sorted(schema['kinds'])})")
    study, options = schema["study"], dict(schema["kinds"][kind])
    defs = {**study.get("$defs", {}), **options.pop("$defs", {}), "KindOptions": options}
    props = {**study["properties"], "options": {"$ref": "#/$defs/KindOptions"}}
    return {**study, "properties": props, "$defs": defs}


def study_params(kind: str) -> dict[str, Param]:
    """The trigger form of a study DAG: continue a study, or create one (name, source run, bounds, the kind's
    settings, more `PATH=VALUE` items)."""
    schema = form_schema(kind)
    return {
        "study": Param(None, type=["null", "string"], title="Continue study (URI)", section="Study",
                       description="The URI of an existing study to continue (its next round is planned from its "
                       "state). Leave empty to create a new study from the fields below."),
        "round": Param(None, type=["null", "integer"], minimum=1, title="Round", section="Study",
                       description="Set by the loop when it triggers the next round; leave empty."),
        "study_name": Param(None, type=["null", "string"], pattern="^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
                            title="Study name", section="Study",
                            description="Names the study's prefix ($SBI_ARTIFACT_ROOT/<DAG>/<name>) and its runs "
                            "(study-<name>-round-0002); default: this run's id. The same name with the same "
                            "settings continues that study."),
        "source_run": Param(None, type=["null", "string"], title="Source run URI", section="Source run",
                            description="The run whose events and likelihood the study uses (it needs `sbi-core "
                            "dataset`, `likelihood` and `likelihood --join`), e.g. the `run` in the XCom of a "
                            "sbi_pipeline or sbi_infer run's first task. Or its DAG id and run id below."),
        "source_dag_id": Param("sbi_infer", type="string", title="Source DAG", section="Source run",
                               description="The DAG whose run made the source run."),
        "source_run_id": Param(None, type=["null", "string"], title="Source run id", section="Source run",
                               description="The run id of that DAG run (leave both empty for a model without a "
                               "run, e.g. a counting experiment)."),
        **knob_params(schema, STUDY_KNOBS),
        **knob_params(schema, KIND_KNOBS.get(kind, ())),
        "set": Param(None, type=["null", "array"], items={"type": "string"}, title="More settings",
                     section="Overrides", description="PATH=VALUE, one per line, applied last, e.g. "
                     "options.counting={observed: 12, signal: 5.0, background: 10.0}"),
    }


def _source(params: Mapping[str, Any]) -> str | None:
    uri = (params.get("source_run") or "").strip()
    if uri:
        return uri
    dag_id, run_id = (params.get("source_dag_id") or "").strip(), (params.get("source_run_id") or "").strip()
    return settings.run_uri(dag_id, run_id) if dag_id and run_id else None


def create_arguments(params: Mapping[str, Any], kind: str, study: str, *, new: bool) -> list[str]:
    """`study --create` for a new study (the form's settings as `--set` items) or for a continuing one (none)."""
    argv = ["study", "--create", "--study", study]
    if not new:
        return argv
    items = [f"kind={kind}"]
    source = _source(params)
    if source:
        items.append(f"run={source}")
    items += override_items(params, (*STUDY_KNOBS, *KIND_KNOBS.get(kind, ())))
    items += [str(item) for item in params.get("set") or ()]
    return argv + [arg for item in items for arg in ("--set", item)]


@task(multiple_outputs=True)
def prepare_study(kind: str) -> dict[str, Any]:
    """This run's study URI and its create, plan and finish commands (see the module doc)."""
    from airflow.sdk.exceptions import AirflowFailException

    context = get_current_context()
    params = checked_params(context)  # a misspelt conf key fails here, naming it
    given = (params.get("study") or "").strip()
    name = (params.get("study_name") or "").strip()
    study = given or settings.run_uri(context["dag"].dag_id, name or context["run_id"])
    r = params.get("round")
    if r is not None and (isinstance(r, bool) or not str(r).isdigit() or int(r) < 1):
        raise AirflowFailException(f"round: expected a positive integer, got {r!r}")
    try:
        create = create_arguments(params, kind, study, new=not given)
    except PlanError as exc:
        raise AirflowFailException(str(exc)) from exc
    plan = ["study", "--plan", "--study", study, *(["--round", str(int(r))] if r is not None else [])]
    return {"study": study, "create": create, "plan": plan, "finish": ["study", "--finish", "--study", study]}


def work_arguments(summary: Mapping[str, Any], limits: FanLimits | int) -> list[list[str]]:
    """`study --work --study URI --round R --item I [--item J ...]` per item, or per group of items sized by the
    round's `cost` (`operators.plans.item_groups`; a plain count of tasks: batches by count)."""
    try:
        study, r, items = summary["study"], int(summary["round"]), list(summary["items"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"study plan summary lacks {exc}: {dict(summary)!r}") from None
    limits = limits if isinstance(limits, FanLimits) else FanLimits(max_tasks=limits)
    head = ["study", "--work", "--study", study, "--round", str(r)]
    groups = item_groups("work", [summary], lambda _: items, limits)
    return [head + [a for i in group for a in ("--item", str(i))] for group in groups]


@task
def plan_work(summary: dict[str, Any], profile: str = "cpu") -> list[list[str]]:
    """The mapped `study --work` commands of the planned round (none when the round has nothing to do)."""
    return work_arguments(summary, planning_limits(profile))


@task.branch
def decide(summary: dict[str, Any]) -> str:
    """`next_round` when the aggregate says continue, else `finish` (finished, stopped or failed). Pushes what
    `next_round` triggers: `conf` ({"study", "round"}), `run_id` (study-<name>-round-NNNN) and `note`."""
    ti = get_current_context()["ti"]
    r, name, study = int(summary["next_round"]), summary["name"], summary["study"]
    ti.xcom_push(key="conf", value={"study": study, "round": r})
    ti.xcom_push(key="run_id", value=summary["next_run_id"])
    ti.xcom_push(key="note", value=f"study {name}, round {r} ({study})")
    return "next_round" if summary.get("decision") == "continue" else "finish"


class NextRound(TriggerDagRunOperator):
    """TriggerDagRunOperator whose note is templated too (it names the study and round of the run it starts)."""

    template_fields: Sequence[str] = (*TriggerDagRunOperator.template_fields, "note")


def study_loop(kind: str, *, work_profile: str = "cpu") -> dict[str, Any]:
    """Every task of one round of a `kind` study (see the module doc), in the current DAG; returns them by id."""
    prep = prepare_study(kind)
    create = sbi_step("create", arguments=prep["create"], retries=1)
    plan = sbi_step("plan", arguments=prep["plan"])
    create >> plan
    planned = plan_work(plan.output, work_profile)
    work = sbi_step("work", profile=work_profile,
                    map_index_template="item {{ task.arguments[7] }}"
                                       "{% if task.arguments[9:] %}..{{ task.arguments[-1] }}{% endif %}",
                    ).expand(arguments=planned)
    aggregate = sbi_step("aggregate", arguments=["study", "--aggregate", "--study", prep["study"], "--round",
                                                 "{{ ti.xcom_pull(task_ids='plan')['round'] }}"],
                         trigger_rule=NONE_FAILED)
    plan >> aggregate
    work >> aggregate
    branch = decide(aggregate.output)
    finish = sbi_step("finish", arguments=prep["finish"])
    next_round = NextRound(task_id="next_round", trigger_dag_id="{{ dag.dag_id }}", trigger_run_id=branch["run_id"],
                           conf=branch["conf"], note=branch["note"], skip_when_already_exists=True,
                           wait_for_completion=False)
    branch >> [finish, next_round]
    return {"prepare_study": prep, "create": create, "plan": plan, "plan_work": planned, "work": work,
            "aggregate": aggregate, "decide": branch, "finish": finish, "next_round": next_round}
