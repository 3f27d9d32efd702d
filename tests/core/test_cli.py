"""The command line contract: one JSON line on stdout, exit 2 for bad input with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sbi_core.config import json_schema
from tests.conftest import BENCHMARK_CONFIG, REPO

SCHEMA_FILE = REPO / "sbi_core" / "schema" / "analysis-v1.json"


def test_schema_is_one_line_and_matches_the_shipped_file(cli):
    res = cli("schema")
    assert res.returncode == 0, res.stderr
    schema = res.summary
    assert schema["title"] == "Analysis config" and "generation" in schema["properties"]
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), (
        "sbi_core/schema/analysis-v1.json is stale: regenerate with `sbi-core schema --indent 2`")


def test_every_field_has_title_and_description():
    schema = json_schema()
    for name, model in [("AnalysisConfig", schema), *schema["$defs"].items()]:
        for field, prop in model.get("properties", {}).items():
            ref = prop.get("$ref", "").rsplit("/", 1)[-1]
            title = prop.get("title") or schema["$defs"].get(ref, {}).get("title")  # pydantic: $ref fields keep
            assert title and prop.get("description"), f"{name}.{field} needs a title and a description"


def test_configure_generate_combine_through_the_cli(cli, tmp_path):
    run = tmp_path / "run"
    res = cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", str(run), "--set", "generation.events=3000",
              "--set", "generation.shards=3", "--set", "generation.shards_per_group=2")
    assert res.returncode == 0, res.stderr
    plan = res.summary
    assert plan["shards"] == [0, 1, 2] and plan["groups"] == [[0, 1], [2]] and plan["events"] == 3000
    res = cli("generate", "--run", str(run), "--shard", "0", "--shard", "1", "--shard", "2")
    assert res.returncode == 0, res.stderr
    assert [s["n_events"] for s in res.summary["shards"]] == [1000, 1000, 1000]
    for g in (0, 1):
        assert cli("combine", "--run", str(run), "--group", str(g)).returncode == 0
    res = cli("combine", "--run", str(run), "--all")
    assert res.returncode == 0, res.stderr
    assert res.summary["n_events"] == 3000 and res.summary["output"] == str(run / "events.h5")


def _bad_config(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(BENCHMARK_CONFIG.read_text())
    mutate(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def _set(path: str, value):
    def mutate(data):
        node = data
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[keys[-1]] = value
    return mutate


@pytest.mark.parametrize(("mutate", "expected"), [
    (_set("simulator.name", "pythia9"), "simulator.name: unknown simulator 'pythia9'; known: ['benchmark'"),
    (_set("generation.events", -5), "generation.events: Input should be greater than 0"),
    (lambda d: d["parameters"][0].update(true_value=7.0), "parameters[0]: true_value 7.0 is outside range"),
    (lambda d: d["generation"].update(shardz=3), "generation.shardz: unknown key (misspelt?)"),
    (lambda d: d["nuisance"][1].update(size=-0.1), "nuisance[1].size: Input should be greater than 0"),
])
def test_bad_config_exit_2_nothing_written(cli, tmp_path, mutate, expected):
    cfg = _bad_config(tmp_path, mutate)
    run = tmp_path / "run"
    res = cli("configure", "--config", str(cfg), "--run", str(run))
    assert res.returncode == 2, res.stderr
    assert expected in res.stderr
    assert res.stdout == ""
    assert not run.exists()


def test_malformed_yaml_names_the_line(cli, tmp_path):
    p = tmp_path / "broken.yaml"
    lines = BENCHMARK_CONFIG.read_text().splitlines()
    lines.insert(3, "name: [unclosed")
    p.write_text("\n".join(lines))
    res = cli("configure", "--config", str(p), "--run", str(tmp_path / "run"))
    assert res.returncode == 2
    assert "malformed YAML at line" in res.stderr
    assert not (tmp_path / "run").exists()


def test_missing_config_and_unconfigured_run(cli, tmp_path):
    res = cli("configure", "--config", str(tmp_path / "nope.yaml"), "--run", str(tmp_path / "run"))
    assert res.returncode == 2 and "file not found" in res.stderr
    res = cli("generate", "--run", str(tmp_path / "run"), "--shard", "0")
    assert res.returncode == 2 and "not configured" in res.stderr


def test_reconfiguring_a_run_with_another_analysis_is_refused(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", str(run)).returncode == 0
    before = (run / "plan.json").read_bytes()
    res = cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", str(run), "--set", "generation.seed=5")
    assert res.returncode == 2 and "already holds another analysis" in res.stderr
    assert (run / "plan.json").read_bytes() == before
    # the same analysis again is an idempotent no-op
    assert cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", str(run)).returncode == 0
    assert (run / "plan.json").read_bytes() == before


def test_shell_metacharacters_reach_the_config_unchanged(cli, tmp_path):
    name = """a; rm -rf "$HOME" `x` 'q' | & > <"""
    run = tmp_path / "run"
    res = cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", str(run), "--set", f"name={name}")
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["name"] == name


def test_unexpected_failure_is_exit_1_with_traceback(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", str(run)).returncode == 0
    (run / "shards" / "shard-00000.h5").mkdir(parents=True)  # a directory where the shard goes: not bad input
    res = cli("generate", "--run", str(run), "--shard", "0")
    assert res.returncode == 1 and "Traceback" in res.stderr and res.stdout == ""


def test_combine_accepts_a_batch_of_groups(cli, small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    shutil.rmtree(run / "groups")
    res = cli("combine", "--run", str(run), "--group", "0", "--group", "1")
    assert res.returncode == 0, res.stderr
    s = res.summary
    assert s["group"] is None and [g["group"] for g in s["groups"]] == [0, 1] and s["n_events"] == 6000
    one = cli("combine", "--run", str(run), "--group", "1").summary
    assert one["group"] == 1 and one["output"].endswith("group-0001.h5") and len(one["groups"]) == 1
    bad = cli("combine", "--run", str(run), "--group", "0", "--group", "7")
    assert bad.returncode == 2 and "group 7 is outside the plan" in bad.stderr


def test_derive_reads_the_source_events_and_refuses_event_changes(cli, small_run, tmp_path):
    new = tmp_path / "derived"
    res = cli("derive", "--from", str(small_run), "--run", str(new), "--set", "name=retrained")
    assert res.returncode == 0, res.stderr
    assert res.summary["events"] == str(small_run / "events.h5")
    assert json.loads((new / "plan.json").read_text())["events_uri"] == str(small_run / "events.h5")
    assert not (new / "events.h5").exists()
    again = cli("derive", "--from", str(small_run), "--run", str(new), "--set", "name=retrained")
    assert again.returncode == 0, again.stderr
    other = cli("derive", "--from", str(small_run), "--run", str(new), "--set", "name=other")
    assert other.returncode == 2 and "other settings" in other.stderr
    bad = cli("derive", "--from", str(small_run), "--run", str(tmp_path / "x"), "--set", "generation.seed=5")
    assert bad.returncode == 2 and "generation" in bad.stderr and not (tmp_path / "x").exists()


def test_each_block_runs_every_block_of_a_batched_task():
    from sbi_core.cli_helpers import each_block

    seen = []
    one = each_block("hessian", lambda b: seen.append(b) or {"step": "hessian", "rows": b}, ["0:8"])
    assert one == {"step": "hessian", "rows": "0:8"}
    many = each_block("hessian", lambda b: seen.append(b) or {"step": "hessian", "rows": b}, ["8:16", "16:24"])
    assert many == {"step": "hessian", "blocks": [{"step": "hessian", "rows": "8:16"}, {"step": "hessian", "rows": "16:24"}]}
    assert seen == ["0:8", "8:16", "16:24"]
