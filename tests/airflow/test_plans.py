"""Argument lists and run prefixes built from params and step summaries (pure functions, no Airflow run)."""

from __future__ import annotations

import pytest

from operators import settings
from operators.params import INFERENCE_KNOBS, TRAINING_KNOBS
from operators.plans import (
    FANS,
    PlanError,
    combine_arguments,
    configure_arguments,
    derive_arguments,
    fan_out,
    generate_arguments,
    summary_items,
)

CONFIGURED = {"step": "configure", "run": "/r", "shards": list(range(10)), "n_groups": 3}


def test_configure_keeps_config_values_for_empty_overrides():
    argv = configure_arguments({"config": "benchmark", "events": None, "shards": None, "seed": None, "set": []}, "/r")
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
    assert generate_arguments(CONFIGURED, 256)[3] == ["generate", "--run", "/r", "--shard", "3"]
    assert len(generate_arguments(CONFIGURED, 256)) == 10


def test_generate_batches_shards_above_the_fan_out_limit():
    summary = {**CONFIGURED, "shards": list(range(1000))}
    batches = generate_arguments(summary, 256)
    assert len(batches) == 250
    assert batches[0] == ["generate", "--run", "/r", "--shard", "0", "--shard", "1", "--shard", "2", "--shard", "3"]
    assert [a for b in batches for a in b[4::2]] == [str(i) for i in range(1000)]


def test_repeatable_flags_take_batches_of_consecutive_items():
    networks = [f"alices-theta-nominal-m{m:02d}" for m in range(10)]
    batches = fan_out(FANS["train"], "/r", networks, max_tasks=4)
    assert len(batches) == 4 and batches[0] == ["train", "--run", "/r", "--network", networks[0],
                                                "--network", networks[1], "--network", networks[2]]
    assert [a for b in batches for a in b[4::2]] == networks
    assert fan_out(FANS["train"], "/r", networks, max_tasks=256) == [["train", "--run", "/r", "--network", n]
                                                                     for n in networks]


@pytest.mark.parametrize("step", ["hessian", "scan", "toys", "evaluate"])
def test_block_flags_repeat_past_the_fan_out_so_every_block_keeps_its_files(step):
    fan = FANS[step]
    blocks = [f"{i}:{i + 8}" for i in range(0, 80, 8)] if step != "evaluate" else [str(i) for i in range(10)]
    assert fan_out(fan, "/r", blocks, max_tasks=256) == [[step, "--run", "/r", fan.flag, b] for b in blocks]
    batched = fan_out(fan, "/r", blocks, max_tasks=4)
    assert [b[3::2] for b in batched] == [[fan.flag] * len(b[4::2]) for b in batched]
    assert [item for b in batched for item in b[4::2]] == blocks  # every configured block, unmerged, in order
    assert len(batched) == 4


@pytest.mark.parametrize("step", list(FANS))
def test_an_empty_work_list_gives_no_tasks(step):
    assert fan_out(FANS[step], "/r", [], max_tasks=4) == []


def test_single_value_flags_get_one_task_per_item_whatever_the_limit():
    methods = ["alices", "sally", "carl"]
    assert fan_out(FANS["sample"], "/r", methods, 2) == [["sample", "--run", "/r", "--method", m] for m in methods]


def test_items_of_a_mapped_step_are_concatenated_in_order():
    samples = [{"step": "sample", "networks": ["a-0", "a-1"]}, {"step": "sample", "networks": ["b-0"]}]
    assert summary_items(samples, "networks") == ["a-0", "a-1", "b-0"]
    assert summary_items({"step": "configure", "n_groups": 3}, "n_groups") == [0, 1, 2]
    with pytest.raises(PlanError, match="'networks'"):
        summary_items([{"step": "sample"}], "networks")
    with pytest.raises(PlanError, match="must be a list"):
        summary_items({"step": "fit", "hessian_blocks": "0:8"}, "hessian_blocks")


def test_derive_takes_the_source_run_by_uri_or_by_dag_and_run_id(monkeypatch):
    monkeypatch.setenv("SBI_ARTIFACT_ROOT", "s3://b/runs")
    params = {"source_run": "s3://b/runs/x/1", "members": 5, "epochs": None, "methods": ["alices", "sally"],
              "luminosity": 300.0, "set": ["training.alpha=0.5"]}
    assert derive_arguments(params, "s3://b/runs/sbi_train/2", TRAINING_KNOBS) == [
        "derive", "--from", "s3://b/runs/x/1", "--run", "s3://b/runs/sbi_train/2",
        "--set", 'training.methods=["alices", "sally"]', "--set", "training.members=5",
        "--set", "training.alpha=0.5",
    ]  # luminosity is an inference knob: not sbi_train's
    by_id = {"source_run": "", "source_dag_id": "sbi_pipeline", "source_run_id": "manual__1", "toys": 0}
    assert derive_arguments(by_id, "/n", INFERENCE_KNOBS) == [
        "derive", "--from", "s3://b/runs/sbi_pipeline/manual__1", "--run", "/n", "--set", "inference.toys.n=0"]
    with pytest.raises(PlanError, match="source_run_id"):
        derive_arguments({"source_dag_id": "sbi_pipeline"}, "/n", INFERENCE_KNOBS)


def test_configure_passes_the_stage_knobs_too():
    params = {"config": "benchmark", "events": None, "epochs": 3, "source": "exact", "toys": None, "device": ""}
    assert configure_arguments(params, "/r")[5:] == ["--set", "training.optimizer.epochs=3",
                                                     "--set", "inference.source=exact"]


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
