"""The DAG folder imports cleanly, and sbi_pipeline has the shape, form and profiles it promises."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Param
from airflow.sdk.exceptions import ParamValidationError

from operators.profiles import get_profile
from tests.conftest import REPO

SCHEMA = json.loads((REPO / "sbi_core" / "schema" / "analysis-v1.json").read_text())
UPSTREAM = {
    "prepare": set(),
    "configure": {"prepare"},
    "plan_generate": {"configure"},
    "generate": {"plan_generate"},
    "plan_combine": {"configure"},
    "combine": {"generate", "plan_combine"},
    "combine_all": {"combine", "prepare"},
}
STEPS = {"configure": False, "generate": True, "combine": True, "combine_all": False}  # task -> mapped


def test_dag_folder_has_no_import_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors
    assert "sbi_pipeline" in bag.dag_ids


@pytest.mark.parametrize("backend, operator", [("local", "SbiLocalOperator"), ("kubernetes", "SbiPodOperator")])
def test_pipeline_wiring_is_the_same_on_both_backends(dag_of, backend, operator):
    dag = dag_of("sbi_pipeline", backend)
    assert {t.task_id: set(t.upstream_task_ids) for t in dag.tasks} == UPSTREAM
    for task_id, mapped in STEPS.items():
        task = dag.get_task(task_id)
        assert task.is_mapped is mapped
        assert (task.operator_class if mapped else type(task)).__name__ == operator


def test_every_profile_the_dag_uses_exists(dag_of):
    dag = dag_of("sbi_pipeline")
    for task_id in STEPS:
        task = dag.get_task(task_id)
        profile = task.partial_kwargs["profile"] if task.is_mapped else task.profile
        assert get_profile(profile).name == profile


def test_trigger_form_is_built_from_the_config_schema(dag_of):
    params = dag_of("sbi_pipeline").params
    generation = SCHEMA["$defs"]["Generation"]["properties"]
    for name in ("events", "shards", "seed"):
        param = params.get_param(name)
        assert param.schema["title"] == generation[name]["title"]
        assert param.description.startswith(generation[name]["description"])
    config = params.get_param("config")
    assert config.value == "benchmark"
    assert config.schema["enum"] == sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name, value, ok", [("events", None, True), ("events", 0, True), ("events", 4000, True),
                                             ("shards", -1, False), ("events", "many", False),
                                             ("config", "no-such-config", False), ("set", ["a.b=1"], True)])
def test_trigger_form_validates_values(dag_of, name, value, ok):
    param: Param = dag_of("sbi_pipeline").params.get_param(name)
    if ok:
        assert param.resolve(value) == value
    else:
        with pytest.raises(ParamValidationError):
            param.resolve(value)


def test_dag_explains_itself_in_the_ui(dag_of):
    doc = dag_of("sbi_pipeline").doc_md
    for word in ("configure", "generate", "combine_all", "SBI_BACKEND", "SBI_ARTIFACT_ROOT", "trigger_run.py"):
        assert word in doc
