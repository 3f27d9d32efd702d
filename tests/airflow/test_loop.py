"""The study loop as Airflow tasks (operators/loop.py) and sbi_toy_limits: its wiring on both backends, the
form built from the study schema, the commands each task builds, batching past the fan-out limit."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.sdk import Param
from airflow.sdk.exceptions import ParamValidationError

from operators import settings
from operators.loop import KIND_KNOBS, create_arguments, work_arguments
from tests.conftest import REPO

SCHEMA = json.loads((REPO / "sbi_core" / "schema" / "study-v1.json").read_text())
UPSTREAM = {
    "prepare_study": set(),
    "create": {"prepare_study"},
    "plan": {"create", "prepare_study"},
    "plan_work": {"plan"},
    "work": {"plan_work"},
    "aggregate": {"plan", "prepare_study", "work"},
    "decide": {"aggregate"},
    "finish": {"decide", "prepare_study"},
    "next_round": {"decide"},
}


@pytest.mark.parametrize(("backend", "operator"), [("local", "SbiLocalOperator"), ("kubernetes", "SbiPodOperator")])
def test_one_round_is_plan_mapped_work_aggregate_and_a_branch(dag_of, backend, operator):
    dag = dag_of("sbi_toy_limits", backend)
    assert {t.task_id: set(t.upstream_task_ids) for t in dag.tasks} == UPSTREAM
    work = dag.get_task("work")
    assert work.is_mapped and work.operator_class.__name__ == operator
    assert (work.partial_kwargs["profile"], work.partial_kwargs["pool"]) == ("cpu", "sbi_cpu")
    for step in ("create", "plan", "aggregate", "finish"):
        assert type(dag.get_task(step)).__name__ == operator
    assert str(dag.get_task("aggregate").trigger_rule.value) == "none_failed"  # an empty round still ends
    nxt = dag.get_task("next_round")
    assert nxt.trigger_dag_id == "{{ dag.dag_id }}" and nxt.skip_when_already_exists is True
    assert nxt.wait_for_completion is False and "note" in nxt.template_fields


def test_the_form_is_built_from_the_study_schema(dag_of):
    params = dag_of("sbi_toy_limits").params
    kind = SCHEMA["kinds"]["toy_limits"]["properties"]
    for name in ("poi", "toys", "grid", "max_toys"):
        assert params.get_param(name).schema["title"] == kind[name]["title"]
    assert params.get_param("budget").schema["title"] == SCHEMA["study"]["properties"]["budget"]["title"]
    for name in ("study", "round", "study_name", "source_run", "poi", "set"):
        assert params.get_param(name).resolve(None) is None  # optional fields
    budget: Param = params.get_param("budget")
    with pytest.raises(ParamValidationError):
        budget.resolve(-5)
    with pytest.raises(ParamValidationError):
        params.get_param("study_name").resolve("has space")
    assert {k.name for k in KIND_KNOBS["toy_limits"]} <= set(params)


def test_create_arguments_new_and_continuing(monkeypatch):
    monkeypatch.setenv("SBI_ARTIFACT_ROOT", "/data")
    params = {"source_dag_id": "sbi_infer", "source_run_id": "manual__1", "poi": "cW", "toys": 300, "budget": None,
              "grid": [0.2, 0.4], "set": ["options.level=0.9"]}
    argv = create_arguments(params, "toy_limits", "/data/sbi_toy_limits/s1", new=True)
    assert argv == ["study", "--create", "--study", "/data/sbi_toy_limits/s1", "--set", "kind=toy_limits",
                    "--set", f"run={settings.run_uri('sbi_infer', 'manual__1')}", "--set", "options.poi=cW",
                    "--set", "options.grid=[0.2, 0.4]", "--set", "options.toys=300", "--set", "options.level=0.9"]
    assert create_arguments(params, "toy_limits", "/s", new=False) == ["study", "--create", "--study", "/s"]
    counting = create_arguments({"source_dag_id": "sbi_infer", "model": "counting"}, "toy_limits", "/s", new=True)
    assert not any(a.startswith("run=") for a in counting)  # no source run named: none set


def test_work_is_batched_past_the_fan_out_limit():
    summary = {"study": "/s", "round": 3, "items": [f"p{i:03d}-t000000" for i in range(5)]}
    assert work_arguments(summary, 10)[0] == ["study", "--work", "--study", "/s", "--round", "3",
                                              "--item", "p000-t000000"]
    batched = work_arguments(summary, 2)
    assert [a[7::2] for a in batched] == [["p000-t000000", "p001-t000000", "p002-t000000"],
                                          ["p003-t000000", "p004-t000000"]]
    assert work_arguments({**summary, "items": []}, 2) == []  # an empty round: no work task


def test_the_branch_pushes_what_the_next_round_triggers(monkeypatch):
    from operators import loop

    pushed = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))
    monkeypatch.setattr(loop, "get_current_context", lambda: {"ti": ti})
    summary = {"decision": "continue", "next_round": 3, "next_run_id": "study-s1-round-0003", "name": "s1",
               "study": "/data/s1"}
    assert loop.decide.function(summary) == "next_round"
    assert pushed == {"conf": {"study": "/data/s1", "round": 3}, "run_id": "study-s1-round-0003",
                      "note": "study s1, round 3 (/data/s1)"}
    assert loop.decide.function({**summary, "decision": "finish"}) == "finish"
