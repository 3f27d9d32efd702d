"""Per-event arrays in the NLL's evaluation layout, in blocks: resident up to a memory budget, the rest streamed.

The NLL reads a few numbers per event at every call. At 10^7 events and 100 nuisance parameters that is
8 GB in float32 (the normalisation sample's variations): more than a small node can hold next to
everything else. An `EventStore` keeps the arrays in blocks of equal shape; blocks go to the device while
they fit in `memory_budget` bytes, and the rest are written once to a scratch file and read back at every
pass, the next block read by a background thread while the device computes on the current one. Resident
and streamed blocks have the same shape, so one compiled block function serves both.

What to use when:
- `plan_layout(n, row_bytes, ...)` -> `Layout`: rows per chunk (on CPU, a chunk's arrays stay in cache
  between the two reads of a pass), chunks per block, blocks.
- `StoreWriter(layout, shapes, dtype, budget, ...)`: `add({name: rows})` in event order, then `finish()` ->
  `EventStore`. A block holds each array event-major, (chunks, rows, *shape), as the likelihood files do:
  filling a block is a copy of contiguous rows (no transpose: at 10^7 events x 200 variations a transpose
  cost more than the fit), and a pass reads every chunk's rows in order. Arrays named in `transposed` (a
  few columns, e.g. the B benchmark columns) are held (chunks, *shape, rows) instead, so that products over
  their few columns run along the events (vectorised) rather than over 6-number rows.
- `EventStore.blocks()` yields each block's device arrays, resident first; `EventStore.describe()` says
  how many bytes are resident and how many streamed.

The scratch file is created in `scratch_dir` (default: the system's temporary directory) and unlinked at
once, so it disappears with the process whatever way it ends; its size is the streamed bytes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CPU_CHUNK_BYTES", "EventStore", "Layout", "StoreWriter", "block_nbytes", "plan_layout"]

CPU_CHUNK_BYTES = 1 << 21  # per-event bytes of one chunk on CPU: read twice per pass, the second time from cache
BLOCK_BYTES = 1 << 28  # at most this many bytes per block (the host buffer a block goes through)
_MIN_ROWS = 256


@dataclass(frozen=True)
class Layout:
    """rows per chunk, chunks per block, number of blocks (the last one padded with zero rows)."""

    rows: int
    chunks: int
    blocks: int

    @property
    def capacity(self) -> int:
        return self.rows * self.chunks * self.blocks


def _pow2_floor(x: int) -> int:
    return 1 << max(0, int(x).bit_length() - 1)


def plan_layout(n: int, row_bytes: int, *, chunk_rows: int = 262144, platform: str = "cpu",
                block_bytes: int = BLOCK_BYTES, budget: int | None = None) -> Layout:
    """The layout of n events of `row_bytes` each: chunks of at most chunk_rows (on CPU also at most
    CPU_CHUNK_BYTES, a power of two); blocks of at most block_bytes, and, when a budget is given and the
    arrays exceed it, at most a quarter of it (two blocks are in flight while streaming). A dataset
    smaller than a chunk is padded to a power of two, so datasets of similar size share one compilation."""
    if chunk_rows < 1 or row_bytes < 1:
        raise ValueError(f"chunk_rows and row_bytes must be >= 1, got {chunk_rows}, {row_bytes}")
    if platform == "cpu":
        chunk_rows = min(chunk_rows, max(_MIN_ROWS, _pow2_floor(CPU_CHUNK_BYTES // row_bytes)))
    rows = chunk_rows if n > chunk_rows else min(chunk_rows, max(_MIN_ROWS, 1 << max(0, n - 1).bit_length()))
    chunks = max(1, -(-n // rows))
    limit = block_bytes if budget is None or chunks * rows * row_bytes <= budget else min(block_bytes, budget // 4)
    per_block = max(1, min(chunks, limit // (rows * row_bytes)))
    blocks = -(-chunks // per_block)
    per_block = -(-chunks // blocks)  # spread evenly: the padding is less than one chunk per block
    return Layout(rows=rows, chunks=per_block, blocks=blocks)


class EventStore:
    """Blocks of per-event arrays: `blocks()` yields dicts of device arrays of shape (chunks, rows, ...)."""

    def __init__(self, layout: Layout, shapes: dict[str, tuple[int, ...]], dtype: np.dtype,
                 resident: list[dict[str, Any]], streamed: int, fd: int | None, device: Any,
                 transposed: frozenset[str] = frozenset()) -> None:
        self.layout = layout
        self.shapes = shapes
        self.transposed = transposed
        self.dtype = np.dtype(dtype)
        self._resident = resident
        self._streamed = streamed
        self._fd = fd
        self._device = device
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="event-store") if streamed else None

    @property
    def block_bytes(self) -> int:
        return _block_bytes(self.layout, self.shapes, self.dtype)

    @property
    def n_resident(self) -> int:
        return len(self._resident)

    @property
    def n_streamed(self) -> int:
        return self._streamed

    def describe(self) -> dict[str, Any]:
        return {"blocks": self.layout.blocks, "chunks_per_block": self.layout.chunks, "rows": self.layout.rows,
                "resident_bytes": self.n_resident * self.block_bytes,
                "streamed_bytes": self.n_streamed * self.block_bytes}

    def blocks(self) -> Iterator[dict[str, Any]]:
        """Every block's device arrays (chunks, rows, ...): the resident ones, then the streamed ones (read ahead by
        one block)."""
        yield from self._resident
        if not self._streamed:
            return
        import jax

        assert self._pool is not None and self._fd is not None
        pending = self._pool.submit(self._read, 0)
        for k in range(self._streamed):
            buffer = pending.result()
            if k + 1 < self._streamed:
                pending = self._pool.submit(self._read, k + 1)
            host = _views(buffer, self.layout, self.shapes, self.dtype, self.transposed)
            yield {name: jax.device_put(arr, self._device) for name, arr in host.items()}

    def _read(self, k: int) -> np.ndarray:
        """Block k from the scratch file, into a new buffer: JAX may keep (alias) a buffer it was given, and a
        host-to-device copy may still be reading it after `block_until_ready`, so no buffer is ever reused."""
        buffer = np.empty(self.block_bytes, dtype=np.uint8)
        view = memoryview(buffer)
        offset, done = k * self.block_bytes, 0
        while done < buffer.nbytes:
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"event store scratch file: short read at block {k}")
            done += got
        return buffer

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


def block_nbytes(layout: Layout, shapes: dict[str, tuple[int, ...]], dtype: np.dtype) -> int:
    """Bytes of one block of the named arrays (what a resident block costs against a budget)."""
    return _block_bytes(layout, shapes, dtype)


def _block_bytes(layout: Layout, shapes: dict[str, tuple[int, ...]], dtype: np.dtype) -> int:
    per_row = sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values())
    return layout.chunks * layout.rows * per_row * np.dtype(dtype).itemsize


def _views(buffer: np.ndarray, layout: Layout, shapes: dict[str, tuple[int, ...]], dtype: np.dtype,
           transposed: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """The named arrays (chunks, rows, *shape), or (chunks, *shape, rows) for the `transposed` ones, laid out one
    after the other in a block's byte buffer."""
    out, offset = {}, 0
    itemsize = np.dtype(dtype).itemsize
    for name, shape in shapes.items():
        full = (layout.chunks, *shape, layout.rows) if name in transposed else (layout.chunks, layout.rows, *shape)
        size = int(np.prod(full, dtype=np.int64)) * itemsize
        out[name] = buffer[offset : offset + size].view(dtype).reshape(full)
        offset += size
    return out


