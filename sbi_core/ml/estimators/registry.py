"""Registry of estimator families by name: `training.methods` names them, this module finds them."""

from __future__ import annotations

import importlib
from typing import TypeVar

from sbi_core.errors import InputError

_REGISTRY: dict[str, type] = {}
_BUILTIN_MODULES = (
    "sbi_core.ml.estimators.classifiers",
    "sbi_core.ml.estimators.regression",
    "sbi_core.ml.estimators.score",
    "sbi_core.ml.estimators.benchmark_ratio",
)
T = TypeVar("T", bound=type)


def register_estimator(cls: T) -> T:
    """Class decorator: make an estimator family available under its `name`."""
    name = cls.name  # type: ignore[attr-defined]
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"estimator {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def known_estimators() -> list[str]:
    """Names of every registered estimator family."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_estimator(name: str) -> type:
    """The estimator class registered under name; InputError listing the known names otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown estimator method {name!r}; known: {sorted(_REGISTRY)}") from None
