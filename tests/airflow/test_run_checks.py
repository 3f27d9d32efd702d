"""What the first tasks and the trigger rules refuse, in whole `dag.test()` runs with the fake sbi-core: a
misspelt conf key, a failed configure (the ensemble must not run), and the asset event a run publishes."""

from __future__ import annotations

from collections import Counter

import pytest

from operators import settings
from tests.airflow.test_dag_runs import calls_of, run_dag

EVENTS_ONLY = {"until": "events", "events": 4000}


def state(dag_run) -> str:
    return str(getattr(dag_run.state, "value", dag_run.state))


@pytest.mark.slow
def test_a_misspelt_conf_key_fails_the_first_task_and_nothing_runs(migrated_airflow_home, dag_of, fake_sbi_core):
    dag_run, states = run_dag(dag_of("sbi_pipeline"), {**EVENTS_ONLY, "sead": 7})
    assert state(dag_run) == "failed" and states["prepare"] == Counter({"failed": 1})
    assert fake_sbi_core.calls() == []  # no step ran


@pytest.mark.slow
def test_the_ensemble_does_not_run_when_configure_failed(migrated_airflow_home, dag_of, fake_sbi_core, monkeypatch):
    monkeypatch.setenv("FAKE_SBI_FAIL", "configure")
    monkeypatch.setenv("FAKE_SBI_FAIL_EXIT", "2")  # bad input: no retry
    dag_run, states = run_dag(dag_of("sbi_pipeline"), {"events": 4000})
    assert state(dag_run) == "failed" and states["configure"] == Counter({"failed": 1})
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

    quiet_run, quiet_states = run_dag(dag_of("sbi_pipeline"), EVENTS_ONLY)  # off by default: skipped, no event
    assert state(quiet_run) == "success" and quiet_states["publish_events"] == Counter({"skipped": 1})
