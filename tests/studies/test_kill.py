"""SIGKILL `sbi-core study --aggregate` while it writes each of its files, then rerun: the study's files are
byte for byte those of an uninterrupted aggregate of the same round, and no temporary is left.

The kill lands on an observable event: with SBI_STUDY_PAUSE_BEFORE_PUBLISH=<file name> the step writes that
file's temporary, creates `<temporary>.paused` and waits; the test kills it when that file appears."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sbi_core import storage
from sbi_core.studies import steps
from sbi_core.studies.steps import PAUSE_ENV
from tests.conftest import REPO

# The toy-limit kind on a counting experiment: a real kind whose round 1 takes a second.
CONFIG = ["kind=toy_limits", "seed=4", "budget=2000", "options.model=counting", "options.upper=4.0",
          "options.grid_points=3", "options.toys=20", "options.toys_per_task=20",
          "options.counting={observed: 12, signal: 5.0, background: 10.0}"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def worked(tmp_path_factory) -> Path:
    """A study whose round 1 is planned and worked, not aggregated."""
    root = tmp_path_factory.mktemp("kill") / "study"
    steps.create(str(root), None, CONFIG)
    planned = steps.plan(str(root))
    steps.work(str(root), 1, planned["items"])
    return root


@pytest.fixture(scope="module")
def reference(worked, tmp_path_factory) -> dict[str, bytes]:
    ref = tmp_path_factory.mktemp("ref") / "study"
    shutil.copytree(worked, ref)
    out = subprocess.run([sys.executable, "-m", "sbi_core.cli", "study", "--aggregate", "--study", str(ref),
                          "--round", "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    files = _files(ref)
    return {k.replace(str(ref), "STUDY"): v.replace(str(ref).encode(), b"STUDY") for k, v in files.items()}


@pytest.mark.parametrize("target", ["aggregate.json", "history.json", "state.json"])
def test_aggregate_killed_while_writing_then_rerun_gives_the_same_files(worked, reference, tmp_path, target):
    study = tmp_path / "study"
    shutil.copytree(worked, study)
    before = _files(study)
    proc = subprocess.Popen([sys.executable, "-m", "sbi_core.cli", "study", "--aggregate", "--study", str(study),
                             "--round", "1"], cwd=REPO, env={**os.environ, PAUSE_ENV: target},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120  # a guard against a hang, not a measurement
    while not [p for p in study.rglob(f"{target}.paused") if p.parent.name.startswith(f".{target}{storage.TMP_MARK}")]:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert time.monotonic() < deadline, "the step never reached the write"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = _files(study)
    assert any(storage.TMP_MARK in name for name in killed)  # the temporary the kill left behind ...
    assert killed.get("state.json") == before["state.json"]  # ... and the round is not committed

    rerun = subprocess.run([sys.executable, "-m", "sbi_core.cli", "study", "--aggregate", "--study", str(study),
                            "--round", "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    after = {k: v.replace(str(study).encode(), b"STUDY") for k, v in _files(study).items()}
    assert not [name for name in after if storage.TMP_MARK in name]
    assert after.keys() == reference.keys()
    for name in after:
        assert after[name] == reference[name], name
