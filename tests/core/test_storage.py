"""storage: atomic writes locally and on S3 (moto server on 127.0.0.1), abandoned temporaries removed and live ones\nkept, the staging limit, streamed uploads (bounded memory, checksums without reading back, aborts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sbi_core import s3, storage
from sbi_core.errors import InputError
from tests.conftest import REPO


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


_HOLD = """
import sys
from pathlib import Path
from sbi_core import s3, storage
from sbi_core.errors import InputError
with storage.atomic_write(sys.argv[1]) as tmp:
    tmp.write_bytes(b"from the other writer")
    print(tmp, flush=True)
    sys.stdin.readline()  # hold the temporary open until told to go on (or killed)
"""


def _holder(target):
    """A second writer of target, paused inside atomic_write; returns (process, its temporary file)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=REPO)
    return proc, Path(proc.stdout.readline().strip())


def test_killed_writers_temporary_is_removed_a_live_writers_is_not(tmp_path):
    """Two writers of one file at once keep their own temporaries: the clean-up removes only a temporary whose
    writer is gone (its directory's flock is free), and both writes then succeed."""
    target = tmp_path / "out.bin"
    killed, killed_tmp = _holder(target)
    killed.kill()
    killed.wait()
    live, live_tmp = _holder(target)
    legacy_gone = tmp_path / f".out.bin{storage.TMP_MARK}{killed.pid}-deadbeef"  # an old-style file, pid gone
    legacy_gone.write_bytes(b"left by a killed run of an earlier version")
    other = tmp_path / f".other.bin{storage.TMP_MARK}1-x"
    other.write_bytes(b"another target's temporary is not ours to remove")
    try:
        storage.write_text(str(target), "new")
        assert not killed_tmp.parent.exists() and not legacy_gone.exists(), "abandoned temporaries stay"
        assert live_tmp.read_bytes() == b"from the other writer", "a live writer's temporary was touched"
        assert other.exists() and target.read_text() == "new"
    finally:
        live.communicate("go\n", timeout=60)
    assert live.returncode == 0 and target.read_bytes() == b"from the other writer"
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "out.bin"]


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


def test_crc32_combine_matches_crc_of_the_concatenation():
    import random
    import zlib

    from sbi_core.multipart import crc32_combine

    rng = random.Random(4)
    a, b = rng.randbytes(70_001), rng.randbytes(3_000_017)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    assert crc32_combine(0, zlib.crc32(b), len(b)) == zlib.crc32(b)


def _uploads(bucket: str) -> list:
    import boto3

    client = boto3.client("s3", endpoint_url=s3.settings().endpoint_url, region_name="us-east-1")
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def _event_like_file(target, rows: int) -> None:
    """An HDF5 file written like an event file: header datasets, then three chunked sample datasets filled
    dataset by dataset, then sealed (raw_crc32 of every dataset)."""
    import h5py
    import numpy as np

    from sbi_core.data import format as fmt

    rng = np.random.default_rng(5)
    with h5py.File(target, "w", libver=("v110", "latest")) as f:
        f.create_dataset("parameters/names", data=np.array([b"a", b"b"], dtype="S256"))
        f.attrs["sampling_benchmark"] = "sm"
        for name in ("nuisance_parameters/kinds", "nuisance_parameters/names", "observables/definitions"):
            f.create_dataset(name, data=np.array([], dtype="S256"))
        widths = {fmt.OBSERVATIONS: 4, fmt.WEIGHTS: 9, fmt.LATENT: 3}
        fmt.create_sample_datasets(f, widths, rows, 16384)
        for name, k in widths.items():
            for start in range(0, rows, 50_000):
                stop = min(rows, start + 50_000)
                f[name][start:stop] = rng.normal(size=(stop - start, k))
        fmt.seal(f, rows)


