"""A seekable file whose bytes become one S3 object through a multipart upload, holding only a few parts in memory.

What to use when: `storage.atomic_stream(uri)` hands one out for an s3:// URI, and h5py writes an HDF5 file
into it (its file-object driver) with no local file at all; `storage.atomic_write` uploads a staged file
through one too. Nothing else should need it directly.

How memory stays bounded: the object is cut into parts of `part_size` bytes. A part is uploaded, and dropped,
once every byte of it has been written, it lies at least `window` parts behind the furthest byte written, and
no write has come back into it after the writer moved on. HDF5 appends chunk data at the end of the file and
comes back only for metadata: the superblock and object headers at the start (part 0, kept until the end),
and each dataset's chunk index, written at close into space allocated when its first chunk was written (the
first write that comes back into such a part "pins" it until the end; until then its unwritten hole keeps it).
So memory holds part 0, a few pinned parts, the window and the uploads in flight, whatever the object's size.
A write or read that needs bytes already uploaded raises `StreamRewindError` (a writer that breaks the pattern:
`SBI_S3_STREAMING=off` stages files locally instead).

Atomic: nothing appears under the key before `publish()` completes the upload (or, for an object that never
outgrew one part, puts it whole); `abort()` aborts it (AbortMultipartUpload). A killed process leaves an
unfinished upload, invisible to readers; the next writer of the same key aborts unfinished uploads of that key
older than `expiry` seconds (`SBI_S3_UPLOAD_EXPIRY`; a bucket lifecycle rule is the site-wide backstop).

Checksums without reading back: the CRC32 of every write is recorded by its extent, so `crc32_of(extents)` gives
the CRC of bytes already uploaded when they were written as those extents (what `data.format.raw_crc32` needs
for HDF5 chunks).
"""

from __future__ import annotations

import asyncio
import bisect
import io
import itertools
import logging
import time
import weakref
import zlib
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from sbi_core import s3
from sbi_core.errors import TransientError

__all__ = ["MultipartWriter", "StreamRewindError", "crc32_combine", "open_stream"]

log = logging.getLogger(__name__)
_streams: weakref.WeakValueDictionary[str, MultipartWriter] = weakref.WeakValueDictionary()
_serial = itertools.count()
_ZEROS = bytes(1 << 20)


class StreamRewindError(RuntimeError):
    """A write or read went back to bytes that were already uploaded (see the module docstring)."""


def open_stream(name: str) -> MultipartWriter | None:
    """The open writer whose `repr` is name (h5py reports a file object's repr as the file's name)."""
    return _streams.get(name)


