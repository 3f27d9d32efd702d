"""Resource profiles (`cpu`, `gpu`, `highmem`) and their Airflow pools, read from `profiles.yaml`.

What to use when:
- `get_profile(name)`: a step's pod settings (read when the pod is built) and its pool name (read when
  the DAG is parsed: the scheduler needs it; one `stat` per parse, the file itself is cached).
- `load_pools()`: every pool the profiles name, with its size (`pools:` in the file; on the local backend the
  cpu and training pools follow the machine's cores; `SBI_TRAIN_SLOTS`; `SBI_POOL_SLOTS` overrides all);
  `operators.pools` creates them in Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from operators import settings

#: The profiles whose pools the machine sizes: training (`settings.train_slots`) and, on the local backend, cpu.
TRAINING_PROFILE, CPU_PROFILE = "gpu", "cpu"


class ProfileError(ValueError):
    """A profile is missing or malformed; the message names the profile, key and file."""


@dataclass(frozen=True)
class CacheVolume:
    """A PersistentVolumeClaim mounted in every pod of a profile as JAX's compilation cache
    (`SBI_JAX_CACHE_DIR` points there), so a task loads what an earlier task of the run compiled."""

    claim: str
    mount_path: str = "/var/cache/sbi-core/jax"


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
    #: Deployment settings read from the worker's environment when the pod is built and passed on when set
    #: (MLFLOW_TRACKING_URI, SBI_ARTIFACT_ROOT, the SBI_S3_* tuning): one setting for both backends.
    forward_env: list[str] = field(default_factory=list)
    run_as_user: int = 1000
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    schedule_timeout_seconds: int = 900
    startup_timeout_seconds: int = 600
    on_finish_action: str = "delete_succeeded_pod"
    pool: str | None = None
    #: The XCom sidecar (it only waits for the summary file): small requests AND limits, so a namespace
    #: with a LimitRange or quota admits the pod and the sidecar cannot grow.
    xcom_sidecar_requests: dict[str, str] = field(default_factory=lambda: {"cpu": "1m", "memory": "10Mi"})
    xcom_sidecar_limits: dict[str, str] = field(default_factory=lambda: {"cpu": "50m", "memory": "32Mi"})
    compile_cache: CacheVolume | None = None


@dataclass(frozen=True)
class Pool:
    """An Airflow pool: at most `slots` steps of the profiles that name it run at once."""

    name: str
    slots: int
    description: str = ""


_KEYS = {f.name for f in fields(Profile)} - {"name"}
_EMPTY_BY_DEFAULT = ("env", "requests", "limits", "node_selector")
_POOL_KEYS = {"slots", "description"}
_CACHE_KEYS = {"claim", "mount_path"}


def get_profile(name: str, path: Path | None = None) -> Profile:
    """The named profile from `path` (default: `settings.profiles_path()`)."""
    path = path or settings.profiles_path()
    profiles = _load(path)[0]
    if name not in profiles:
        raise ProfileError(f"profile {name!r} is not in {path} (have: {', '.join(sorted(profiles))})")
    return profiles[name]


def load_pools(path: Path | None = None, slots: dict[str, int] | None = None) -> dict[str, Pool]:
    """The pools named by the profiles of `path`, sized by the file's `pools:` section, then by the machine (the
    training pool: `settings.train_slots()`; on the local backend it and the cpu pool follow the cores), then by
    `slots` (default: `settings.pool_slots()`, i.e. `SBI_POOL_SLOTS`). A pool nothing sizes gets 1 slot."""
    path = path or settings.profiles_path()
    profiles, sizes = _load(path)
    slots = settings.pool_slots() if slots is None else slots
    unknown = set(slots) - {p.pool for p in profiles.values()}
    if unknown:
        raise ProfileError(f"SBI_POOL_SLOTS names pools no profile in {path} uses: {sorted(unknown)}")
    machine = {profiles[name].pool: size for name, size in ((CPU_PROFILE, settings.local_cores()),
                                                             (TRAINING_PROFILE, settings.train_slots()))
               if name in profiles}
    pools = {}
    for profile in profiles.values():
        if profile.pool and profile.pool not in pools:
            base = sizes.get(profile.pool, Pool(profile.pool, 1))
            size = slots.get(profile.pool) or machine.get(profile.pool) or base.slots
            pools[profile.pool] = Pool(profile.pool, size, base.description)
    return pools


def _load(path: Path) -> tuple[dict[str, Profile], dict[str, Pool]]:
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise ProfileError(f"cannot read profiles from {path}: {exc}") from exc
    return load_profiles(str(path), stamp)


@lru_cache(maxsize=8)
def load_profiles(path: str, stamp: int = 0) -> tuple[dict[str, Profile], dict[str, Pool]]:
    """Every profile in the file, each merged over `defaults`, and the pool sizes of its `pools:` section
    (cached per path and modification `stamp`)."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"cannot read profiles from {path}: {exc}") from exc
    defaults = doc.get("defaults") or {}
    profiles = doc.get("profiles") or {}
    pools = doc.get("pools") or {}
    if not all(isinstance(x, dict) for x in (defaults, profiles, pools)) or not profiles:
        raise ProfileError(f"{path}: expected mappings `defaults`, `profiles` (at least one) and `pools`")
    return (
        {name: _build(name, {**defaults, **(spec or {})}, path) for name, spec in profiles.items()},
        {name: _pool(name, spec or {}, path) for name, spec in pools.items()},
    )


