"""The DAG folder imports cleanly, and sbi_pipeline has the shape, form and profiles it promises."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Param
from airflow.sdk.exceptions import ParamValidationError

from operators.profiles import get_profile
from tests.conftest import REPO

SCHEMA = json.loads((REPO / "sbi_core" / "schema" / "analysis-v1.json").read_text())
DAGS = ("sbi_pipeline", "sbi_train", "sbi_infer")


def training_upstream(run: str, setup: str, entry: set[str]) -> dict[str, set[str]]:
    """The training group's edges; `run` is the task whose XCom holds the run URI, `setup` the summary task."""
    return {
        "training.plan_sample": {setup, run, *entry},
        "training.sample": {"training.plan_sample"},
        "training.plan_train": {"training.sample", run},
        "training.train": {"training.plan_train"},
        "training.ensemble": {"training.train"},  # the run URI as a template: train's states alone count
        "training.plan_evaluate": {"training.ensemble", run},
        "training.evaluate": {"training.plan_evaluate"},
        "training.evaluate_report": {"training.evaluate", run},
    }


def inference_upstream(run: str, entry: set[str]) -> dict[str, set[str]]:
    return {
        "inference.dataset": {run, *entry},
        "inference.plan_likelihood": {"inference.dataset", run},
        "inference.likelihood": {"inference.plan_likelihood"},
        "inference.likelihood_join": {"inference.likelihood", run},
        "inference.fit": {"inference.likelihood_join", run},
        "inference.plan_hessian": {"inference.fit", run},
        "inference.hessian": {"inference.plan_hessian"},
        "inference.assemble": {"inference.hessian", run},
        "inference.plan_scan": {"inference.assemble", run},
        "inference.scan": {"inference.plan_scan"},
        "inference.limits": {"inference.scan", run},
        "inference.plan_toys": {"inference.assemble", "inference.limits", run},
        "inference.toys": {"inference.plan_toys"},
        "inference.report": {"inference.toys", run},
    }


UPSTREAM = {
    "sbi_pipeline": {
        "prepare": set(),
        "configure": {"prepare"},
        "plan_train_sampler": {"configure", "prepare"},
        "train_sampler": {"plan_train_sampler"},
        "plan_generate": {"configure", "prepare"},
        "generate": {"plan_generate", "train_sampler"},
        "plan_combine": {"configure", "prepare"},
        "combine": {"generate", "plan_combine"},
        "combine_all": {"combine", "prepare"},
        "publish_events": {"combine_all", "prepare"},
        "to_training": {"combine_all"},
        **training_upstream("prepare", "configure", {"to_training"}),
        "to_inference": {"training.evaluate_report"},
        **inference_upstream("prepare", {"to_inference"}),
    },
    "sbi_train": {
        "prepare_derive": set(),
        "derive": {"prepare_derive"},
        **training_upstream("prepare_derive", "derive", set()),
        "publish_networks": {"training.evaluate_report", "prepare_derive"},
    },
    "sbi_infer": {
        "prepare_derive": set(),
        "derive": {"prepare_derive"},
        **inference_upstream("prepare_derive", {"derive"}),
        "publish_results": {"inference.report", "prepare_derive"},
    },
}
MAPPED = {"train_sampler", "generate", "combine", "training.sample", "training.train", "training.evaluate", "inference.likelihood",
          "inference.hessian", "inference.scan", "inference.toys"}
PROFILES = {"train_sampler": ("gpu", "sbi_gpu"), "training.train": ("gpu", "sbi_gpu"), "inference.hessian": ("highmem", "sbi_highmem")}
TRIGGER_RULES = {"generate": "none_failed", "training.ensemble": "all_done_min_one_success", "training.evaluate_report": "none_failed",
                 "inference.likelihood_join": "none_failed", "inference.assemble": "none_failed",
                 "inference.limits": "none_failed", "inference.report": "none_failed"}


def steps_of(dag) -> list:
    """The sbi-core step tasks of a DAG (not the small Python planning tasks)."""
    return [t for t in dag.tasks if "profile" in (t.partial_kwargs if t.is_mapped else vars(t))]


def test_dag_folder_has_no_import_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors
    assert {*DAGS, "sbi_ingest", "sbi_lhe_inbox"} <= set(bag.dag_ids)


