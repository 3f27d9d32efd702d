"""A run's own files and places, refused with exit 2 naming the file or field: a malformed plan.json, a run outside
the artifact root, an observed-data file that does not exist."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import BENCHMARK_CONFIG, SMALL


@pytest.fixture
def configured(tmp_path, small_run):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    return run


@pytest.mark.parametrize(("content", "named"), [
    ("{not json", r"plan\.json is not valid JSON"),
    ('{"seed": 1}', r"plan\.json: unknown fields \[\], missing fields \['chunk_rows', 'config_hash'"),
    ("patch:groups=[[0, 1], [1, 2]]", r"plan\.json: field groups must list every shard 0\.\.3 once"),
    ("patch:chunk_rows=\"1500\"", r"plan\.json: field chunk_rows must be an integer >= 1, got '1500'"),
])
def test_malformed_plan_is_exit_2_naming_the_file_and_field(cli, configured, content, named):
    plan = configured / "plan.json"
    if content.startswith("patch:"):
        field, value = content.removeprefix("patch:").split("=", 1)
        data = json.loads(plan.read_text())
        data[field] = json.loads(value)
        content = json.dumps(data)
    plan.write_text(content)
    res = cli("combine", "--run", str(configured), "--all")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("sbi-core combine: error")]
    assert str(plan) in line and re.search(named, line), line


def test_runs_stay_under_the_artifact_root(cli, tmp_path):
    """With SBI_ARTIFACT_ROOT set, `--run` and the config's `output:` cannot point outside it (`../..` included);
    SBI_WRITE_OUTSIDE_ROOT=1 allows it; object-store URIs never take '..' segments."""
    root = tmp_path / "root"
    root.mkdir()
    env = {"SBI_ARTIFACT_ROOT": str(root)}
    escape = str(root / "dag" / ".." / ".." / "escaped")
    res = cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", escape, *SMALL_SET, env=env)
    assert res.returncode == 2 and "is outside the artifact root SBI_ARTIFACT_ROOT" in res.stderr, res.stderr
    assert not (tmp_path / "escaped").exists()
    cfg = tmp_path / "out.yaml"
    cfg.write_text(BENCHMARK_CONFIG.read_text().replace("output:", "output: ../../x #", 1))
    res = cli("configure", "--config", str(cfg), *SMALL_SET, env=env)
    assert res.returncode == 2 and "output (the config's run URI)" in res.stderr, res.stderr
    res = cli("combine", "--run", "s3://bucket/runs/../../other", "--all", env=env)
    assert res.returncode == 2 and "'..' are not allowed" in res.stderr, res.stderr
    res = cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", str(root / "dag" / "r1"), *SMALL_SET, env=env)
    assert res.returncode == 0, res.stderr
    res = cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", str(tmp_path / "elsewhere"), *SMALL_SET,
              env={**env, "SBI_WRITE_OUTSIDE_ROOT": "1"})
    assert res.returncode == 0, res.stderr


SMALL_SET = [arg for item in SMALL for arg in ("--set", item)]


def test_missing_observed_data_file_is_refused_at_configure(cli, tmp_path):
    res = cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", str(tmp_path / "run"), *SMALL_SET,
              "--set", "inference.dataset.kind=file", "--set", f"inference.dataset.uri={tmp_path / 'observed.h5'}")
    assert res.returncode == 2, res.stderr
    assert f"inference.dataset.uri: events file {tmp_path / 'observed.h5'} not found" in res.stderr
    assert not (tmp_path / "run").exists()
