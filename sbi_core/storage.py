"""Every input and output is a URI: a local path (or file://) or s3://bucket/key. One helper, used everywhere.

What to use when:
- `atomic_write(uri)`: a context manager yielding a local temporary path to write (h5py, numpy, torch, ...);
  on success the file appears under `uri` in one step (a rename locally, a completed upload on S3), on error
  or kill nothing appears under `uri`. For S3 the file is staged in the staging area (`SBI_STAGING_DIR`),
  then streamed up in parts.
- `atomic_stream(uri)`: the same for large outputs, yielding what h5py (or numpy, torch) can write into: the
  local temporary path, or for S3 a seekable stream that uploads as it is written (`sbi_core.multipart`), so
  the step's local disk does not grow with its output (event files: shards, groups, events).
- `write_text` / `write_json` / `write_bytes`: small files, atomically.
- `local_copy(uri)`: a local path to read (remote objects are downloaded into the staging area).
- `open_for_inspection(uri)` / `open_read(uri)`: a path or a file object to read a remote file in place (an
  HDF5 header; combine's raw chunks), without downloading it; `open_binary(uri)` always a file object (LHE).
- `read_text` / `read_json` / `exists` / `join` / `remove` / `size`.
- `create_if_absent(uri, data)`: a small file written only if absent, atomically (one of racing writers wins).
- `check_within_root(uri, what)`: refuse a run outside SBI_ARTIFACT_ROOT (the CLI checks every --run it writes).

Temporaries: a killed writer's temporary (beside the target locally, in the staging area for S3) is removed
by the next writer, but only when provably abandoned: each lives in a directory its writer holds an flock on
(`sbi_core.temporaries`), so two writers of one file at once never delete each other's.

S3: settings from the environment (`sbi_core.s3`: the usual AWS_* variables, `SBI_S3_ENDPOINT_URL` or
`AWS_ENDPOINT_URL` for an S3-compatible store such as MinIO, timeouts and retries); the first access to a
bucket checks it, and a wrong endpoint, credentials, bucket or permission is an InputError (exit 2) naming the
setting; a store that keeps timing out or failing is a TransientError (exit 1, retried).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sbi_core import temporaries
from sbi_core.errors import InputError

TMP_MARK = ".sbi-tmp-"


def is_remote(uri: str) -> bool:
    """True for object-store URIs (anything with a scheme other than file://)."""
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://")).expanduser()


def normalize(uri: str) -> str:
    """Absolute local path, or the URI unchanged when remote."""
    return uri.rstrip("/") if is_remote(uri) else str(_local(uri).resolve())


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI with '/' (no OS-specific separators for remote URIs)."""
    if not is_remote(base):
        return str(_local(base).joinpath(*parts))
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def check_within_root(uri: str, what: str) -> None:
    """InputError unless uri lies under SBI_ARTIFACT_ROOT (when it is set; `SBI_WRITE_OUTSIDE_ROOT=1` allows any
    place) and, for object stores, has no '.' or '..' segment (S3 would store them as names). Steps call it on
    the run they write, so `--run ../../x` or `output: ../../x` cannot escape the artifact root."""
    if is_remote(uri):
        segments = uri.split("://", 1)[1].split("/")
        if any(seg in (".", "..") for seg in segments):
            raise InputError(f"{what} {uri}: '.' and '..' are not allowed in an object-store URI")
    root = os.environ.get("SBI_ARTIFACT_ROOT", "").strip()
    if not root or os.environ.get("SBI_WRITE_OUTSIDE_ROOT", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    base, target = normalize(root), normalize(uri)
    if target != base and not target.startswith(base.rstrip("/") + "/"):
        raise InputError(f"{what} {target} is outside the artifact root SBI_ARTIFACT_ROOT={base}: write runs under "
                         "it (or set SBI_WRITE_OUTSIDE_ROOT=1 to allow any place)")


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a remote URI, its bucket checked on first use (`sbi_core.s3`)."""
    protocol = uri.split("://", 1)[0]
    if protocol not in ("s3", "s3a"):
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        return fs, path
    from sbi_core import s3

    fs = s3.filesystem()
    s3.check_bucket(fs, uri)
    return fs, uri.split("://", 1)[1]


@contextlib.contextmanager
def _remote(uri: str, action: str) -> Iterator[tuple[Any, str]]:
    """The filesystem and path of a remote URI, S3 failures turned into InputError / TransientError."""
    from sbi_core import s3

    fs, path = filesystem(uri)
    with s3.translated(uri, action):
        yield fs, path


def exists(uri: str) -> bool:
    """Whether a file exists under uri."""
    if not is_remote(uri):
        return _local(uri).exists()
    with _remote(uri, "look up") as (fs, path):
        return bool(fs.exists(path))


def read_bytes(uri: str) -> bytes:
    """Whole content of a (small) file. FileNotFoundError if absent."""
    if not is_remote(uri):
        return _local(uri).read_bytes()
    with _remote(uri, "read") as (fs, path), fs.open(path, "rb") as fh:
        return bytes(fh.read())


def read_text(uri: str) -> str:
    """Whole content of a (small) text file, UTF-8."""
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    """Parse a JSON file."""
    return json.loads(read_text(uri))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(uri: str) -> list[str]:
    """Delete abandoned temporaries of uri (its killed writers' leftovers; never a live writer's). For a remote
    uri: the abandoned files of the staging area."""
    if is_remote(uri):
        return temporaries.remove_stale(temporaries.staging_dir(), temporaries.STAGING_PREFIX)
    target = _local(uri)
    return temporaries.remove_stale(target.parent, f".{target.name}{TMP_MARK}")


def _publish_local(tmp: Path, target: Path, uri: str) -> None:
    if not tmp.exists():
        raise RuntimeError(f"atomic_write({uri}): nothing was written to the temporary file")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(uri: str) -> Iterator[Path]:
    """Yield a local temporary path; publish it under uri only if the block succeeds."""
    if is_remote(uri):
        with _staged(uri) as tmp:
            yield tmp
        return
    target = _local(uri)
    remove_stale_temporaries(uri)
    tmp = temporaries.Temporary.create(target.parent, f".{target.name}{TMP_MARK}")
    try:
        yield tmp.path(target.name)
        _publish_local(tmp.path(target.name), target, uri)
    finally:
        tmp.release()


@contextlib.contextmanager
def _staged(uri: str) -> Iterator[Path]:
    """A file in the staging area, uploaded to uri when the block succeeds, removed in every case."""
    from sbi_core import s3

    temporaries.remove_stale(temporaries.staging_dir(), temporaries.STAGING_PREFIX)
    tmp = temporaries.Temporary.create(temporaries.staging_dir(), temporaries.STAGING_PREFIX)
    local = tmp.path(uri.rstrip("/").rsplit("/", 1)[-1])
    try:
        yield local
        if not local.exists():
            raise RuntimeError(f"atomic_write({uri}): nothing was written to the temporary file")
        temporaries.check_staged(local.stat().st_size, f"writing {uri}")
        with _upload_stream(uri, s3.settings().part_size) as out, open(local, "rb") as src:
            shutil.copyfileobj(src, out, s3.settings().part_size)
    finally:
        tmp.release()


@contextlib.contextmanager
def _upload_stream(uri: str, part_size: int) -> Iterator[Any]:
    """A MultipartWriter for uri, published when the block succeeds and aborted otherwise."""
    from sbi_core import s3
    from sbi_core.multipart import MultipartWriter

    fs, _ = filesystem(uri)
    writer = MultipartWriter(fs, uri, part_size=part_size, expiry=s3.settings().upload_expiry)
    try:
        yield writer
        writer.publish()
    finally:
        writer.close()  # aborts the upload unless it was published


@contextlib.contextmanager
def atomic_stream(uri: str) -> Iterator[BinaryIO | Path]:
    """Like atomic_write, for large outputs: a seekable binary file to write (h5py.File(it, "w") takes it) that
    is a local temporary file, or for S3 an upload stream holding a few parts in memory and no local file. Both
    are file objects, so HDF5 lays out the same bytes either way. `SBI_S3_STREAMING=off`: a staged local path."""
    if not is_remote(uri):
        with atomic_write(uri) as tmp, open(tmp, "w+b") as fh:
            yield fh  # a file object here too: HDF5 lays out a file the same way for both (identical bytes)
        return
    from sbi_core import s3

    settings = s3.settings()
    if not settings.streaming:
        with _staged(uri) as tmp:
            yield tmp
        return
    with _upload_stream(uri, settings.part_size) as stream:
        yield stream


def open_stream(name: str) -> Any:
    """The upload stream an h5py file was opened on (h5py names a file object's file by its repr), or None:
    lets `data.format.raw_crc32` checksum chunks that were already uploaded."""
    from sbi_core.multipart import open_stream as find

    return find(name)


def create_if_absent(uri: str, data: bytes) -> bool:
    """Write a small file only if nothing exists under uri, atomically: True if this call created it, False if it
    was there (then nothing is written). Two processes racing on one uri: exactly one gets True. Locally a hard
    link of a complete temporary (link fails if the name exists); on S3 a conditional PUT (If-None-Match: *)."""
    if not is_remote(uri):
        target = _local(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporaries.Temporary.create(target.parent, f".{target.name}{TMP_MARK}")
        try:
            path = tmp.path(target.name)
            path.write_bytes(data)
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            try:
                os.link(path, target)
            except FileExistsError:
                return False
            _fsync_dir(target.parent)
            return True
        finally:
            tmp.release()
    from sbi_core import s3

    bucket, key = s3.split(uri)
    with _remote(uri, "create") as (fs, _):
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except (FileExistsError, OSError) as exc:
            if isinstance(exc, FileExistsError) or "PreconditionFailed" in repr(exc.__cause__ or exc) \
                    or "ConditionalRequestConflict" in repr(exc.__cause__ or exc):
                return False
            raise
        finally:
            fs.invalidate_cache(f"{bucket}/{key}")
    return True


def write_bytes(uri: str, data: bytes) -> None:
    """Write a small file atomically."""
    with atomic_write(uri) as tmp:
        tmp.write_bytes(data)


def write_text(uri: str, text: str) -> None:
    """Write a small text file atomically (UTF-8)."""
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj: Any) -> None:
    """Write JSON atomically, pretty-printed with sorted keys (stable bytes for idempotent reruns)."""
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _existing_local(uri: str) -> Path:
    path = _local(uri)
    if not path.exists():
        raise FileNotFoundError(uri)
    return path


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local path holding uri's content for the duration of the block (no copy for local files; remote
    objects are downloaded into the staging area, checked against SBI_STAGING_LIMIT first when it is set)."""
    if not is_remote(uri):
        yield _existing_local(uri)
        return
    with _remote(uri, "download") as (fs, path):
        if temporaries.staging_limit() is not None:
            try:
                temporaries.check_staged(int(fs.size(path)), f"reading {uri}")
            except FileNotFoundError:
                raise FileNotFoundError(uri) from None
    temporaries.remove_stale(temporaries.staging_dir(), temporaries.STAGING_PREFIX)
    tmp = temporaries.Temporary.create(temporaries.staging_dir(), temporaries.STAGING_PREFIX)
    try:
        local = tmp.path(path.rsplit("/", 1)[-1])
        with _remote(uri, "download") as (fs, path):
            try:
                fs.get_file(path, str(local))
            except FileNotFoundError:
                raise FileNotFoundError(uri) from None
        yield local
    finally:
        tmp.release()


class _RemoteReader(io.RawIOBase):
    """A remote file read in place, its S3 failures turned into InputError / TransientError (h5py passes a
    file object's exceptions through: a timeout must not look like a corrupt file)."""

    def __init__(self, handle: Any, uri: str) -> None:
        super().__init__()
        self._h, self.uri = handle, uri

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _call(self, fn: Any, *args: Any) -> Any:
        from sbi_core import s3

        with s3.translated(self.uri, "read"):
            return fn(*args)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._call(self._h.read, len(view))
        view[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return bytes(self._call(self._h.read, size))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._call(self._h.seek, offset, whence))

    def tell(self) -> int:
        return int(self._h.tell())

    def close(self) -> None:
        self._h.close()
        super().close()


def open_binary(uri: str, *, block_size: int = 8 << 20) -> BinaryIO:
    """A readable binary file object over a local file or a remote object (read in place, ahead in blocks of
    block_size; S3 failures raised as InputError / TransientError). The caller closes it. FileNotFoundError if
    absent."""
    if not is_remote(uri):
        return open(_existing_local(uri), "rb")  # noqa: SIM115 - the caller closes it
    with _remote(uri, "open") as (fs, path):
        try:
            handle = fs.open(path, "rb", block_size=block_size)
        except FileNotFoundError:
            raise FileNotFoundError(uri) from None
    return _RemoteReader(handle, uri)  # type: ignore[return-value]


@contextlib.contextmanager
def open_read(uri: str, *, block_size: int = 8 << 20) -> Iterator[Path | BinaryIO]:
    """A local path, or a read-only file object over a remote object (`open_binary`): h5py, gzip and pylhe read
    it in place, without a download. FileNotFoundError if absent."""
    if not is_remote(uri):
        yield _existing_local(uri)
        return
    with open_binary(uri, block_size=block_size) as reader:
        yield reader


@contextlib.contextmanager
def open_for_inspection(uri: str) -> Iterator[Path | BinaryIO]:
    """open_read with small blocks: h5py reads just the header ranges it needs, so checking a remote file's
    header does not download it. FileNotFoundError if absent."""
    with open_read(uri, block_size=1 << 20) as handle:
        yield handle


def remove(uri: str) -> None:
    """Delete a file if it exists."""
    if not is_remote(uri):
        with contextlib.suppress(FileNotFoundError):
            _local(uri).unlink()
        return
    with _remote(uri, "delete") as (fs, path):
        if fs.exists(path):
            fs.rm(path)
        fs.invalidate_cache(path)


def size(uri: str) -> int:
    """Size in bytes."""
    if not is_remote(uri):
        return _local(uri).stat().st_size
    with _remote(uri, "look up") as (fs, path):
        return int(fs.size(path))
