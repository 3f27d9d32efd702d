"""sbi_pipeline runs the shipped drell_yan_eft config end to end (`dag.test()` through scripts/demo.py, small scale)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.conftest import REPO

EVENTS, SHARDS = 600, 2


@pytest.mark.slow
def test_sbi_pipeline_generates_drell_yan_events(tmp_path, monkeypatch):
    monkeypatch.setenv("SBI_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.delenv("SBI_BACKEND", raising=False)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--home", str(tmp_path / "home"), "--json",
         "--config", "drell_yan_eft", "--events", str(EVENTS), "--shards", str(SHARDS),
         "--set", "generation.shards_per_group=1", "--until", "events"],
        env={**os.environ}, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "success"
    summary = result["summary"]
    assert summary["n_events"] == EVENTS and len(summary["inputs"]) == SHARDS
    with h5py.File(summary["output"], "r") as f:
        assert f.attrs["simulator"] == "drell_yan_eft"
        x = f["samples/observations"][...]
        names = [n.decode() for n in f["observables/names"][...]]
        w = f["samples/weights"][...]
    assert x.shape == (EVENTS, 8) and np.all(np.isfinite(x)) and np.all(w > 0)
    m_ll = x[:, names.index("m_ll")]
    assert m_ll.min() >= 200.0  # the config's cut on the reconstructed mass
