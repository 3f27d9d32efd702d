"""storage: uploads to an S3 emulator (moto, started here on 127.0.0.1) against a plain s3fs put of the same bytes,
and the peak local disk and memory of steps that write to S3 against the size of what they write.

Figures:
- `upload`: an event file's bytes written through `storage.atomic_stream` (the multipart writer event files
  stream through, SBI_S3_PART_SIZE parts, two in flight) vs `s3fs.put_file` of the same bytes from a local
  file (its defaults: 50 MiB parts, ten at once; memory up to 500 MiB); `upload, same parts`: against
  put_file with our part size. Ratio = our time / s3fs's; both MB/s are printed. The emulator is one Python
  process: each part costs it a fixed overhead, so bigger parts win there (SBI_S3_PART_SIZE trades memory for
  fewer requests).
- `staged upload`: `storage.write_bytes` (staged in the staging area, then uploaded in parts) vs put_file with
  the same parts.
- `disk <step>`: generate, combine and sample on an S3 run, the staging area (also the temporary directory)
  sampled every 2 ms: peak local disk / bytes the step wrote (0 for the streamed event files; sample stages the
  events file it reads and its training sets), and the multipart writer's peak memory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import Figure, emit, repeat

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "benchmark.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Moto:
    def __enter__(self) -> str:
        port = _free_port()
        exe = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.2)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


class _DiskWatch:
    """Peak total size of the files under root, sampled every 2 ms."""

    def __init__(self, root: Path) -> None:
        self.root, self.peak = root, 0
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
            time.sleep(0.002)

    def __enter__(self) -> _DiskWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _written(bucket: str, prefix: str) -> dict[str, int]:
    import boto3

    from sbi_core import s3

    client = boto3.client("s3", endpoint_url=s3.settings().endpoint_url, region_name="us-east-1")
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update({o["Key"]: int(o["Size"]) for o in page.get("Contents", [])})
    return out


def _peaks() -> list[int]:
    """Peak memory of every multipart writer published from now on (recorded by wrapping publish)."""
    from sbi_core import multipart

    peaks: list[int] = []
    original = multipart.MultipartWriter.publish

    def publish(self: Any) -> None:
        original(self)
        peaks.append(self.peak_memory)
    multipart.MultipartWriter.publish = publish  # type: ignore[method-assign]
    return peaks


def _upload_figures(bucket: str, shard: bytes, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    from sbi_core import s3, storage

    fs, _ = storage.filesystem(f"s3://{bucket}/x")
    local = tmp / "shard.h5"
    local.write_bytes(shard)
    mb = len(shard) / 1e6

    def ours() -> None:
        with storage.atomic_stream(f"s3://{bucket}/upload/ours.h5") as out:
            for i in range(0, len(shard), 1 << 20):
                out.write(shard[i:i + (1 << 20)])

    def staged() -> None:
        storage.write_bytes(f"s3://{bucket}/upload/staged.h5", shard)

    part = s3.settings().part_size

    def plain() -> None:
        fs.put_file(str(local), f"{bucket}/upload/plain.h5")

    def same_parts() -> None:
        fs.put_file(str(local), f"{bucket}/upload/same.h5", chunksize=part)

    records = []
    base, base_same = repeat(plain, repeats), repeat(same_parts, repeats)
    ours_times = repeat(ours, repeats)
    for name, times, label, baseline, base_label in (
            ("upload", ours_times, "atomic_stream", base, "s3fs put_file (50 MiB parts, 10 at once)"),
            ("upload, same parts", ours_times, "atomic_stream", base_same,
             f"s3fs put_file ({part >> 20} MiB parts)"),
            ("staged upload", repeat(staged, repeats), "write_bytes (staged)", base_same,
             f"s3fs put_file ({part >> 20} MiB parts)")):
        fig = Figure(name=f"storage: {name}", sizes={"MB": round(mb, 1), "part_MiB": part >> 20}, ours=times,
                     baseline=baseline, ours_label=label, baseline_label=base_label, target="ratio <= 1.5",
                     extra={"ours_MBps": round(mb / min(times), 1), "baseline_MBps": round(mb / min(baseline), 1)})
        records.append(fig.record())
        emit(records[-1])
    return records


def _disk_figures(bucket: str, events: int, staging: Path) -> list[dict[str, Any]]:
    from sbi_core import steps
    from sbi_core.ml.samples import sample

    peaks = _peaks()
    run = f"s3://{bucket}/disk-{uuid.uuid4().hex[:6]}"
    prefix = run.split("/", 3)[3] + "/"
    plan = steps.configure(str(CONFIG), run, [f"generation.events={events}", "generation.shards=2",
                                              "generation.shards_per_group=2", "generation.seed=9"])
    records = []
    for name, fn in (("generate", lambda: steps.generate(run, plan["shards"])),
                     ("combine", lambda: [steps.combine(run, 0), steps.combine(run, None)]),
                     ("sample", lambda: sample(run, "alices"))):
        before = _written(bucket, prefix)
        del peaks[:]
        with _DiskWatch(staging) as watch:
            t0 = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t0
        new = {k: v for k, v in _written(bucket, prefix).items() if k not in before}
        out_bytes = sum(new.values())
        record = {"name": f"storage: disk {name}", "sizes": {"events": events, "files": len(new)},
                  "output_MB": round(out_bytes / 1e6, 2), "largest_output_MB": round(max(new.values()) / 1e6, 2),
                  "peak_local_disk_MB": round(watch.peak / 1e6, 2),
                  "ratio": round(watch.peak / out_bytes, 3), "target": "generate, combine: 0 (streamed)",
                  "peak_stream_memory_MB": round(max(peaks, default=0) / 1e6, 1), "seconds": round(seconds, 2)}
        records.append(record)
        emit(record)
    return records


def run(quick: bool) -> list[dict[str, Any]]:
    events, repeats = (100_000, 3) if quick else (1_000_000, 5)
    saved = {k: os.environ.get(k) for k in ("SBI_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION", "SBI_STAGING_DIR", "TMPDIR", "SBI_TRACKING")}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp, _Moto() as endpoint:
        staging = Path(tmp) / "staging"
        staging.mkdir()
        os.environ.update({"SBI_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                           "SBI_STAGING_DIR": str(staging), "TMPDIR": str(staging), "SBI_TRACKING": "off"})
        tempfile.tempdir = str(staging)
        try:
            import boto3

            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
            records = _disk_figures("bench", events, staging)
            from sbi_core import storage

            run_prefix = next(k for k in _written("bench", "disk-") if k.endswith("shards/shard-00000.h5"))
            shard = storage.read_bytes(f"s3://bench/{run_prefix}")
            records += _upload_figures("bench", shard, repeats, Path(tmp))
        finally:
            tempfile.tempdir = None
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return records
