"""SIGKILL generate and combine at random moments, rerun: identical result, no temporary file left."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from sbi_core import steps, storage
from tests.conftest import BENCHMARK_CONFIG, REPO

# Big enough that most of a step's time is simulating and writing, not starting Python (~3 s to generate).
PLAN = ["generation.events=800000", "generation.shards=2", "generation.shards_per_group=2", "generation.seed=3"]
GENERATE = ["generate", "--shard", "0", "--shard", "1"]
COMBINE = ["combine", "--group", "0"]


def _snapshot(path: Path) -> dict:
    """Every dataset and attribute of an HDF5 file, except the creation time."""
    out: dict = {}
    with h5py.File(path) as f:
        out["attrs"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items() if k != "created"}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
                out[name + "@attrs"] = {k: np.asarray(v).tolist() for k, v in obj.attrs.items()}
        f.visititems(visit)
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def _timed_cli(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sbi_core.cli", *args], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _kill_then_rerun(args: list[str], delay: float) -> bool:
    """Start `sbi-core ARGS`, SIGKILL it after delay seconds; True if it was still running then."""
    proc = subprocess.Popen([sys.executable, "-m", "sbi_core.cli", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if storage.TMP_MARK in p.name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and how long each step took through the CLI (kills land inside that time)."""
    run = tmp_path_factory.mktemp("ref") / "run"
    steps.configure(str(BENCHMARK_CONFIG), str(run), PLAN)
    durations = {"generate": _timed_cli([GENERATE[0], "--run", str(run), *GENERATE[1:]]),
                 "combine": _timed_cli([COMBINE[0], "--run", str(run), *COMBINE[1:]])}
    return run, durations


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_generate_and_combine(tmp_path, reference, seed):
    ref, durations = reference
    rng = random.Random(seed)
    run = tmp_path / "run"
    steps.configure(str(BENCHMARK_CONFIG), str(run), PLAN)
    killed = 0
    for args, step in ((GENERATE, steps.generate), (COMBINE, steps.combine)):
        for _ in range(2):  # kill twice at random points inside the step's usual duration, then let it finish
            killed += _kill_then_rerun([args[0], "--run", str(run), *args[1:]],
                                       rng.uniform(0.1, 0.95) * durations[args[0]])
        if step is steps.generate:
            steps.generate(str(run), [0, 1])
        else:
            steps.combine(str(run), 0)
    assert killed >= 2, "kills must land while the steps run"
    assert _temporaries(run) == []
    for rel in ("shards/shard-00000.h5", "shards/shard-00001.h5", "groups/group-0000.h5"):
        _assert_same(_snapshot(ref / rel), _snapshot(run / rel))


def test_killed_write_leaves_no_file_under_the_final_name(tmp_path):
    """A kill between the temporary write and the rename: the final name never holds a partial file."""
    run = tmp_path / "run"
    steps.configure(str(BENCHMARK_CONFIG), str(run), PLAN)
    code = ("import os, sys\nfrom sbi_core import storage\n"
            f"with storage.atomic_write({str(run / 'shards' / 'shard-00000.h5')!r}) as tmp:\n"
            "    tmp.write_bytes(b'partial')\n    os.kill(os.getpid(), 9)\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO)
    assert not (run / "shards" / "shard-00000.h5").exists()
    assert len(_temporaries(run)) == 1  # left by the kill ...
    steps.generate(str(run), [0])
    assert _temporaries(run) == []      # ... and removed by the rerun
