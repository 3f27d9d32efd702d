"""sbi_pipeline runs the shipped drell_yan_eft config end to end (`dag.test()` through scripts/demo.py, small scale),
with the flow sampler (a tiny one): train_sampler runs once before generate, whose shards draw from its file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import REPO

EVENTS, SHARDS = 600, 2
#: A flow of a few seconds, and short vegas and max-weight searches: the wiring is under test, not the efficiency.
TINY_FLOW = ["simulator.options.sampler=flow", "simulator.options.sampling.flow.steps=30",
             "simulator.options.sampling.flow.batch_size=256", "simulator.options.sampling.flow.vegas_iterations=3",
             "simulator.options.sampling.flow.vegas_evaluations=500", "simulator.options.sampling.max_points=10000",
             "simulator.options.sampling.iterations=3", "simulator.options.sampling.evaluations=2000"]


@pytest.mark.slow
def test_sbi_pipeline_generates_drell_yan_events(tmp_path, monkeypatch):
    monkeypatch.setenv("SBI_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.delenv("SBI_BACKEND", raising=False)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--home", str(tmp_path / "home"), "--json",
         "--config", "drell_yan_eft", "--events", str(EVENTS), "--shards", str(SHARDS),
         "--set", "generation.shards_per_group=1", *[a for item in TINY_FLOW for a in ("--set", item)],
         "--until", "events"],
        env={**os.environ}, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "success"
    assert result["tasks"]["train_sampler"]["states"] == {"success": 1}
    assert result["tasks"]["generate"]["states"] == {"success": SHARDS}
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
    run = Path(summary["output"]).parent
    assert (run / "sampler" / "proposal.bin").is_file()