@pytest.mark.integration
@pytest.mark.slow
def test_streamed_hdf5_holds_a_few_parts_and_matches_a_local_write(s3_bucket, tmp_path, monkeypatch):
    """An event-like HDF5 file streamed to S3: memory stays at a few parts while the object grows to many, the
    bytes equal a local write's (same layout, same ETag on a rerun), and the chunk checksums that `seal` takes
    from the stream equal those read back from the file."""
    import h5py

    from sbi_core.data import format as fmt
    from sbi_core.data.format import SAMPLE_DATASETS, raw_crc32

    # the file has no analysis header: seal's MadMiner summary and notes have nothing to describe
    monkeypatch.setattr(fmt.madminer, "write_sample_summary", lambda *a, **k: None)
    monkeypatch.setattr(fmt.madminer, "madminer_gaps", lambda *a, **k: [])
    monkeypatch.setenv("SBI_S3_PART_SIZE", "5MiB")
    part = 5 << 20
    uri = f"s3://{s3_bucket}/big/events.h5"
    with storage.atomic_stream(uri) as stream:
        _event_like_file(stream, 400_000)
        writer = stream
    with storage.atomic_stream(str(tmp_path / "events.h5")) as fh:
        _event_like_file(fh, 400_000)
    local = (tmp_path / "events.h5").read_bytes()
    assert len(local) > 6 * part, "the file must span many parts for the bound to mean something"
    assert storage.read_bytes(uri) == local
    assert writer.peak_memory <= 7 * part < len(local), f"{writer.peak_memory / 2**20:.0f} MiB held"
    assert writer.parts_uploaded >= len(local) // part - 4, "parts must go out while the file is written"
    with h5py.File(tmp_path / "events.h5") as f:
        for name in SAMPLE_DATASETS:
            assert f[name].attrs["raw_crc32"] == raw_crc32(f[name]), name
    assert _uploads(s3_bucket) == []


@pytest.mark.integration
def test_rewind_into_an_uploaded_part_aborts_the_upload(s3_bucket, monkeypatch):
    """A writer that goes back into bytes already uploaded fails loudly; the upload is aborted: no object, no
    unfinished upload left behind."""
    from sbi_core.multipart import StreamRewindError

    monkeypatch.setenv("SBI_S3_PART_SIZE", "5MiB")
    uri = f"s3://{s3_bucket}/rewind.bin"
    with pytest.raises(StreamRewindError, match="SBI_S3_STREAMING=off"), storage.atomic_stream(uri) as stream:
        for _ in range(4):
            stream.write(bytes(5 << 20))
        assert stream.parts_uploaded >= 1
        stream.seek((5 << 20) + 10)
        stream.write(b"late metadata")
    assert not storage.exists(uri) and _uploads(s3_bucket) == []


@pytest.mark.integration
def test_staging_limit_refuses_a_staged_file_and_a_download_naming_it(s3_bucket, tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    monkeypatch.setenv("SBI_STAGING_DIR", str(staging))
    uri = f"s3://{s3_bucket}/staged/big.bin"
    storage.write_bytes(uri, bytes(3 << 20))
    monkeypatch.setenv("SBI_STAGING_LIMIT", "2MiB")
    with pytest.raises(InputError, match="more than SBI_STAGING_LIMIT"):
        storage.write_bytes(f"s3://{s3_bucket}/staged/other.bin", bytes(3 << 20))
    with pytest.raises(InputError, match=r"reading s3://.*big.bin needs 3.0 MiB .* SBI_STAGING_LIMIT"), \
            storage.local_copy(uri):
        pass
    assert not storage.exists(f"s3://{s3_bucket}/staged/other.bin")
    assert list(staging.iterdir()) == [], "the staging area keeps nothing"


def test_create_if_absent_has_one_winner(tmp_path):
    """Racing creators of one file: exactly one wins, the file holds its bytes whole, no temporary is left."""
    from concurrent.futures import ThreadPoolExecutor

    target = str(tmp_path / "marker.json")
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: storage.create_if_absent(target, f"writer {i}".encode() * 1000), range(16)))
    assert won.count(True) == 1
    assert (tmp_path / "marker.json").read_bytes() == f"writer {won.index(True)}".encode() * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker.json"]


@pytest.mark.integration
def test_create_if_absent_on_s3_is_a_conditional_put(s3_bucket):
    uri = f"s3://{s3_bucket}/runs/r1/tracking/parent.json"
    assert storage.create_if_absent(uri, b"first") is True
    assert storage.create_if_absent(uri, b"second") is False
    assert storage.read_bytes(uri) == b"first"
