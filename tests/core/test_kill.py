"""SIGKILL generate and combine at chosen moments, rerun: byte-identical result, no temporary file left.

Each kill lands on an observable event (a temporary appears, a shard is published, a temporary has grown past
a size), never after a sleep, so the test means the same on a loaded machine as on an idle one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sbi_core import steps, storage
from tests.conftest import BENCHMARK_CONFIG, REPO

# Big enough that writing a shard takes many polls (~25 MB per shard), small enough to stay quick.
PLAN = ["generation.events=400000", "generation.shards=2", "generation.shards_per_group=2", "generation.seed=3"]
GENERATE = ["generate", "--shard", "0", "--shard", "1"]
COMBINE = ["combine", "--group", "0"]
FILES = ("shards/shard-00000.h5", "shards/shard-00001.h5", "groups/group-0000.h5")


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if storage.TMP_MARK in p.name]


def _temp_of(run: Path, rel: str, min_bytes: int = 0) -> Callable[[], bool]:
    """Event: a temporary of run/rel exists holding at least min_bytes."""
    target = run / rel

    def happened() -> bool:
        for tmp in target.parent.glob(f".{target.name}{storage.TMP_MARK}*/{target.name}"):
            try:
                if tmp.stat().st_size >= min_bytes:
                    return True
            except FileNotFoundError:
                pass
        return False
    return happened


def _published(run: Path, rel: str) -> Callable[[], bool]:
    return lambda: (run / rel).exists()


def _events(run: Path, step: str, sizes: dict[str, int]) -> dict[str, Callable[[], bool]]:
    """The moments a kill can land on, per step."""
    if step == "generate":
        return {"writing shard 0": _temp_of(run, FILES[0]),
                "shard 0 half written": _temp_of(run, FILES[0], sizes[FILES[0]] // 2),
                "shard 0 published": _published(run, FILES[0]),
                "writing shard 1": _temp_of(run, FILES[1])}
    return {"writing the group": _temp_of(run, FILES[2]),
            "group half written": _temp_of(run, FILES[2], sizes[FILES[2]] // 2)}


def _kill_on(args: list[str], event: Callable[[], bool]) -> bool:
    """Start `sbi-core ARGS`, SIGKILL it when event() first holds; True if the kill landed while it ran."""
    proc = subprocess.Popen([sys.executable, "-m", "sbi_core.cli", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not event():
        time.sleep(0.001)
    landed = proc.poll() is None
    if landed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return landed


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: the files every killed-and-rerun run must reproduce byte for byte."""
    run = tmp_path_factory.mktemp("ref") / "run"
    steps.configure(str(BENCHMARK_CONFIG), str(run), PLAN)
    steps.generate(str(run), [0, 1])
    steps.combine(str(run), 0)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_generate_and_combine(tmp_path, reference, seed):
    rng = random.Random(seed)
    sizes = {rel: (reference / rel).stat().st_size for rel in FILES}
    run = tmp_path / "run"
    steps.configure(str(BENCHMARK_CONFIG), str(run), PLAN)
    landed = []
    for args, finish in ((GENERATE, lambda: steps.generate(str(run), [0, 1])),
                         (COMBINE, lambda: steps.combine(str(run), 0))):
        events = _events(run, args[0], sizes)
        for name in rng.sample(sorted(events), 2):  # two kills at two of the step's moments, then let it finish
            if events[name]():
                continue  # already true from an earlier attempt (shard 0 published): nothing to kill on
            if _kill_on([args[0], "--run", str(run), *args[1:]], events[name]):
                landed.append(name)
        finish()
    assert len(landed) >= 2, f"kills must land while the steps run (landed: {landed})"
    assert _temporaries(run) == []
    for rel in FILES:
        assert (run / rel).read_bytes() == (reference / rel).read_bytes(), rel


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
