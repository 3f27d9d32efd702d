"""Every input and output is a URI: a local path (or file://) or s3://bucket/key. One helper, used everywhere.

What to use when:
- `atomic_write(uri)`: a context manager yielding a local temporary path to write (h5py, numpy, ...);
  on success the file appears under `uri` in one step (rename locally, a completed upload on S3),
  on error or kill nothing appears under `uri`. Stale temporaries from a killed earlier attempt
  at the same `uri` are removed first, so a rerun leaves none behind.
- `write_text` / `write_json`: small files, atomically.
- `local_copy(uri)`: a local path to read (remote objects are downloaded to a temporary file).
- `open_for_inspection(uri)`: a path or file object to read a little of a file (an HDF5 header) in place.
- `read_text` / `read_json` / `exists` / `join` / `remove`.

S3 settings come from the environment: the usual AWS_* variables, and `SBI_S3_ENDPOINT_URL`
(or `AWS_ENDPOINT_URL`) for an S3-compatible store such as MinIO.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

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


def _s3_options() -> dict[str, Any]:
    endpoint = os.environ.get("SBI_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a remote URI. Imported lazily: s3fs is slow to import."""
    import fsspec

    protocol = uri.split("://", 1)[0]
    options = _s3_options() if protocol in ("s3", "s3a") else {}
    fs, path = fsspec.core.url_to_fs(uri, **options)
    return fs, path


def exists(uri: str) -> bool:
    """Whether a file exists under uri."""
    if not is_remote(uri):
        return _local(uri).exists()
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


def read_bytes(uri: str) -> bytes:
    """Whole content of a (small) file. FileNotFoundError if absent."""
    if not is_remote(uri):
        return _local(uri).read_bytes()
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as fh:
        return fh.read()


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
    """Delete leftovers of killed writes to uri (local only: S3 uploads are invisible until complete)."""
    if is_remote(uri):
        return []
    target = _local(uri)
    removed = []
    if target.parent.is_dir():
        for tmp in target.parent.glob(f".{target.name}{TMP_MARK}*"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(str(tmp))
    return removed


@contextlib.contextmanager
def atomic_write(uri: str) -> Iterator[Path]:
    """Yield a local temporary path; publish it under uri only if the block succeeds."""
    remote = is_remote(uri)
    if remote:
        tmpdir = Path(tempfile.mkdtemp(prefix="sbi-upload-"))
        tmp = tmpdir / Path(uri.rsplit("/", 1)[-1])
    else:
        target = _local(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(uri)
        tmp = target.parent / f".{target.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"atomic_write({uri}): nothing was written to the temporary file")
        if remote:
            fs, path = filesystem(uri)
            fs.put_file(str(tmp), path)  # S3: the object appears only when the upload completes
        else:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if remote:
            with contextlib.suppress(OSError):
                tmpdir.rmdir()


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
    """A local path holding uri's content for the duration of the block (no copy for local files)."""
    if not is_remote(uri):
        yield _existing_local(uri)
        return
    fs, path = filesystem(uri)
    with tempfile.TemporaryDirectory(prefix="sbi-download-") as tmpdir:
        local = Path(tmpdir) / path.rsplit("/", 1)[-1]
        try:
            fs.get_file(path, str(local))
        except FileNotFoundError:
            raise FileNotFoundError(uri) from None
        yield local


@contextlib.contextmanager
def open_for_inspection(uri: str) -> Iterator[Path | BinaryIO]:
    """A local path, or a read-only file object over a remote object: h5py reads just the header
    ranges it needs, so checking a remote file's header does not download it. FileNotFoundError if absent."""
    if not is_remote(uri):
        yield _existing_local(uri)
        return
    fs, path = filesystem(uri)
    try:
        handle = fs.open(path, "rb", block_size=1 << 20)
    except FileNotFoundError:
        raise FileNotFoundError(uri) from None
    with handle:
        yield handle


def remove(uri: str) -> None:
    """Delete a file if it exists."""
    if not is_remote(uri):
        with contextlib.suppress(FileNotFoundError):
            _local(uri).unlink()
        return
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path)


def size(uri: str) -> int:
    """Size in bytes."""
    if not is_remote(uri):
        return _local(uri).stat().st_size
    fs, path = filesystem(uri)
    return int(fs.size(path))
