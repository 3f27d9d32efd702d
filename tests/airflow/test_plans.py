"""Argument lists and run prefixes built from params and step summaries (pure functions, no Airflow run)."""

from __future__ import annotations

import pytest

from operators import settings
from operators.plans import PlanError, combine_arguments, configure_arguments, generate_arguments

CONFIGURED = {"step": "configure", "run": "/r", "shards": list(range(10)), "n_groups": 3}


def test_configure_keeps_config_values_for_empty_overrides():
    argv = configure_arguments({"config": "benchmark", "events": None, "shards": 0, "seed": None, "set": []}, "/r")
    assert argv == ["configure", "--config", f"{settings.configs_uri()}/benchmark.yaml", "--run", "/r"]


def test_configure_overrides_become_separate_set_items():
    params = {"config": "benchmark", "config_uri": "s3://b/c.yaml", "events": 4000, "shards": 4, "seed": 7,
              "set": ["generation.shards_per_group=2", 'name=a; rm -rf $HOME "q" ']}
    assert configure_arguments(params, "/r") == [
        "configure", "--config", "s3://b/c.yaml", "--run", "/r",
        "--set", "generation.events=4000", "--set", "generation.shards=4", "--set", "generation.seed=7",
        "--set", "generation.shards_per_group=2", "--set", 'name=a; rm -rf $HOME "q" ',
    ]


def test_generate_maps_one_task_per_shard_below_the_fan_out_limit():
    assert generate_arguments(CONFIGURED, max_tasks=256)[3] == ["generate", "--run", "/r", "--shard", "3"]
    assert len(generate_arguments(CONFIGURED, max_tasks=256)) == 10


def test_generate_batches_shards_above_the_fan_out_limit():
    summary = {**CONFIGURED, "shards": list(range(1000))}
    batches = generate_arguments(summary, max_tasks=256)
    assert len(batches) == 250
    assert batches[0] == ["generate", "--run", "/r", "--shard", "0", "--shard", "1", "--shard", "2", "--shard", "3"]
    assert [a for b in batches for a in b[4::2]] == [str(i) for i in range(1000)]


def test_combine_maps_one_task_per_group():
    assert combine_arguments(CONFIGURED, 256) == [["combine", "--run", "/r", "--group", str(g)] for g in range(3)]


def test_combine_batches_groups_past_the_fan_out_limit():
    batches = combine_arguments({"step": "configure", "run": "/r", "n_groups": 2000}, 256)
    assert len(batches) <= 256
    assert [int(a) for b in batches for a in b[4::2]] == list(range(2000))


def test_a_summary_without_the_plan_names_what_is_missing():
    with pytest.raises(PlanError, match="'n_groups'"):
        combine_arguments({"step": "configure", "run": "/r"}, 256)


def test_each_run_gets_its_own_safe_prefix(monkeypatch):
    monkeypatch.setenv("SBI_ARTIFACT_ROOT", "s3://bucket/runs/")
    a = settings.run_uri("sbi_pipeline", "manual__2026-01-01T00:00:00+00:00")
    b = settings.run_uri("sbi_pipeline", "manual__2026-01-01T00_00_00_00_00")
    assert a.startswith("s3://bucket/runs/sbi_pipeline/manual__2026-01-01T00_00_00_00_00")
    assert a != b and b == "s3://bucket/runs/sbi_pipeline/manual__2026-01-01T00_00_00_00_00"
    assert settings.run_slug("..") not in ("..", ".") and "/" not in settings.run_slug("../x")


def test_settings_refuse_unknown_values(monkeypatch):
    monkeypatch.setenv("SBI_BACKEND", "slurm")
    with pytest.raises(settings.SettingError, match="SBI_BACKEND"):
        settings.backend()
    monkeypatch.setenv("SBI_MAX_FAN_OUT", "0")
    with pytest.raises(settings.SettingError, match="SBI_MAX_FAN_OUT"):
        settings.max_fan_out()
