"""combine refuses missing, truncated, corrupt, empty, foreign and miscounted shards, naming them,
and leaves nothing under the output URI."""

from __future__ import annotations

import shutil

import h5py
import pytest

from sbi_core import steps
from sbi_core.errors import ShardError
from sbi_core.layout import RunLayout
from tests.conftest import BENCHMARK_CONFIG, SMALL


@pytest.fixture
def run(tmp_path, small_run):
    """A private copy of the small run without its combined outputs."""
    dst = tmp_path / "run"
    shutil.copytree(small_run, dst)
    shutil.rmtree(dst / "groups")
    (dst / "events.h5").unlink()
    return dst


def _combine_fails(run, shard_index: int, reason: str):
    layout = RunLayout(str(run))
    with pytest.raises(ShardError, match=reason) as err:
        steps.combine(str(run), 0)
    assert err.value.uri == layout.shard(shard_index)
    assert layout.shard(shard_index) in str(err.value)
    assert not (run / "groups").exists() or not any((run / "groups").iterdir()), "nothing may be written"


def test_missing_shard(run):
    RunLayout(str(run)).shard(1)
    (run / "shards" / "shard-00001.h5").unlink()
    _combine_fails(run, 1, "missing")


def test_truncated_shard(run):
    p = run / "shards" / "shard-00001.h5"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    _combine_fails(run, 1, "unreadable or truncated")


def test_empty_shard(run):
    (run / "shards" / "shard-00000.h5").write_bytes(b"")
    _combine_fails(run, 0, "empty")


def test_corrupt_shard_chunk(run):
    """Flip bytes inside a stored chunk: the header is intact, the data is not."""
    p = run / "shards" / "shard-00001.h5"
    with h5py.File(p) as f:
        offset = f["samples/observations"].id.get_chunk_info(0).byte_offset
    data = bytearray(p.read_bytes())
    for k in range(100, 140):
        data[offset + k] ^= 0xFF
    p.write_bytes(bytes(data))
    _combine_fails(run, 1, "corrupt")


def test_foreign_shard(run, tmp_path):
    other = tmp_path / "other"
    steps.configure(str(BENCHMARK_CONFIG), str(other), [*SMALL, "generation.seed=99"])
    steps.generate(str(other), [1])
    shutil.copy(RunLayout(str(other)).shard(1), run / "shards" / "shard-00001.h5")
    _combine_fails(run, 1, "foreign")


def test_miscounted_shard(run):
    """A shard whose event count differs from the plan (e.g. copied from another plan) is refused."""
    plan = run / "plan.json"
    import json

    data = json.loads(plan.read_text())
    data["shard_events"][0] += 1
    plan.write_text(json.dumps(data))
    _combine_fails(run, 0, "the plan records")


def test_not_an_event_file(run):
    with h5py.File(run / "shards" / "shard-00000.h5", "w") as f:
        f["x"] = [1, 2, 3]
    _combine_fails(run, 0, "not an sbi-events file")


def test_second_level_refuses_missing_group(run):
    steps.combine(str(run), 0)
    with pytest.raises(ShardError, match="group-0001.h5: missing"):
        steps.combine(str(run), None)
    assert not (run / "events.h5").exists()
