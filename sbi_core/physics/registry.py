"""Registry of simulators by name: configs name a simulator, this module builds it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from sbi_core.errors import ConfigError

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.physics.base import Simulator

_REGISTRY: dict[str, type] = {}
# Modules that register built-in simulators when imported (kept lazy so `import sbi_core` is cheap).
_BUILTIN_MODULES = ("sbi_core.physics.benchmark", "sbi_core.physics.drell_yan", "sbi_core.physics.lhe",
                    "sbi_core.physics.madminer_events")
T = TypeVar("T", bound=type)


def register_simulator(cls: T) -> T:
    """Class decorator: make a simulator available under its `name`."""
    name = cls.name  # type: ignore[attr-defined]
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"simulator {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def known_simulators() -> list[str]:
    """Names of every registered simulator."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_simulator_class(name: str) -> type[Simulator]:
    """The simulator class registered under name; ConfigError listing known names otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[name]  # type: ignore[return-value]
    except KeyError:
        raise ConfigError("", [("simulator.name", f"unknown simulator {name!r}; known: {sorted(_REGISTRY)}")]) from None


def check_analysis(cfg: AnalysisConfig, source: str = "") -> None:
    """The named simulator's checks of a schema-valid config (options, observables, nuisance kinds,
    morphing basis); ConfigError(source, [(field path, message), ...]) when any fails."""
    try:
        cls = get_simulator_class(cfg.simulator.name)
    except ConfigError as exc:
        raise ConfigError(source, exc.issues) from None
    issues = cls.check_config(cfg)
    if not issues:
        names, _ = simulator_samples(cfg)
        for i, nu in enumerate(cfg.nuisance):
            unknown = sorted(set(nu.samples or ()) - set(names))
            if unknown:
                issues.append((f"nuisance[{i}].samples", f"unknown samples {unknown}: simulator "
                                                        f"{cfg.simulator.name!r} has {list(names)}"))
    if cfg.generation.sampling_point is not None and not getattr(cls, "samples_anywhere", False):
        issues = [*issues, ("generation.sampling_point", f"simulator {cfg.simulator.name!r} draws no events of its "
                            "own (it reads files): it cannot sample at a point")]
    if issues:
        raise ConfigError(source, issues)


#: The sample of a simulator that does not name its samples: the whole model.
SINGLE_SAMPLE = "total"


def simulator_samples(cfg: AnalysisConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every sample of the simulator's model, the theta-independent ones): its `sample_names(cfg)` and
    `fixed_samples(cfg)` classmethods, or one sample "total" for a simulator that defines neither."""
    cls = get_simulator_class(cfg.simulator.name)
    names = getattr(cls, "sample_names", None)
    fixed = getattr(cls, "fixed_samples", None)
    return (tuple(names(cfg)) if names else (SINGLE_SAMPLE,)), (tuple(fixed(cfg)) if fixed else ())


def make_simulator(cfg: AnalysisConfig) -> Simulator:
    """Build the simulator a config names (it checks the config itself and raises ConfigError)."""
    return get_simulator_class(cfg.simulator.name)(cfg)  # type: ignore[call-arg]
