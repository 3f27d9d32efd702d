"""storage: atomic writes locally and on S3 (moto server on 127.0.0.1), stale temporaries removed."""

from __future__ import annotations

import json

import pytest

from sbi_core import storage


def test_atomic_write_publishes_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with storage.atomic_write(str(target)) as tmp:
        tmp.write_bytes(b"hello")
        assert not target.exists(), "nothing may appear under the final name before the block ends"
    assert target.read_bytes() == b"hello"
    assert list(target.parent.iterdir()) == [target]


def test_atomic_write_failure_keeps_previous_content(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), storage.atomic_write(str(target)) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_removes_stale_temporaries(tmp_path):
    target = tmp_path / "out.bin"
    stale = tmp_path / f".out.bin{storage.TMP_MARK}999-deadbeef"
    stale.write_bytes(b"left by a killed run")
    other = tmp_path / f".other.bin{storage.TMP_MARK}1-x"
    other.write_bytes(b"another target's temporary is not ours to remove")
    storage.write_text(str(target), "new")
    assert not stale.exists()
    assert other.exists()


def test_atomic_write_requires_content(tmp_path):
    with pytest.raises(RuntimeError, match="nothing was written"), storage.atomic_write(str(tmp_path / "x")):
        pass
    assert not (tmp_path / "x").exists()


def test_join_and_normalize(tmp_path):
    assert storage.join("s3://bucket/prefix/", "a", "/b.h5") == "s3://bucket/prefix/a/b.h5"
    assert storage.join(str(tmp_path), "a", "b") == str(tmp_path / "a" / "b")
    assert storage.normalize("s3://b/p/") == "s3://b/p"
    assert storage.is_remote("s3://b/k") and not storage.is_remote("file:///tmp/x") and not storage.is_remote("/x")


@pytest.mark.integration
def test_s3_roundtrip(s3_bucket):
    uri = f"s3://{s3_bucket}/runs/r1/plan.json"
    assert not storage.exists(uri)
    storage.write_json(uri, {"a": 1})
    assert storage.exists(uri)
    assert storage.read_json(uri) == {"a": 1}
    with storage.local_copy(uri) as path:
        assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError), storage.atomic_write(f"s3://{s3_bucket}/runs/r1/half.h5") as tmp:
        tmp.write_bytes(b"x" * 1000)
        raise RuntimeError("killed before upload")
    assert not storage.exists(f"s3://{s3_bucket}/runs/r1/half.h5")
    storage.remove(uri)
    assert not storage.exists(uri)
    with pytest.raises(FileNotFoundError), storage.local_copy(uri):
        pass
