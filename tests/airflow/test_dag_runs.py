"""Whole DAG runs with `dag.test()` and the fake sbi-core: the training and inference groups end to end.

The fake answers every step of the contract (tests/airflow/fake_sbi_core.py); these tests check what
Airflow does with the answers: which commands run with which arguments, batching past the fan-out
limit, a failed train batch that the ensemble survives, an empty toy list, and the stage gate.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import pytest

from operators import settings
from operators.params import analysis_schema

SOURCE = "/data/runs/sbi_pipeline/manual__1"


def run_dag(dag: Any, conf: dict[str, Any]) -> tuple[Any, dict[str, Counter]]:
    """One `dag.test()` run; the run and, per task id, how many instances ended in each state."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_run = dag.test(run_conf=conf)
    with create_session() as session:
        rows = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id,
                                                         TaskInstance.run_id == dag_run.run_id)).all()
        states: dict[str, Counter] = {}
        for ti in rows:
            states.setdefault(ti.task_id, Counter())[str(getattr(ti.state, "value", ti.state))] += 1
    return dag_run, states


def calls_of(fake: Any, step: str) -> list[list[str]]:
    return sorted(c["argv"] for c in fake.calls() if c["argv"][0] == step)


@pytest.mark.slow
def test_sbi_train_derives_a_run_trains_in_batches_and_survives_a_failed_batch(
        migrated_airflow_home, dag_of, fake_sbi_core, monkeypatch):
    monkeypatch.setenv("SBI_MAX_FAN_OUT", "3")  # 4 networks -> 2 train tasks of 2
    monkeypatch.setenv("FAKE_SBI_FAIL", "benchmark_ratio-theta-nominal-m01")
    monkeypatch.setenv("FAKE_SBI_FAIL_EXIT", "2")  # fails at once (exit 1 would wait for two retries)
    dag = dag_of("sbi_train")
    dag_run, states = run_dag(dag, {"source_run": SOURCE, "members": 2, "epochs": None, "set": ["training.seed=3"]})

    run = settings.run_uri("sbi_train", dag_run.run_id)
    assert calls_of(fake_sbi_core, "derive") == [["derive", "--from", SOURCE, "--run", run,
                                                 "--set", "training.members=2", "--set", "training.seed=3"]]
    assert calls_of(fake_sbi_core, "sample") == [["sample", "--run", run, "--method", m]
                                                 for m in ("alices", "benchmark_ratio")]
    assert calls_of(fake_sbi_core, "train") == [
        ["train", "--run", run, "--network", "alices-theta-nominal-m00", "--network", "alices-theta-nominal-m01"],
        ["train", "--run", run, "--network", "benchmark_ratio-theta-nominal-m00",
         "--network", "benchmark_ratio-theta-nominal-m01"],
    ]
    assert states["training.train"] == Counter({"success": 1, "failed": 1})
    assert calls_of(fake_sbi_core, "evaluate") == [["evaluate", "--run", run, *tail]
                                                   for tail in (["--batch", "0"], ["--batch", "1"], ["--report"])]
    for task_id in ("derive", "training.ensemble", "training.evaluate", "training.evaluate_report"):
        assert set(states[task_id]) == {"success"}, (task_id, states[task_id])
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"  # the ensemble decided: enough members
    assert {(c["AIRFLOW_CTX_DAG_ID"], c["AIRFLOW_CTX_DAG_RUN_ID"]) for c in fake_sbi_core.calls()} == {
        ("sbi_train", dag_run.run_id)}


