"""Temporary files that a killed process leaves behind, and how the next run tells them from a live writer's.

Every temporary lives in its own directory, and its writer holds an exclusive `flock` on that directory for as
long as it writes. The kernel drops the lock when the process ends, however it ends (SIGKILL included), so a
temporary whose directory can be locked is provably abandoned and is removed; one whose directory is locked
belongs to a live writer (another task writing the same file at the same moment) and is left alone. The lock
is on the directory, not on the file, because HDF5 locks the files it writes itself.

What to use when:
- `Temporary.create(parent, prefix)`: a new locked directory (`<prefix><pid>-<random>`), `.path(name)` the file
  to write inside it, `.release()` to unlock and delete it when done (after the file was renamed away).
- `remove_stale(parent, prefix)`: delete every abandoned temporary under parent whose name starts with prefix.
  Plain files with that prefix (temporaries of an earlier sbi_core, without a directory) are removed when the
  process id in their name no longer exists.
- `staging_dir()` / `staging_limit()`: the local staging area for object-store steps (`SBI_STAGING_DIR`, default
  the system temporary directory) and the most bytes one staged file may hold (`SBI_STAGING_LIMIT`, default
  none); `check_staged(size, what)` raises an InputError naming the setting when a file would exceed it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from sbi_core.errors import InputError

__all__ = ["STAGING_PREFIX", "Temporary", "check_staged", "remove_stale", "staging_dir", "staging_limit"]

#: Prefix of staged files (uploads and downloads of object-store steps) in the staging area.
STAGING_PREFIX = "sbi-stage-"


@dataclass
class Temporary:
    """A directory only its creator writes into, locked while the creator lives."""

    directory: Path
    _fd: int

    @classmethod
    def create(cls, parent: Path, prefix: str) -> Temporary:
        """A new locked directory under parent, named `<prefix><pid>-<random>`.

        Between mkdir and flock another process's `remove_stale` may find the directory unlocked and delete
        it: then the lock fails, or the locked directory is no longer the one under that name, and a new
        name is tried."""
        parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            directory = parent / f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            directory.mkdir()
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.stat(directory).st_ino == os.fstat(fd).st_ino:
                    return cls(directory, fd)
            except OSError:
                pass
            os.close(fd)
        raise RuntimeError(f"could not create a locked temporary directory under {parent}")

    def path(self, name: str) -> Path:
        """The file to write inside the directory."""
        return self.directory / name

    def release(self) -> None:
        """Delete the directory with whatever is left in it, then drop the lock. Idempotent."""
        if self._fd < 0:
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = -1


def _abandoned(directory: Path) -> bool:
    """True when no live process holds the directory's lock (we then hold it until the directory is gone)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    shutil.rmtree(directory, ignore_errors=True)
    os.close(fd)
    return True


def _pid_gone(name: str, prefix: str) -> bool:
    pid = name[len(prefix):].split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def remove_stale(parent: Path, prefix: str) -> list[str]:
    """Delete the abandoned temporaries under parent whose names start with prefix; return what was removed."""
    removed: list[str] = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if _abandoned(entry):
                removed.append(str(entry))
        elif _pid_gone(entry.name, prefix):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(str(entry))
    return removed


def staging_dir() -> Path:
    """The local staging area (`SBI_STAGING_DIR`, default the system temporary directory)."""
    return Path(os.environ.get("SBI_STAGING_DIR") or tempfile.gettempdir())


def staging_limit() -> int | None:
    """`SBI_STAGING_LIMIT` in bytes (e.g. 16GiB), or None when unset."""
    raw = os.environ.get("SBI_STAGING_LIMIT", "").strip()
    if not raw:
        return None
    from sbi_core.s3 import parse_size

    return parse_size(raw, "SBI_STAGING_LIMIT")


def check_staged(size: int, what: str) -> None:
    """InputError naming SBI_STAGING_LIMIT when a staged file of `size` bytes would exceed it."""
    limit = staging_limit()
    if limit is not None and size > limit:
        raise InputError(f"{what} needs {size / 2**20:.1f} MiB of local staging, more than SBI_STAGING_LIMIT "
                         f"({limit / 2**20:.1f} MiB): raise SBI_STAGING_LIMIT and the profile's ephemeral-storage")
