"""Resource profiles (`cpu`, `gpu`, `highmem`) read from `profiles.yaml`; see that file for the knobs.

Profiles are read when a pod is built, not when a DAG is parsed, so a DAG never does file I/O for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from operators import settings


class ProfileError(ValueError):
    """A profile is missing or malformed; the message names the profile, key and file."""


@dataclass(frozen=True)
class Profile:
    """Everything about a step's pod that depends on what the step needs, not on what it does."""

    name: str
    image: str
    namespace: str
    image_pull_policy: str | None = None
    service_account: str | None = None
    s3_secret: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    run_as_user: int = 1000
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    schedule_timeout_seconds: int = 900
    startup_timeout_seconds: int = 600
    on_finish_action: str = "delete_succeeded_pod"


_KEYS = {f.name for f in fields(Profile)} - {"name"}


def get_profile(name: str, path: Path | None = None) -> Profile:
    """The named profile from `path` (default: `settings.profiles_path()`)."""
    path = path or settings.profiles_path()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise ProfileError(f"cannot read profiles from {path}: {exc}") from exc
    profiles = load_profiles(str(path), stamp)
    if name not in profiles:
        raise ProfileError(f"profile {name!r} is not in {path} (have: {', '.join(sorted(profiles))})")
    return profiles[name]


@lru_cache(maxsize=8)
def load_profiles(path: str, stamp: int = 0) -> dict[str, Profile]:
    """Every profile in the file, each merged over `defaults` (cached per path and modification `stamp`)."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"cannot read profiles from {path}: {exc}") from exc
    defaults = doc.get("defaults") or {}
    profiles = doc.get("profiles") or {}
    if not isinstance(defaults, dict) or not isinstance(profiles, dict) or not profiles:
        raise ProfileError(f"{path}: expected mappings `defaults` and `profiles` (at least one profile)")
    return {name: _build(name, {**defaults, **(spec or {})}, path) for name, spec in profiles.items()}


def _build(name: str, spec: dict[str, Any], path: str) -> Profile:
    unknown = set(spec) - _KEYS
    if unknown:
        raise ProfileError(f"{path}: profile {name!r} has unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    for required in ("image", "namespace"):
        if not spec.get(required):
            raise ProfileError(f"{path}: profile {name!r} needs {required!r}")
    as_str = {
        k: {str(a): str(b) for a, b in (spec.get(k) or {}).items()}
        for k in ("env", "requests", "limits", "node_selector")
    }
    return Profile(name=name, **{**spec, **as_str, "tolerations": list(spec.get("tolerations") or [])})