@pytest.mark.slow
def test_sbi_infer_batches_blocks_past_the_fan_out_and_reports_without_toys(
        migrated_airflow_home, dag_of, fake_sbi_core, monkeypatch):
    monkeypatch.setenv("SBI_MAX_FAN_OUT", "2")
    monkeypatch.setenv("FAKE_SBI_PLAN", '{"toy_blocks": []}')
    dag = dag_of("sbi_infer")
    dag_run, states = run_dag(dag, {"source_dag_id": "sbi_pipeline", "source_run_id": "manual__1"})

    run = settings.run_uri("sbi_infer", dag_run.run_id)
    assert calls_of(fake_sbi_core, "derive")[0][:5] == ["derive", "--from", settings.run_uri("sbi_pipeline",
                                                                                             "manual__1"), "--run", run]
    assert calls_of(fake_sbi_core, "likelihood") == [["likelihood", "--run", run, *tail] for tail in
                                                     (["--batch", "0", "--batch", "1"], ["--batch", "2"], ["--join"])]
    assert calls_of(fake_sbi_core, "hessian") == [["hessian", "--run", run, "--rows", r] for r in ("0:2", "2:4")]
    assert calls_of(fake_sbi_core, "scan") == [["scan", "--run", run, *tail] for tail in
                                               (["--points", "0:5", "--points", "5:10"], ["--points", "10:11"])]
    assert calls_of(fake_sbi_core, "toys") == []
    assert set(states["inference.toys"]) == {"skipped"}
    for task_id in ("inference.fit", "inference.assemble", "inference.limits", "inference.report"):
        assert states[task_id] == Counter({"success": 1}), (task_id, states[task_id])
    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"


@pytest.mark.slow
def test_sbi_pipeline_runs_every_stage_and_the_demo_shows_the_figures(migrated_airflow_home, fake_sbi_core, tmp_path):
    """The whole pipeline (fake steps) as `make demo` runs it, and the compact view the demo prints."""
    import demo

    args = argparse.Namespace(config="benchmark", until="inference", events=None, shards=None, seed=None,
                              set=["training.seed=1"], full_size=False)
    conf = demo.demo_conf(args, analysis_schema())
    result = demo.run_pipeline(conf, tmp_path / "demo.log", None)

    assert result["state"] == "success", result["tasks"]
    assert result["tasks"].pop("publish_events")["states"] == {"skipped": 1}  # the form did not ask to publish
    assert result["tasks"].pop("train_sampler")["states"] == {"skipped": 1}  # the config trains no sampler
    assert all(set(e["states"]) == {"success"} for e in result["tasks"].values()), result["tasks"]
    assert result["tasks"]["training.train"]["n"] == 4 and result["tasks"]["inference.toys"]["n"] == 2
    configure = calls_of(fake_sbi_core, "configure")[0]
    assert "generation.events=20000" in configure and configure[-2:] == ["--set", "training.seed=1"]
    view = demo.report(result, tmp_path / "demo.log")
    assert "Events:        4000 in " in view
    assert "Networks:      4 trained" in view
    assert f"  {'benchmark_ratio-theta-nominal-m01':<44} val loss 0.5  ok" in view
    assert "Fit:           cW = 0.31 +- 0.05, cHW = -0.18 +- 0.06  (valid: True)" in view
    assert "Interval:      cW in [0.26, 0.36] at 68%" in view
    assert "results: " in view and view.count("plots: ") == 2  # evaluation and inference plots
    assert f"Full log:      {tmp_path / 'demo.log'}" in view


def test_the_demo_view_survives_summaries_without_the_expected_keys(tmp_path):
    import demo

    result = {"run_id": "r", "state": "failed", "seconds": 1.0,
              "tasks": {"configure": {"n": 1, "states": {"success": 1}, "seconds": 0.5},
                        "training.train": {"n": 2, "states": {"failed": 1, "success": 1}, "seconds": 3.0},
                        "inference.fit": {"n": 1, "states": {"skipped": 1}, "seconds": None},
                        "inference.report": {"n": 1, "states": {"skipped": 1}, "seconds": None}},
              "summaries": {"training.train": {"step": "train", "networks": ["a", "b"]}, "inference.fit": {"x": 1},
                            "training.ensemble": {"failed_networks": ["c"]}, "combine_all": None,
                            "inference.report": {"intervals": {"cW": {"lo": None}}}}}
    view = demo.report(result, tmp_path / "log")
    assert "training.train                       2  failed, success" not in view
    assert "failed x1, success x1" in view
    assert "inference.*" in view and "skipped (2 tasks)" in view
    assert "Networks:      2 trained" in view and "Fit:\n  x: 1" in view
    assert "failed (the ensemble went on without them): c" in view and "Interval:" not in view