class StoreWriter:
    """Fills blocks from event-major rows, in event order; full blocks go to the device or the scratch file."""

    def __init__(self, layout: Layout, shapes: dict[str, tuple[int, ...]], dtype: str | np.dtype, *,
                 budget: int | None = None, scratch_dir: str | None = None, device: Any = None,
                 transposed: frozenset[str] = frozenset()) -> None:
        self.layout, self.shapes, self.dtype = layout, dict(shapes), np.dtype(dtype)
        self.transposed = frozenset(transposed)
        self.budget = budget
        self.scratch_dir = scratch_dir
        self.device = device
        self._buffer = np.zeros(_block_bytes(layout, self.shapes, self.dtype), dtype=np.uint8)
        self._host = _views(self._buffer, layout, self.shapes, self.dtype, self.transposed)
        self._filled = 0  # rows in the current block
        self._resident: list[dict[str, Any]] = []
        self._streamed = 0
        self._fd: int | None = None

    def add(self, rows: dict[str, np.ndarray]) -> None:
        """Append events: {name: (n, *shape)} for every array of the store, n the same for all."""
        n = {name: arr.shape[0] for name, arr in rows.items()}
        if set(n) != set(self.shapes) or len(set(n.values())) != 1:
            raise ValueError(f"StoreWriter.add: expected arrays {sorted(self.shapes)} with one event count, got {n}")
        total = next(iter(n.values()))
        start = 0
        per_block = self.layout.rows * self.layout.chunks
        while start < total:
            take = min(total - start, per_block - self._filled)
            self._copy(rows, start, take)
            start += take
            self._filled += take
            if self._filled == per_block:
                self._flush()

    def _copy(self, rows: dict[str, np.ndarray], start: int, take: int) -> None:
        for name, arr in rows.items():
            if name not in self.transposed:
                flat = self._host[name].reshape(-1, *self.shapes[name])
                flat[self._filled : self._filled + take] = arr[start : start + take]
                continue
            done, r = 0, self.layout.rows
            while done < take:  # a transposed array (a few columns): chunk by chunk
                q, i = divmod(self._filled + done, r)
                m = min(take - done, r - i)
                self._host[name][q, ..., i : i + m] = np.moveaxis(arr[start + done : start + done + m], 0, -1)
                done += m

    def _flush(self) -> None:
        import jax

        if self._filled == 0:
            return
        if self._filled < self.layout.rows * self.layout.chunks:
            self._zero_tail()
        nbytes = self._buffer.nbytes
        fits = self.budget is None or (len(self._resident) + 1) * nbytes <= self.budget
        if fits and not self._streamed:
            self._resident.append({name: jax.device_put(arr, self.device) for name, arr in self._host.items()})
            # a new buffer for the next block: JAX may alias this one, or copy it asynchronously (see _read)
            self._buffer = np.zeros(nbytes, dtype=np.uint8)
            self._host = _views(self._buffer, self.layout, self.shapes, self.dtype, self.transposed)
        else:
            if self._fd is None:
                self._fd = _scratch_file(self.scratch_dir)
            view, done = memoryview(self._buffer), 0
            while done < nbytes:
                done += os.pwrite(self._fd, view[done:], self._streamed * nbytes + done)
            self._streamed += 1
        self._filled = 0

    def _zero_tail(self) -> None:
        q, i = divmod(self._filled, self.layout.rows)
        for name, arr in self._host.items():
            if name in self.transposed:
                arr[q, ..., i:] = 0
                arr[q + 1 :] = 0
            else:
                arr.reshape(-1, *self.shapes[name])[self._filled :] = 0

    def finish(self) -> EventStore:
        """Flush the last (padded) block; the store of every block. The writer is spent afterwards."""
        self._flush()
        expected = self.layout.blocks
        got = len(self._resident) + self._streamed
        if got != expected:
            raise ValueError(f"StoreWriter: {got} blocks written, the layout has {expected}")
        store = EventStore(self.layout, self.shapes, self.dtype, self._resident, self._streamed, self._fd,
                           self.device, self.transposed)
        self._buffer = np.zeros(0, dtype=np.uint8)
        self._host = {}
        return store


def _scratch_file(directory: str | None) -> int:
    """A new file in `directory`, unlinked at once: it lives as long as the descriptor."""
    fd, path = tempfile.mkstemp(prefix="sbi-events-", suffix=".bin", dir=directory)
    os.unlink(path)
    return fd
