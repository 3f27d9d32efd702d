"""Combine event files (shards into a group, groups into the run's file), streaming chunk by chunk.

Order of work, so that a bad input never leaves anything under the output URI:
1. every input's header is checked (present, readable, sealed, event count as planned, same config
   hash, same chunking) before a byte of output is written; remote headers are read in place;
2. the inputs are streamed one at a time (one open input, remote ones read in place), one chunk
   at a time, into the output stream (a temporary file, or an upload to S3): stored chunks are copied as they are (no decompression)
   wherever the input's rows land on an output chunk boundary, and decoded/re-encoded otherwise;
   each input's `raw_crc32` is recomputed on the way and a mismatch (a corrupt chunk) aborts the
   combine naming the input;
3. only a complete, sealed file is published under the output URI (storage.atomic_stream).
Peak memory is about one chunk (plus a few upload parts on S3), and open files two, whatever the number of
events or inputs; on S3 nothing is written to local disk.
"""

from __future__ import annotations

import contextlib
import time
import zlib
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


def _copy_input(info: EventFileInfo, src: h5py.File, out: h5py.File, offset: int) -> tuple[int, int]:
    """Copy one input's sample datasets into out at row offset; return (chunks copied raw, re-encoded)."""
    raw = decoded = 0
    for name in SAMPLE_DATASETS:
        ds, dst = src[name], out[name]
        rows, n_out = dst.chunks[0], dst.shape[0]
        crc = 0
        try:
            for start, mask, data in dataset_raw_chunks(ds):
                crc = zlib.crc32(data, crc)
                valid = min(rows, info.n_events - start)
                at = offset + start
                if at % rows == 0 and (valid == rows or at + valid == n_out):
                    dst.id.write_direct_chunk((at, 0), data, mask)
                    raw += 1
                else:
                    dst[at : at + valid] = ds[start : start + valid]
                    decoded += 1
        except OSError as exc:
            raise ShardError(info.uri, f"corrupt data in {name} ({exc})") from None
        if crc != int(ds.attrs["raw_crc32"]):
            raise ShardError(info.uri, f"corrupt: {name} chunk bytes do not match their recorded CRC")
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
    infos: list[EventFileInfo] = []
    for i, uri in enumerate(inputs):
        expected = None if expected_events is None else expected_events[i]
        try:
            with storage.open_for_inspection(uri) as handle:
                infos.append(inspect_event_file(handle, uri, config_hash=config_hash, expected_events=expected))
        except FileNotFoundError:
            raise ShardError(uri, "missing") from None
    _check_compatible(infos)
    n_total = sum(info.n_events for info in infos)
    stats = {"raw_chunks": 0, "decoded_chunks": 0}
    with storage.atomic_stream(output) as tmp, h5py.File(tmp, "w", libver=("v110", "latest")) as out:
        offset = 0
        for k, info in enumerate(infos):
            with contextlib.ExitStack() as stack:
                try:
                    path = stack.enter_context(storage.open_read(info.uri))
                except FileNotFoundError:
                    raise ShardError(info.uri, "disappeared after it was checked") from None
                src = stack.enter_context(h5py.File(path, "r"))
                if k == 0:
                    copy_header(src, out)
                    create_sample_datasets(out, info.widths, n_total, info.chunk_rows)
                raw, decoded = _copy_input(info, src, out, offset)
            stats["raw_chunks"] += raw
            stats["decoded_chunks"] += decoded
            offset += info.n_events
        out.attrs["kind"] = kind
        out.attrs["shards"] = np.asarray([s for info in infos for s in info.shards], dtype=np.int64)
        out.attrs["shard_index"] = -1
        seal(out, n_generated=sum(info.n_generated for info in infos))
    return {
        "inputs": list(inputs),
        "output": output,
        "n_events": n_total,
        "n_generated": sum(info.n_generated for info in infos),
        **stats,
        "seconds": round(time.perf_counter() - t0, 3),
    }