def _pool(name: str, spec: dict[str, Any], path: str) -> Pool:
    unknown = set(spec) - _POOL_KEYS
    slots = spec.get("slots")
    if unknown or isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ProfileError(f"{path}: pool {name!r} needs `slots` (an integer >= 1) and at most a `description`"
                           f"{f'; unknown keys {sorted(unknown)}' if unknown else ''}")
    return Pool(name, slots, str(spec.get("description", "")))


def _build(name: str, spec: dict[str, Any], path: str) -> Profile:
    unknown = set(spec) - _KEYS
    if unknown:
        raise ProfileError(f"{path}: profile {name!r} has unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    for required in ("image", "namespace"):
        if not spec.get(required):
            raise ProfileError(f"{path}: profile {name!r} needs {required!r}")
    if spec.get("pool") is not None and not isinstance(spec["pool"], str):
        raise ProfileError(f"{path}: profile {name!r}: `pool` must be a pool name, got {spec['pool']!r}")
    as_str = {
        k: {str(a): str(b) for a, b in (spec.get(k) or {}).items()}
        for k in ("env", "requests", "limits", "node_selector", "xcom_sidecar_requests", "xcom_sidecar_limits")
        if k in spec or k in _EMPTY_BY_DEFAULT
    }
    forward = spec.get("forward_env") or []
    if not isinstance(forward, list) or not all(isinstance(v, str) and v for v in forward):
        raise ProfileError(f"{path}: profile {name!r}: `forward_env` must be a list of variable names")
    cache = _cache_volume(name, spec.get("compile_cache"), path)
    return Profile(name=name, **{**spec, **as_str, "tolerations": list(spec.get("tolerations") or []),
                                 "forward_env": list(forward), "compile_cache": cache})


def _cache_volume(name: str, spec: Any, path: str) -> CacheVolume | None:
    """`compile_cache: {claim: PVC, mount_path: /dir}` (or null: no volume; the pod's own disk caches)."""
    if spec is None:
        return None
    ok = isinstance(spec, dict) and not set(spec) - _CACHE_KEYS and isinstance(spec.get("claim"), str) \
        and spec["claim"] and isinstance(spec.get("mount_path", "/"), str) and spec.get("mount_path", "/").startswith("/")
    if not ok:
        raise ProfileError(f"{path}: profile {name!r}: `compile_cache` must be {{claim: <PVC name>, mount_path: "
                           f"<absolute path>}} or null, got {spec!r}")
    return CacheVolume(**spec)
