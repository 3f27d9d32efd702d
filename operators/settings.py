"""Deployment settings: environment variables, read when needed, never baked into a DAG file.

What to set where:
- `SBI_BACKEND`: `local` (default: a subprocess on the worker) or `kubernetes` (a pod per step).
- `SBI_ARTIFACT_ROOT`: where runs write (local directory or `s3://bucket/prefix`; default `<repo>/artifacts`).
- `SBI_CONFIGS_URI`: where the shipped analysis configs are read from at run time (default `<repo>/configs`).
- `SBI_PROFILES`: a YAML file replacing `operators/profiles.yaml` (Kubernetes resource profiles).
- `SBI_CORE`: the `sbi-core` executable for the local backend (default: next to Python, else on PATH).
- `SBI_MAX_FAN_OUT`: the most mapped tasks one step fans out to; above it shards go in batches (default 256).
- `SBI_POOL_SLOTS`: pool sizes replacing those of the profiles file, e.g. `sbi_gpu=8,sbi_highmem=2`
  (read by `operators.pools`, which `make airflow` runs; a deployment runs it once or sets pools itself).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("local", "kubernetes")
DEFAULT_MAX_FAN_OUT = 256
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SettingError(ValueError):
    """A deployment setting has a value we cannot use; the message names the variable."""


def backend() -> str:
    """The step backend named by `SBI_BACKEND` (default `local`)."""
    value = os.environ.get("SBI_BACKEND", "local").strip().lower() or "local"
    if value not in BACKENDS:
        raise SettingError(f"SBI_BACKEND={value!r}: expected one of {', '.join(BACKENDS)}")
    return value


def artifact_root() -> str:
    """Root URI under which every run gets its own prefix."""
    return _uri(os.environ.get("SBI_ARTIFACT_ROOT") or str(REPO_ROOT / "artifacts"))


def configs_uri() -> str:
    """Location the configure step reads `<name>.yaml` from."""
    return _uri(os.environ.get("SBI_CONFIGS_URI") or str(REPO_ROOT / "configs"))


def shipped_configs_dir() -> Path:
    """Local directory whose `*.yaml` names fill the trigger form's config choice (cheap to list at parse)."""
    uri = os.environ.get("SBI_CONFIGS_URI", "")
    return Path(uri) if uri and "://" not in uri else REPO_ROOT / "configs"


def profiles_path() -> Path:
    """The resource profile file (`SBI_PROFILES` or the one shipped next to this module)."""
    return Path(os.environ.get("SBI_PROFILES") or Path(__file__).with_name("profiles.yaml"))


def max_fan_out() -> int:
    """Upper bound on mapped task instances per step."""
    raw = os.environ.get("SBI_MAX_FAN_OUT", str(DEFAULT_MAX_FAN_OUT))
    if not raw.isdigit() or int(raw) < 1:
        raise SettingError(f"SBI_MAX_FAN_OUT={raw!r}: expected a positive integer")
    return int(raw)


def pool_slots() -> dict[str, int]:
    """`SBI_POOL_SLOTS=name=slots,name=slots`: pool sizes that replace the profiles file's (default: none)."""
    raw = os.environ.get("SBI_POOL_SLOTS", "").strip()
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, slots = item.partition("=")
        if not name.strip() or not slots.strip().isdigit() or int(slots) < 1:
            raise SettingError(f"SBI_POOL_SLOTS={raw!r}: expected name=slots[,name=slots...] with slots >= 1")
        out[name.strip()] = int(slots)
    return out


def sbi_core_executable() -> str:
    """`SBI_CORE`, else `sbi-core` next to the running interpreter (the venv's bin), else on PATH."""
    explicit = os.environ.get("SBI_CORE")
    if explicit:
        return explicit
    beside = Path(sys.executable).with_name("sbi-core")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("sbi-core")
    if not found:
        raise SettingError("sbi-core not found next to Python nor on PATH; install the package or set SBI_CORE")
    return found


def run_slug(run_id: str) -> str:
    """A path-safe name for a run id; a short hash keeps distinct run ids distinct after sanitising."""
    slug = _UNSAFE.sub("_", run_id).lstrip(".")
    if slug != run_id or not slug:
        slug = f"{slug}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}".lstrip("-")
    return slug


def run_uri(dag_id: str, run_id: str, root: str | None = None) -> str:
    """`{root}/{dag_id}/{sanitised run_id}`: every run writes under its own prefix."""
    return f"{(root or artifact_root()).rstrip('/')}/{run_slug(dag_id)}/{run_slug(run_id)}"


def _uri(value: str) -> str:
    """Remote URIs unchanged; local paths made absolute (the CLI wants absolute paths)."""
    return value.rstrip("/") if "://" in value else str(Path(value).expanduser().resolve())
