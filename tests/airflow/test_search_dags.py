"""sbi_active_learning and sbi_hpo: the study loop of operators/loop.py with their kinds, the work on the right
profile and pool (HPO trains one network per task on the gpu pool), and forms built from the study schema."""

from __future__ import annotations

import json

import pytest

from operators.loop import KIND_KNOBS, create_arguments
from tests.conftest import REPO

SCHEMA = json.loads((REPO / "sbi_core" / "schema" / "study-v1.json").read_text())


@pytest.mark.parametrize(("dag_id", "kind", "profile", "pool"), [
    ("sbi_active_learning", "active_learning", "cpu", "sbi_cpu"), ("sbi_hpo", "hpo", "gpu", "sbi_gpu")])
@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_the_loop_runs_the_kind_on_its_profile(dag_of, dag_id, kind, profile, pool, backend):
    dag = dag_of(dag_id, backend)
    assert {"prepare_study", "create", "plan", "plan_work", "work", "aggregate", "decide", "finish",
            "next_round"} == {t.task_id for t in dag.tasks}
    work = dag.get_task("work")
    assert work.is_mapped and (work.partial_kwargs["profile"], work.partial_kwargs["pool"]) == (profile, pool)
    prep = dag.get_task("prepare_study")
    assert [*prep.op_args, *prep.op_kwargs.values()] == [kind]
    params = dag.params
    props = SCHEMA["kinds"][kind]["properties"]
    for knob in KIND_KNOBS[kind]:
        assert params.get_param(knob.name).schema["title"] == props[knob.name]["title"]


def test_the_forms_create_the_kinds_studies():
    argv = create_arguments({"source_run": "/runs/r1", "objective": "disagreement", "events_per_point": 50000,
                             "set": ["options.ranges={cW: [0.0, 1.0]}"]}, "active_learning", "/s", new=True)
    assert argv[4:] == ["--set", "kind=active_learning", "--set", "run=/runs/r1", "--set",
                        "options.objective=disagreement", "--set", "options.events_per_point=50000", "--set",
                        "options.ranges={cW: [0.0, 1.0]}"]
    argv = create_arguments({"source_run": "/runs/r1", "networks": ["alices-theta-nominal-m00"], "patience": 3},
                            "hpo", "/s", new=True)
    assert 'options.networks=["alices-theta-nominal-m00"]' in argv and "options.patience=3" in argv
