"""A study in MLflow: the kind's experiment, a parent run per study, a child per round with a metric per point,
the results on the parent; a rerun aggregate replaces its round's child instead of adding one."""

from __future__ import annotations

import pytest

import tests.studies.bisect_kind  # noqa: F401 - registers the kind in this process
from sbi_core import tracking
from sbi_core.studies import steps


@pytest.fixture
def tracked(monkeypatch, tmp_path):
    for var in ("MLFLOW_TRACKING_URI", "SBI_TRACKING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SBI_ARTIFACT_ROOT", str(tmp_path))
    tracking.reset()
    yield tmp_path
    tracking.reset()


@pytest.mark.slow
def test_parent_per_study_child_per_round_metric_per_point(tracked):
    from mlflow.tracking import MlflowClient

    uri = str(tracked / "studies" / "s1")
    steps.create(uri, None, ["kind=bisect", "points_per_round=3", "max_rounds=2", "options.target=0.37"])
    for r in (1, 2):
        steps.work(uri, r, steps.plan(uri, r)["items"])
        steps.aggregate(uri, r)
    tracking.reset()  # as a new process: the parent is found again by its tag
    steps.finish(uri)
    client = MlflowClient(tracking_uri=f"sqlite:///{tracked}/mlflow/mlflow.db")
    exp = client.get_experiment_by_name("sbi-study-bisect")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sbi.kind") == "study"]
    assert len(parents) == 1 and parents[0].data.tags["sbi.study_uri"] == uri
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["sbi.status"] == "finished"
    assert parent.data.metrics["result.root"] == pytest.approx(0.375, abs=0.07)
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                      key=lambda r: r.info.run_name)
    assert [c.info.run_name for c in children] == ["round-0001", "round-0002"]
    history = client.get_metric_history(children[0].info.run_id, "f")
    assert sorted(m.step for m in history) == [0, 1, 2]  # one per evaluated point
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "width")] == [1, 2]
