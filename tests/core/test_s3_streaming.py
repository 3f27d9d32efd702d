"""Steps on S3 (moto server on 127.0.0.1): outputs larger than the local staging limit stream with bounded local
disk, a killed upload leaves nothing behind once rerun, and a rerun gives byte-identical objects (same ETags)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
import pytest

from sbi_core import s3, steps, storage
from sbi_core.errors import InputError
from tests.conftest import BENCHMARK_CONFIG, REPO, SMALL


def _client():
    return boto3.client("s3", endpoint_url=s3.settings().endpoint_url, region_name="us-east-1")


def _objects(bucket: str, prefix: str) -> dict[str, tuple[str, str]]:
    """key -> (ETag, sha256 of the bytes) of every object under prefix."""
    client, out = _client(), {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"][len(prefix):]] = (obj["ETag"], hashlib.sha256(body).hexdigest())
    return out


class DiskWatch:
    """Largest total size of the files under `root`, sampled every few milliseconds while the block runs."""

    def __init__(self, root: Path) -> None:
        self.root, self.peak, self.samples = root, 0, 0
        self._stop = threading.Event()

    def _used(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used())
            self.samples += 1
            time.sleep(0.002)

    def __enter__(self) -> DiskWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.integration
def test_outputs_larger_than_the_staging_limit_stream_with_bounded_local_disk(s3_bucket, tmp_path, monkeypatch):
    """generate and combine on S3 with a 1 MiB staging limit: their event files are several MiB, nothing of them
    touches local disk (measured: the staging area, which is also the temporary directory, every 2 ms), and a
    file that must be staged whole (a download for reading) is refused naming the limit instead of filling it."""
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setenv("SBI_STAGING_DIR", str(staging))
    monkeypatch.setenv("SBI_STAGING_LIMIT", "1MiB")
    monkeypatch.setenv("SBI_S3_PART_SIZE", "5MiB")
    monkeypatch.setenv("TMPDIR", str(staging))
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    run = f"s3://{s3_bucket}/bounded"
    plan = steps.configure(str(BENCHMARK_CONFIG), run, ["generation.events=80000", "generation.shards=2",
                                                        "generation.shards_per_group=2", "generation.seed=5"])
    with DiskWatch(staging) as watch:
        steps.generate(run, plan["shards"])
        steps.combine(run, 0)
    sizes = {name: storage.size(f"{run}/{name}") for name in ("shards/shard-00000.h5", "groups/group-0000.h5")}
    assert min(sizes.values()) > 2 * (1 << 20), f"outputs must exceed the 1 MiB limit: {sizes}"
    assert watch.samples > 10 and watch.peak <= 1 << 20, f"peak local disk {watch.peak} bytes"
    with pytest.raises(InputError, match="SBI_STAGING_LIMIT"), storage.local_copy(f"{run}/groups/group-0000.h5"):
        pass
    assert list(staging.iterdir()) == []


_WRITER = """
import os, sys, time
from sbi_core import multipart, storage
uri, mode = sys.argv[1], sys.argv[2]
if os.environ.get("HOLD_PUBLISH"):  # the killed writer never completes its upload, however fast its parts went
    multipart.MultipartWriter.publish = lambda self: time.sleep(3600)
data = os.urandom(0) or bytes(range(256)) * (64 * 1024)  # 16 MiB, the same every run
opener = storage.atomic_stream if mode == "stream" else storage.atomic_write
with opener(uri) as out:
    if mode == "stream":
        for i in range(0, len(data), 1 << 20):
            out.write(data[i:i + (1 << 20)])
    else:
        out.write_bytes(data)
"""


def _unfinished(bucket: str) -> list[dict]:
    return _client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def _has_part(bucket: str) -> bool:
    client = _client()
    return any(client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts")
               for u in _unfinished(bucket))


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["stream", "staged"])
def test_killed_upload_leaves_no_object_and_no_staging_file_after_the_rerun(s3_bucket, tmp_path, mode):
    """SIGKILL once the first part of the upload has reached the store (observed through ListParts): nothing
    appears under the key; the rerun aborts the killed upload (SBI_S3_UPLOAD_EXPIRY=0 declares it abandoned),
    removes the killed writer's staging file, and publishes the object."""
    staging = tmp_path / "staging"
    env = {**os.environ, "SBI_STAGING_DIR": str(staging), "SBI_S3_PART_SIZE": "5MiB", "SBI_S3_UPLOAD_EXPIRY": "0",
           "PYTHONPATH": str(REPO)}
    uri = f"s3://{s3_bucket}/killed/{mode}.bin"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, uri, mode], env={**env, "HOLD_PUBLISH": "1"}, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not _has_part(s3_bucket):
            assert proc.poll() is None, "the writer finished before a part was observed"
            assert time.monotonic() < deadline, "no part was uploaded within 120 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not storage.exists(uri)
    assert len(_unfinished(s3_bucket)) == 1
    left = list(staging.iterdir()) if staging.exists() else []
    assert len(left) == (1 if mode == "staged" else 0), left  # the staged file, abandoned by the kill
    subprocess.run([sys.executable, "-c", _WRITER, uri, mode], env=env, cwd=REPO, check=True, timeout=300)
    assert storage.read_bytes(uri) == bytes(range(256)) * (64 * 1024)
    assert _unfinished(s3_bucket) == []
    assert list(staging.iterdir()) == [] if staging.exists() else True


def _pipeline(run: str) -> None:
    """configure, generate, combine, one method's training sets, the exact likelihood arrays of the dataset."""
    from sbi_core.inference import steps as inference
    from sbi_core.ml.samples import sample

    plan = steps.configure(str(BENCHMARK_CONFIG), run, SMALL)
    steps.generate(run, plan["shards"])
    for g in range(plan["n_groups"]):
        steps.combine(run, g)
    steps.combine(run, None)
    sample(run, "alices")
    batches = inference.dataset(run)["likelihood_batches"]
    inference.likelihood(run, [int(b) for b in batches])
    inference.likelihood_join(run)


@pytest.mark.integration
@pytest.mark.slow
def test_rerun_gives_byte_identical_objects_with_the_same_etags(s3_bucket):
    """The same config and seed, run again under the same URI after everything was deleted: every object (event
    shards, groups, events, training sets, likelihood arrays, the JSON files) has the same bytes and ETag."""
    run = f"s3://{s3_bucket}/identical"
    prefix = "identical/"
    _pipeline(run)
    first = _objects(s3_bucket, prefix)
    kinds = {"shards/", "groups/", "events.h5", "samples/alices/theta/nominal/train.h5", "likelihood/exact/"}
    assert all(any(k.startswith(kind) for k in first) for kind in kinds), sorted(first)
    client = _client()
    for key in first:
        client.delete_object(Bucket=s3_bucket, Key=prefix + key)
    storage.filesystem(run)[0].invalidate_cache()
    _pipeline(run)
    second = _objects(s3_bucket, prefix)
    assert second.keys() == first.keys()
    differ = sorted(k for k in first if first[k] != second[k])
    assert not differ, f"rerun changed {differ}"
