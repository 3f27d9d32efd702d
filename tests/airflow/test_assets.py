"""Assets and schedules: which deployment setting gives which schedule, how a stage finds the run it starts
from in its asset events, and the settings' errors (each names its variable)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable

from operators import settings
from operators.assets import EVENTS, LHE_FILES, NETWORKS, asset_source, inbox_inputs, run_limits, stage_schedule
from operators.settings import SettingError

SETTINGS = ("SBI_CHAIN_STAGES", "SBI_SCHEDULE_SBI_INFER", "SBI_LHE_INBOX", "SBI_AWS_CONN_ID", "SBI_RETRY_DELAY")


@pytest.fixture(autouse=True)
def _no_schedule_settings(monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


def test_without_settings_nothing_is_scheduled(monkeypatch):
    assert stage_schedule("sbi_infer", NETWORKS) is None
    assert run_limits(None) == {"catchup": False}  # manual runs keep Airflow's max_active_runs


@pytest.mark.parametrize("chain, cron, kind", [
    ("true", None, Asset), (None, "0 3 * * *", CronTriggerTimetable), ("true", "0 3 * * *", AssetOrTimeSchedule),
    ("false", "@daily", CronTriggerTimetable),
])
def test_chaining_and_a_cron_give_the_asset_the_timetable_or_both(monkeypatch, chain, cron, kind):
    if chain:
        monkeypatch.setenv("SBI_CHAIN_STAGES", chain)
    if cron:
        monkeypatch.setenv("SBI_SCHEDULE_SBI_INFER", cron)
    schedule = stage_schedule("sbi_infer", NETWORKS)
    assert isinstance(schedule, kind)
    if kind is Asset:
        assert schedule == NETWORKS
    assert run_limits(schedule) == {"catchup": False, "max_active_runs": 1}


def test_the_inbox_not_the_chain_setting_schedules_ingest_on_new_files(monkeypatch):
    monkeypatch.setenv("SBI_CHAIN_STAGES", "true")
    assert stage_schedule("sbi_ingest", LHE_FILES) is None
    monkeypatch.setenv("SBI_LHE_INBOX", "s3://bucket/incoming/")
    assert stage_schedule("sbi_ingest", LHE_FILES) == LHE_FILES
    assert settings.lhe_inbox() == "s3://bucket/incoming"


@pytest.mark.parametrize("name, value", [
    ("SBI_CHAIN_STAGES", "maybe"), ("SBI_SCHEDULE_SBI_INFER", "0 3 * *"), ("SBI_SCHEDULE_SBI_INFER", "nightly"),
    ("SBI_LHE_INBOX", "/data/incoming"), ("SBI_LHE_INBOX", "s3://bucket"), ("SBI_RETRY_DELAY", "-1"),
])
def test_a_bad_setting_names_its_variable(monkeypatch, name, value):
    read = {"SBI_CHAIN_STAGES": settings.chain_stages, "SBI_SCHEDULE_SBI_INFER": lambda: settings.schedule_cron(
        "sbi_infer"), "SBI_LHE_INBOX": settings.lhe_inbox, "SBI_RETRY_DELAY": settings.retry_delay}[name]
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError, match=name):
        read()


def test_the_dags_take_their_schedules_from_the_settings(monkeypatch, dag_of):
    monkeypatch.setenv("SBI_CHAIN_STAGES", "true")
    monkeypatch.setenv("SBI_SCHEDULE_SBI_INFER", "17 3 * * *")
    monkeypatch.setenv("SBI_LHE_INBOX", "s3://bucket/incoming")
    train, infer, inbox = dag_of("sbi_train"), dag_of("sbi_infer"), dag_of("sbi_lhe_inbox")
    assert train.timetable.asset_condition == EVENTS and train.max_active_runs == 1 and not train.catchup
    assert infer.timetable.timetable.expression == "17 3 * * *" and infer.timetable.asset_condition == NETWORKS
    assert infer.max_active_runs == 1
    assert type(inbox.timetable).__name__ == "ContinuousTimetable" and inbox.max_active_runs == 1
    assert [t.task_id for t in inbox.tasks] == ["wait_for_lhe", "claim"]
    sensor = inbox.get_task("wait_for_lhe")
    assert sensor.deferrable and sensor.wildcard_match and sensor.aws_conn_id == "aws_default"
    assert inbox.get_task("claim").outlets == [LHE_FILES]
    assert train.get_task("prepare_derive").inlets == [EVENTS]
    assert train.get_task("publish_networks").outlets == [NETWORKS]


def event(run: str | None, when: int, **extra) -> SimpleNamespace:
    return SimpleNamespace(timestamp=datetime(2026, 1, 1, when, tzinfo=UTC), extra={"run": run, **extra})


class Inlets:
    """`context["inlet_events"]`: the asset's newest event first when asked so."""

    def __init__(self, events):
        self.events = events

    def __getitem__(self, asset):
        return self

    def ascending(self, flag):
        assert flag is False
        return self

    def limit(self, n):
        return sorted(self.events, key=lambda e: e.timestamp, reverse=True)[:n]


def context(triggering=None, inlets=(), inlet_events=()):
    return {"triggering_asset_events": triggering or {}, "task": SimpleNamespace(inlets=list(inlets)),
            "inlet_events": Inlets(list(inlet_events))}


def test_the_newest_triggering_event_names_the_source_run():
    triggering = {EVENTS: [event("s3://b/runs/a", 1), event("s3://b/runs/c", 3), event("s3://b/runs/b", 2)]}
    assert asset_source(context(triggering, [EVENTS])) == ("sbi_events", "s3://b/runs/c")


def test_a_cron_run_takes_the_newest_event_of_its_inlet_and_none_without_one():
    assert asset_source(context({}, [NETWORKS], [event("/r/1", 1), event("/r/2", 5)])) == ("sbi_networks", "/r/2")
    assert asset_source(context({}, [NETWORKS], [])) is None
    assert asset_source(context({}, [NETWORKS], [event(None, 1)])) is None  # an event without a run is no source
    assert asset_source(context({}, [], [event("/r/1", 1)])) is None  # no inlet: the form must say


def test_an_ingest_started_by_new_files_reads_every_claimed_file_in_order():
    triggering = {LHE_FILES: [event(None, 2, files=["s3://b/in-claimed/r2/c.lhe"], config_uri="s3://b/cfg.yaml"),
                              event(None, 1, files=["s3://b/in-claimed/r1/a.lhe", "s3://b/in-claimed/r1/b.lhe"])]}
    config, sets = inbox_inputs(context(triggering))
    assert config == "s3://b/cfg.yaml"
    assert sets == ['simulator.options.files=["s3://b/in-claimed/r1/a.lhe", "s3://b/in-claimed/r1/b.lhe", '
                    '"s3://b/in-claimed/r2/c.lhe"]', "generation.shards=3"]
    assert inbox_inputs(context({})) == (None, [])
