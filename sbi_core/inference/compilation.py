"""JAX set-up for every inference step: float64 on, and the persistent compilation cache.

Every mapped inference task (a Hessian block, a scan block, a toy batch) builds the same NLL shapes as
the fit before it; without a persistent cache each one compiles them again (2-12 s each). With it, the
first task that compiles a shape writes the executable to the cache directory and every later process
that evaluates the same shape (same program, same devices, same JAX version) loads it.

What to use when:
- `configure_jax()` is called once, when `sbi_core.inference.nll` is imported, i.e. before the first
  compile of any inference step; calling it again is free. It reads the settings below at that moment.
- `cache_settings()` says what the settings resolve to (the bench and the tests print it).
- `CompileCounter` counts, through `jax.monitoring`, the persistent cache's hits and misses and the
  seconds spent compiling (or loading compiled code): a test or bench asserts on counts, not on time.

Settings (environment variables, read by `configure_jax`):
- `SBI_JAX_CACHE_DIR`: the cache directory. Default `$XDG_CACHE_HOME/sbi-core/jax` (`~/.cache/...`);
  `off` disables the cache. In pods the profile's `compile_cache` mounts a volume there.
- `SBI_JAX_CACHE_MIN_COMPILE_S`: only compilations that took at least this long are written (default 0.5:
  the NLL's compilations take 0.3-12 s, tiny helper programs are not worth a file).
- `SBI_JAX_CACHE_MAX_GB`: the cache's size bound, least recently used entries evicted (default 4). A bound
  also makes JAX lock the directory around reads and writes, so concurrent tasks never read a half-written
  entry. Entries go to a subdirectory per kind of host CPU (`host_fingerprint`). A directory that cannot be created or written disables the cache with a warning: a step never
  fails because of its cache.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CACHE_DIR_ENV", "CacheSettings", "CompileCounter", "cache_settings", "configure_jax", "host_fingerprint"]

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "SBI_JAX_CACHE_DIR"
MIN_COMPILE_ENV = "SBI_JAX_CACHE_MIN_COMPILE_S"
MAX_GB_ENV = "SBI_JAX_CACHE_MAX_GB"
_OFF = ("off", "none", "false", "0", "")
_configured: CacheSettings | None = None


@dataclass(frozen=True)
class CacheSettings:
    """What the settings resolve to: the directory (None: no cache), the write threshold and the size bound."""

    directory: str | None
    min_compile_s: float
    max_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "min_compile_s": self.min_compile_s, "max_bytes": self.max_bytes}


def _float_setting(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None
    if not value >= 0:
        raise ValueError(f"{name}={raw!r}: expected a number >= 0")
    return value


def cache_settings() -> CacheSettings:
    """The cache settings from the environment (see the module doc)."""
    raw = os.environ.get(CACHE_DIR_ENV)
    if raw is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        directory: str | None = str(Path(base) / "sbi-core" / "jax")
    elif raw.strip().lower() in _OFF:
        directory = None
    else:
        directory = str(Path(raw.strip()).expanduser().resolve())
    return CacheSettings(directory=directory, min_compile_s=_float_setting(MIN_COMPILE_ENV, 0.5),
                         max_bytes=int(_float_setting(MAX_GB_ENV, 4.0) * 2**30))


def _usable(directory: str) -> bool:
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        probe = Path(directory) / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError as exc:
        log.warning("JAX compilation cache disabled: %s is not writable (%s)", directory, exc)
        return False


def host_fingerprint() -> str:
    """A short hash of this host's CPU model and instruction-set flags. XLA compiles CPU code for the host's
    features and refuses to load an entry built for other ones, so a cache directory shared by different
    nodes (a volume mounted in every pod) keeps one subdirectory per kind of CPU instead of thrashing."""
    import hashlib
    import platform

    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        text += "".join(sorted(set(lines)))
    except OSError:
        text += platform.processor()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def configure_jax() -> CacheSettings:
    """float64 on, and the persistent compilation cache as the settings say (once per process)."""
    global _configured
    if _configured is not None:
        return _configured
    import jax

    jax.config.update("jax_enable_x64", True)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" chatter on every CPU start
    settings = cache_settings()
    if settings.directory is not None:
        settings = CacheSettings(str(Path(settings.directory) / f"host-{host_fingerprint()}"), settings.min_compile_s,
                                 settings.max_bytes)
    if settings.directory is not None and not _usable(settings.directory):
        settings = CacheSettings(None, settings.min_compile_s, settings.max_bytes)
    if settings.directory is not None:
        jax.config.update("jax_compilation_cache_dir", settings.directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", settings.min_compile_s)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor: every program counts
        import importlib.util

        if importlib.util.find_spec("filelock") is not None:  # JAX needs it for a bounded (locked) cache
            jax.config.update("jax_compilation_cache_max_size", settings.max_bytes)
        else:
            log.warning("JAX compilation cache unbounded and unlocked: install `filelock` to bound it")
    _configured = settings
    return settings


_HIT, _MISS = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"
_COMPILE = "/jax/core/compile/backend_compile_duration"  # a compile, or a cache load when it hits
_TRACE = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")


class CompileCounter:
    """Counts persistent-cache hits and misses and the seconds spent compiling (or loading) while active.

    `with CompileCounter() as c: ...` then `c.hits`, `c.misses`, `c.compiles` (backend compilations or
    loads), `c.compile_s` (their seconds) and `c.trace_s` (tracing and lowering, which no cache saves)."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.durations: Counter[str] = Counter()

    def _event(self, event: str, **_: Any) -> None:
        self.events[event] += 1

    def _duration(self, event: str, duration: float, **_: Any) -> None:
        self.durations[event] += duration
        self.events[event] += 1

    def __enter__(self) -> CompileCounter:
        import jax.monitoring as mon

        mon.register_event_listener(self._event)
        mon.register_event_duration_secs_listener(self._duration)
        return self

    def __exit__(self, *exc: object) -> None:
        import jax.monitoring as mon

        mon.unregister_event_listener(self._event)
        mon.unregister_event_duration_listener(self._duration)

    @property
    def hits(self) -> int:
        return self.events[_HIT]

    @property
    def misses(self) -> int:
        return self.events[_MISS]

    @property
    def compiles(self) -> int:
        return self.events[_COMPILE]

    @property
    def compile_s(self) -> float:
        return float(self.durations[_COMPILE])

    @property
    def trace_s(self) -> float:
        return float(sum(self.durations[e] for e in _TRACE))

    def to_json(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "compiles": self.compiles,
                "compile_s": round(self.compile_s, 3), "trace_s": round(self.trace_s, 3)}
