"""Combine event files (shards into a group, groups into the run's file), streaming chunk by chunk.

Order of work, so that a bad input never leaves anything under the output URI:
1. every input's header is checked (present, readable, sealed, event count as planned, same config
   hash, same chunking) before a byte of output is written;
2. the samples are streamed one chunk at a time into a temporary file: stored chunks are copied as
   they are (no decompression) wherever the input's rows land on an output chunk boundary, and
   decoded/re-encoded otherwise; each input's `raw_crc32` is recomputed on the way and a mismatch
   (a corrupt chunk) aborts the combine naming the input;
3. only a complete, sealed file is published under the output URI (storage.atomic_write).
Peak memory is one chunk, whatever the number of events.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_core import storage
from sbi_core.data.format import (
    SAMPLE_DATASETS,
    EventFileInfo,
    copy_header,
    create_sample_datasets,
    dataset_raw_chunks,
    inspect_event_file,
    seal,
)
from sbi_core.errors import InputError, ShardError


def _check_compatible(infos: list[EventFileInfo]) -> None:
    first = infos[0]
    for info in infos[1:]:
        if info.chunk_rows != first.chunk_rows:
            raise ShardError(info.uri, f"chunk_rows {info.chunk_rows} differs from {first.uri}'s {first.chunk_rows}")
        if info.widths != first.widths:
            raise ShardError(info.uri, f"columns {info.widths} differ from {first.uri}'s {first.widths}")


def _copy_dataset(name: str, sources: list[tuple[EventFileInfo, h5py.File]], dst: h5py.Dataset) -> tuple[int, int]:
    """Stream one dataset of every source into dst; return (chunks copied raw, chunks re-encoded)."""
    rows = dst.chunks[0]
    n_out = dst.shape[0]
    offset = raw = decoded = 0
    for info, f in sources:
        src = f[name]
        crc = 0
        try:
            for start, mask, data in dataset_raw_chunks(src):
                crc = zlib.crc32(data, crc)
                valid = min(rows, info.n_events - start)
                at = offset + start
                if at % rows == 0 and (valid == rows or at + valid == n_out):
                    dst.id.write_direct_chunk((at, 0), data, mask)
                    raw += 1
                else:
                    dst[at : at + valid] = src[start : start + valid]
                    decoded += 1
        except OSError as exc:
            raise ShardError(info.uri, f"corrupt data in {name} ({exc})") from None
        if crc != int(src.attrs["raw_crc32"]):
            raise ShardError(info.uri, f"corrupt: {name} chunk bytes do not match their recorded CRC")
        offset += info.n_events
    return raw, decoded


def combine_files(
    inputs: list[str],
    output: str,
    *,
    config_hash: str,
    expected_events: list[int] | None = None,
    kind: str = "combined",
) -> dict[str, Any]:
    """Combine `inputs` (in order) into `output`; ShardError naming the first bad input."""
    if not inputs:
        raise InputError("combine: no inputs")
    if expected_events is not None and len(expected_events) != len(inputs):
        raise InputError(f"combine: {len(inputs)} inputs but {len(expected_events)} expected counts")
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        paths: list[Path] = []
        infos: list[EventFileInfo] = []
        for i, uri in enumerate(inputs):
            try:
                path = stack.enter_context(storage.local_copy(uri))
            except FileNotFoundError:
                raise ShardError(uri, "missing") from None
            paths.append(path)
            infos.append(
                inspect_event_file(
                    path,
                    uri,
                    config_hash=config_hash,
                    expected_events=None if expected_events is None else expected_events[i],
                )
            )
        _check_compatible(infos)
        n_total = sum(info.n_events for info in infos)
        chunk_rows = infos[0].chunk_rows
        sources = [(info, stack.enter_context(h5py.File(p, "r"))) for info, p in zip(infos, paths, strict=True)]
        stats = {"raw_chunks": 0, "decoded_chunks": 0}
        with storage.atomic_write(output) as tmp, h5py.File(tmp, "w", libver=("v110", "latest")) as out:
            copy_header(sources[0][1], out)
            create_sample_datasets(out, infos[0].widths, n_total, chunk_rows)
            for name in SAMPLE_DATASETS:
                raw, decoded = _copy_dataset(name, sources, out[name])
                stats["raw_chunks"] += raw
                stats["decoded_chunks"] += decoded
            shards = [s for info in infos for s in info.shards]
            out.attrs["kind"] = kind
            out.attrs["shards"] = np.asarray(shards, dtype=np.int64)
            out.attrs["shard_index"] = -1
            out.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
            seal(out, n_generated=sum(info.n_generated for info in infos))
    return {
        "inputs": list(inputs),
        "output": output,
        "n_events": n_total,
        "n_generated": sum(info.n_generated for info in infos),
        **stats,
        "seconds": round(time.perf_counter() - t0, 3),
    }
