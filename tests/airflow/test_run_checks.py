"""What the first tasks and the trigger rules refuse: a misspelt conf key, and, in whole `dag.test()` runs with
the fake sbi-core, a failed configure (the ensemble must not run); and the asset event a run publishes."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from operators import settings
from operators.plans import checked_params
from tests.airflow.test_dag_runs import calls_of, run_dag

EVENTS_ONLY = {"until": "events", "events": 4000}


def state(dag_run) -> str:
    return str(getattr(dag_run.state, "value", dag_run.state))


def test_a_misspelt_conf_key_fails_the_first_task_at_once(dag_of):
    """`prepare` (and `prepare_derive`, the claim) check the conf first: AirflowFailException, no retry."""
    from airflow.sdk.exceptions import AirflowFailException

    dag = dag_of("sbi_pipeline")
    context = {"dag": dag, "params": {"events": 10}, "dag_run": SimpleNamespace(conf={"events": 10, "sead": 7})}
    with pytest.raises(AirflowFailException, match="'sead' \\(did you mean 'seed'\\?\\)"):
        checked_params(context)
    assert checked_params({**context, "dag_run": SimpleNamespace(conf={"seed": 7})}) == {"events": 10}


@pytest.mark.slow
def test_the_ensemble_does_not_run_when_the_first_step_failed(migrated_airflow_home, dag_of, fake_sbi_core,
                                                               monkeypatch):
    """sbi_train's derive is sbi_pipeline's configure: the step whose summary the training group plans from."""
    monkeypatch.setenv("FAKE_SBI_FAIL", "derive")
    monkeypatch.setenv("FAKE_SBI_FAIL_EXIT", "2")  # bad input: no retry
    dag_run, states = run_dag(dag_of("sbi_train"), {"source_run": "/data/runs/sbi_pipeline/manual__1"})
    assert state(dag_run) == "failed" and states["derive"] == Counter({"failed": 1})
    assert states["prepare_derive"] == Counter({"success": 1})  # what used to let the ensemble run
    assert states["training.ensemble"] == Counter({"upstream_failed": 1})
    assert calls_of(fake_sbi_core, "ensemble") == []


@pytest.mark.slow
def test_a_pipeline_asked_to_publish_emits_the_events_asset_naming_its_run(migrated_airflow_home, dag_of,
                                                                           fake_sbi_core):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_run, states = run_dag(dag_of("sbi_pipeline"), {**EVENTS_ONLY, "publish": True})
    assert state(dag_run) == "success" and states["publish_events"] == Counter({"success": 1})
    with create_session() as session:
        events = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(
            AssetModel.name == "sbi_events", AssetEvent.source_run_id == dag_run.run_id)).all()
        extras = [e.extra for e in events]
    assert len(extras) == 1
    assert extras[0]["run"] == settings.run_uri("sbi_pipeline", dag_run.run_id)
    assert extras[0]["dag_id"] == "sbi_pipeline" and extras[0]["n_events"] == 4000
    # Off by default: skipped, no event (test_dag_runs' whole pipeline sees it skipped).