def _crc_zeros(n: int, start: int) -> int:
    crc = start
    while n > 0:
        k = min(n, len(_ZEROS))
        crc = zlib.crc32(memoryview(_ZEROS)[:k], crc)
        n -= k
    return crc


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32 of A + B from crc32(A), crc32(B) and len(B) (CRC32 is affine: the zero-run terms carry crc1 over)."""
    return _crc_zeros(len2, crc1) ^ _crc_zeros(len2, 0) ^ crc2


class MultipartWriter(io.RawIOBase):
    """Seekable, writable (readable where still in memory) binary file that publishes to `uri` on `publish()`."""

    def __init__(self, fs: Any, uri: str, *, part_size: int, expiry: float, window: int = 1, in_flight: int = 2):
        super().__init__()
        self._fs, self.uri = fs, uri
        self._bucket, self._key = s3.split(uri)
        self._psize, self._window, self._in_flight, self._expiry = part_size, window, in_flight, expiry
        self._parts: dict[int, bytearray] = {}
        self._cover: dict[int, list[list[int]]] = {}  # per part: merged [start, stop) written
        self._pinned: set[int] = set()
        self._pending: dict[int, Future] = {}
        self._etags: dict[int, str] = {}
        self._pos = self._size = self._high = 0
        self._upload_id: str | None = None
        self._offsets: list[int] = []  # sorted starts of recorded writes
        self._crcs: dict[int, tuple[int, int]] = {}  # start -> (length, crc32)
        self._done = False
        self.peak_memory = 0
        self.parts_uploaded = 0
        self._name = f"<sbi-stream {uri} #{next(_serial)}>"
        _streams[self._name] = self

    def __repr__(self) -> str:
        return self._name

    # ------------------------------------------------------------------ io.RawIOBase
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def flush(self) -> None:
        """Nothing to flush: parts go out as they complete; the object appears on publish()."""

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        if n == 0:
            return 0
        start, stop = self._pos, self._pos + n
        self._record_crc(start, n, zlib.crc32(view))
        behind = self._high - self._window * self._psize
        for part in range(start // self._psize, (stop - 1) // self._psize + 1):
            lo, hi = max(start, part * self._psize), min(stop, (part + 1) * self._psize)
            buf = self._buffer(part, "write")
            rel = lo - part * self._psize
            if len(buf) < rel:
                buf.extend(bytes(rel - len(buf)))
            buf[rel:rel + hi - lo] = view[lo - start:hi - start]
            self._covered(part, rel, rel + hi - lo)
            if part > 0 and (part + 1) * self._psize <= behind:
                self._pinned.add(part)  # a write came back here: metadata, rewritten at close
        self._pos = stop
        self._size = max(self._size, stop)
        if stop > self._high:
            self._high = stop
            self._seal_ready()
        self.peak_memory = max(self.peak_memory, self.memory())
        return n

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        stop = min(self._pos + len(view), self._size)
        start = self._pos
        for part in range(start // self._psize, max(start, stop - 1) // self._psize + 1) if stop > start else ():
            lo, hi = max(start, part * self._psize), min(stop, (part + 1) * self._psize)
            buf = self._buffer(part, "read")
            rel = lo - part * self._psize
            chunk = bytes(buf[rel:rel + hi - lo])
            chunk += bytes(hi - lo - len(chunk))  # never written: zeros, as in a file
            view[lo - start:hi - start] = chunk
        self._pos = max(start, stop)
        return max(0, stop - start)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if size < self._size:
            for part in [p for p in (*self._pending, *self._etags) if (p + 1) * self._psize > size]:
                raise StreamRewindError(f"{self.uri}: truncating to {size} bytes cuts part {part}, already uploaded")
            for part in [p for p in self._parts if p * self._psize >= size]:
                del self._parts[part]
            last = size // self._psize
            if last in self._parts:
                del self._parts[last][size - last * self._psize:]
        self._size = size
        return size

    # ------------------------------------------------------------------ bookkeeping
    def memory(self) -> int:
        """Bytes held now: parts in memory and uploads in flight."""
        return sum(len(b) for b in self._parts.values()) + len(self._pending) * self._psize

    def _buffer(self, part: int, what: str) -> bytearray:
        if part in self._pending or part in self._etags:
            raise StreamRewindError(
                f"{self.uri}: a {what} at part {part} ({part * self._psize} bytes in) came after that part was "
                "uploaded; this writer does not suit streaming: set SBI_S3_STREAMING=off to stage it locally")
        return self._parts.setdefault(part, bytearray())

    def _covered(self, part: int, a: int, b: int) -> None:
        spans = self._cover.setdefault(part, [])
        spans.append([a, b])
        spans.sort()
        merged = [spans[0]]
        for s in spans[1:]:
            if s[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], s[1])
            else:
                merged.append(s)
        self._cover[part] = merged

    def _full(self, part: int) -> bool:
        spans = self._cover.get(part, [])
        return len(spans) == 1 and spans[0][0] == 0 and spans[0][1] >= self._psize

    def _record_crc(self, start: int, length: int, crc: int) -> None:
        """Remember crc32 of [start, start + length); forget recorded writes it overlaps."""
        i = bisect.bisect_left(self._offsets, start)
        if i > 0 and self._offsets[i - 1] + self._crcs[self._offsets[i - 1]][0] > start:
            i -= 1
        j = i
        while j < len(self._offsets) and self._offsets[j] < start + length:
            del self._crcs[self._offsets[j]]
            j += 1
        self._offsets[i:j] = [start]
        self._crcs[start] = (length, crc)

    def crc32_of(self, extents: Sequence[tuple[int, int]]) -> int | None:
        """CRC32 of the bytes at these (offset, length) extents, in order, each written by exactly one write;
        None when one was not (then read the bytes instead)."""
        crc = 0
        for offset, length in extents:
            got = self._crcs.get(offset)
            if got is None or got[0] != length:
                return None
            crc = crc32_combine(crc, got[1], length)
        return crc

    # ------------------------------------------------------------------ uploads
    def _seal_ready(self) -> None:
        limit = self._high - self._window * self._psize
        for part in sorted(self._parts):
            if part > 0 and part not in self._pinned and (part + 1) * self._psize <= limit and self._full(part):
                self._upload(part, bytes(self._parts.pop(part)))

    def _s3(self, method: str, **kwargs: Any) -> Any:
        with s3.translated(self.uri, "upload"):
            return self._fs.call_s3(method, Bucket=self._bucket, Key=self._key, **kwargs)

    def _start_upload(self) -> None:
        self._abort_expired()
        self._upload_id = str(self._s3("create_multipart_upload")["UploadId"])

    def _abort_expired(self) -> None:
        """Abort unfinished uploads of this key started more than `expiry` seconds ago (killed writers)."""
        with s3.translated(self.uri, "list uploads"):
            listing = self._fs.call_s3("list_multipart_uploads", Bucket=self._bucket, Prefix=self._key)
        now = datetime.now(UTC)
        for upload in listing.get("Uploads", []):
            started = upload.get("Initiated")
            if upload.get("Key") != self._key or started is None:
                continue
            if (now - started).total_seconds() >= self._expiry:
                log.info("%s: aborting an unfinished upload started %s (older than SBI_S3_UPLOAD_EXPIRY=%gs)",
                         self.uri, started.isoformat(), self._expiry)
                self._s3("abort_multipart_upload", UploadId=upload["UploadId"])

    def _upload(self, part: int, body: bytes) -> None:
        if self._upload_id is None:
            self._start_upload()
        coro = self._fs._call_s3("upload_part", Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                 PartNumber=part + 1, Body=body)
        self._pending[part] = asyncio.run_coroutine_threadsafe(coro, self._fs.loop)
        self.parts_uploaded += 1
        while len(self._pending) > self._in_flight:
            self._wait(min(self._pending))

    def _wait(self, part: int) -> None:
        future = self._pending.pop(part)
        try:
            with s3.translated(self.uri, "upload"):
                self._etags[part] = str(future.result()["ETag"])
        except FileNotFoundError as exc:  # NoSuchUpload: another writer aborted ours as expired
            raise TransientError(f"the upload of {self.uri} was aborted by another writer of the same key "
                                 f"(SBI_S3_UPLOAD_EXPIRY={self._expiry:g}s): retry") from exc

    def _assemble(self, part: int) -> bytes:
        """A retained part's bytes, holes as zeros, cut at the object's size."""
        length = min(self._psize, self._size - part * self._psize)
        buf = self._parts.pop(part, bytearray())
        return bytes(buf[:length]) + bytes(length - min(len(buf), length))

    def publish(self) -> None:
        """Make the object appear under its key, complete (the one moment it becomes visible)."""
        if self._done:
            raise ValueError(f"{self.uri}: already published or aborted")
        t0 = time.perf_counter()
        n_parts = max(1, -(-self._size // self._psize))
        if self._upload_id is None and n_parts == 1:
            body = self._assemble(0)
            self._s3("put_object", Body=body)
        else:
            for part in range(n_parts):
                if part not in self._pending and part not in self._etags:
                    self._upload(part, self._assemble(part))
            for part in sorted(self._pending):
                self._wait(part)
            parts = [{"PartNumber": p + 1, "ETag": self._etags[p]} for p in range(n_parts)]
            try:
                self._s3("complete_multipart_upload", UploadId=self._upload_id, MultipartUpload={"Parts": parts})
            except FileNotFoundError as exc:
                raise TransientError(f"the upload of {self.uri} was aborted by another writer of the same key "
                                     f"(SBI_S3_UPLOAD_EXPIRY={self._expiry:g}s): retry") from exc
        self._done = True
        self._fs.invalidate_cache(f"{self._bucket}/{self._key}")
        log.debug("%s: published %d bytes in %d parts (%.2f s to finish)", self.uri, self._size, n_parts,
                  time.perf_counter() - t0)
        self._parts.clear()

    def abort(self) -> None:
        """Drop everything; abort the multipart upload if one was started. Never raises (it runs on errors)."""
        self._done = True
        self._parts.clear()
        for future in self._pending.values():
            future.cancel()
        for future in self._pending.values():
            try:
                future.result(timeout=60)
            except Exception:  # noqa: BLE001, S110 - the upload is aborted below either way
                pass
        self._pending.clear()
        if self._upload_id is not None:
            try:
                self._s3("abort_multipart_upload", UploadId=self._upload_id)
            except Exception as exc:  # noqa: BLE001 - the original error matters more
                log.warning("%s: could not abort upload %s (%s); the bucket's lifecycle rule or the next writer "
                            "(SBI_S3_UPLOAD_EXPIRY) removes it", self.uri, self._upload_id, exc)
            self._upload_id = None

    def close(self) -> None:
        if not self._done:
            self.abort()
        super().close()