@pytest.mark.parametrize("dag_id", DAGS)
@pytest.mark.parametrize("backend, operator", [("local", "SbiLocalOperator"), ("kubernetes", "SbiPodOperator")])
def test_wiring_is_the_same_on_both_backends(dag_of, dag_id, backend, operator):
    dag = dag_of(dag_id, backend)
    assert {t.task_id: set(t.upstream_task_ids) for t in dag.tasks} == UPSTREAM[dag_id]
    steps = steps_of(dag)
    assert len(steps) == len([t for t in UPSTREAM[dag_id] if not t.split(".")[-1].startswith(
        ("prepare", "plan_", "to_", "publish_"))])
    for task in steps:
        assert task.is_mapped is (task.task_id in MAPPED), task.task_id
        assert (task.operator_class if task.is_mapped else type(task)).__name__ == operator


@pytest.mark.parametrize("dag_id", DAGS)
def test_every_step_has_an_existing_profile_and_its_pool(dag_of, dag_id):
    for task in steps_of(dag_of(dag_id)):
        options = task.partial_kwargs if task.is_mapped else vars(task)
        profile = get_profile(options["profile"])
        assert (profile.name, profile.pool) == PROFILES.get(task.task_id, ("cpu", "sbi_cpu")), task.task_id
        assert options["pool"] == profile.pool, task.task_id


@pytest.mark.parametrize("dag_id", DAGS)
def test_tasks_after_a_mapped_step_survive_failed_members_and_empty_lists(dag_of, dag_id):
    dag = dag_of(dag_id)
    for task in dag.tasks:
        rule = task.partial_kwargs.get("trigger_rule") if task.is_mapped else task.trigger_rule
        assert str(getattr(rule, "value", rule)) == TRIGGER_RULES.get(task.task_id, "all_success"), task.task_id


def test_stage_gates_skip_everything_after_them(dag_of):
    dag = dag_of("sbi_pipeline")
    for gate in ("to_training", "to_inference"):
        task = dag.get_task(gate)
        assert task.ignore_downstream_trigger_rules is True  # the all_done ensemble is skipped too


def test_trigger_form_is_built_from_the_config_schema(dag_of):
    params = dag_of("sbi_pipeline").params
    assert params.get_param("until").value == "inference"
    generation = SCHEMA["$defs"]["Generation"]["properties"]
    for name in ("events", "shards", "seed"):
        param = params.get_param(name)
        assert param.schema["title"] == generation[name]["title"]
        assert param.description.startswith(generation[name]["description"])
    config = params.get_param("config")
    assert config.value == "benchmark"
    assert config.schema["enum"] == sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name, value, ok", [("events", None, True), ("events", 0, False), ("events", 4000, True),
                                             ("events", -5, False), ("seed", 0, True),
                                             ("shards", -1, False), ("events", "many", False),
                                             ("config", "no-such-config", False), ("set", ["a.b=1"], True)])
def test_trigger_form_validates_values(dag_of, name, value, ok):
    param: Param = dag_of("sbi_pipeline").params.get_param(name)
    if ok:
        assert param.resolve(value) == value
    else:
        with pytest.raises(ParamValidationError):
            param.resolve(value)


@pytest.mark.parametrize("dag_id", ["sbi_train", "sbi_infer"])
def test_derived_runs_take_a_source_run_in_the_form(dag_of, dag_id):
    params = dag_of(dag_id).params
    assert params.get_param("source_dag_id").value == "sbi_pipeline"
    for name in ("source_run", "source_run_id", "set"):
        assert params.get_param(name).resolve(None) is None  # optional: the form does not mark it required
    assert "events" not in params and "config" not in params  # the events are the source run's


def test_dags_explain_themselves_in_the_ui(dag_of):
    doc = dag_of("sbi_pipeline").doc_md
    for word in ("configure", "generate", "combine_all", "SBI_BACKEND", "SBI_ARTIFACT_ROOT", "trigger_run.py",
                 "training.train", "inference.hessian", "sbi_gpu", "sbi_train", "sbi_infer", "Run up to"):
        assert word in doc
    for dag_id in ("sbi_train", "sbi_infer"):
        doc = dag_of(dag_id).doc_md
        assert "derive" in doc and "source run" in doc.lower()
        assert all(t.task_id.split(".")[-1] in doc for t in steps_of(dag_of(dag_id)))
