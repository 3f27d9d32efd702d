"""sbi_pipeline end to end with `dag.test()` and the real sbi-core: event count, reproducibility, argv safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from tests.airflow.conftest import METACHARACTERS
from tests.conftest import REPO

EVENTS, SHARDS, SEED = 4000, 4, 7


def demo_run(home: Path, **env: str) -> dict:
    """One `scripts/demo.py --json` run (a fresh process, as `make demo` runs it) on a small config."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--home", str(home), "--json",
         "--events", str(EVENTS), "--shards", str(SHARDS), "--seed", str(SEED),
         "--set", "generation.shards_per_group=2", "--set", METACHARACTERS],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[dict]:
    home = tmp_path_factory.mktemp("airflow-home")
    root = tmp_path_factory.mktemp("artifacts")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SBI_ARTIFACT_ROOT", str(root))
        mp.delenv("SBI_BACKEND", raising=False)
        # The second run maps generate over batches of 2 shards: the events must not change.
        return [demo_run(home), demo_run(home, SBI_MAX_FAN_OUT="2")]


def arrays(uri: str) -> dict[str, np.ndarray]:
    with h5py.File(uri, "r") as f:
        return {name: f[f"samples/{name}"][...] for name in ("observations", "weights")}


def test_combined_file_holds_every_event(two_runs):
    first = two_runs[0]
    assert first["state"] == "success"
    assert first["summary"]["n_events"] == EVENTS
    assert len(first["summary"]["inputs"]) == SHARDS // 2  # two first-level groups
    assert arrays(first["summary"]["output"])["observations"].shape[0] == EVENTS


def test_same_seed_gives_identical_arrays_under_a_new_prefix(two_runs):
    """Also across fan-outs: one generate task per shard, then one per batch of two shards."""
    first, second = (run["summary"]["output"] for run in two_runs)
    assert first != second  # each run writes under its own prefix
    a, b = arrays(first), arrays(second)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_shell_metacharacters_reach_the_real_cli_unchanged(two_runs):
    config = yaml.safe_load(Path(two_runs[0]["summary"]["run"], "config.yaml").read_text())
    assert config["name"] == METACHARACTERS.split("=", 1)[1]
