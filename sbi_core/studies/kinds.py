"""The `StudyKind` protocol and the registry of kinds: what the loop mechanism asks of a kind of study.

A kind is an object with (see docs/studies.md for the full contract):
- `name` (its registry key), `unit` (what its budget counts: "toys", "events", "trainings"; a kind whose unit
  depends on its options also has `unit_for(study) -> str`, read through `Study.unit`), `options`
  (a `ConfigSection` model of its own settings, the study's `options:`);
- `check(study) -> [(field, message)]`: checks of the options against the source run (an unknown
  parameter, a grid outside the range...), run by `study --create` before anything is written;
- `plan_round(study, state, history) -> [WorkItem]`: the round's work, deterministic in its inputs (a
  replanned round must give the same plan), in priority order (the mechanism drops the tail past the budget);
- `evaluate(study, item) -> dict`: one item's result (runs in a mapped task; it calls the functions the
  pipeline's steps call). A point that cannot be evaluated raises `PointFailed(reason)`: it is recorded with
  its reason and the study goes on; any other exception is a failure of the task (retried);
- `aggregate(study, state, history, results) -> (new state, new history entries, Decision)`: fold the round's
  results (every item's, in plan order) into the kind's state (`state.evolve(kind=...)`), one history entry
  per evaluated point (JSON; `round` is added by the mechanism) and a decision, continue or finish, with a
  reason. It must be a pure function of its inputs: an aggregate killed and rerun gives the same bytes;
- `finish(study, state, history) -> dict`: the final results (written to results.json) and plots;
- `describe(study, state) -> [dict]`: the kind's table for `study --show` (e.g. each point and its CLs).

Where to use what: `get_kind(name)` (InputError naming the known kinds), `register_kind(kind)` for a kind
defined elsewhere; `SBI_STUDY_PLUGINS=module[,module]` names modules imported first (each registers its kinds),
so a deployment adds kinds without editing this file.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sbi_core.errors import InputError, SbiError
from sbi_core.studies.state import Decision, StudyState, WorkItem, WorkResult

if TYPE_CHECKING:
    from sbi_core.config_base import ConfigSection
    from sbi_core.studies.study import Study

__all__ = ["KINDS", "PointFailed", "StudyKind", "check_kind", "get_kind", "kind_names", "register_kind"]

#: The built-in kinds: name -> "module:attribute" of the kind object (imported when first asked for, so the
#: CLI stays light).
KINDS: dict[str, str] = {
    "toy_limits": "sbi_core.studies.toy_limits:KIND",
    "active_learning": "sbi_core.studies.active_learning:KIND",
    "hpo": "sbi_core.studies.hpo:KIND",
}
PLUGINS_ENV = "SBI_STUDY_PLUGINS"

_registered: dict[str, StudyKind] = {}
_plugins_loaded: set[str] = set()


class PointFailed(SbiError):
    """A point that cannot be evaluated (an invalid fit, a diverged network): recorded with this reason, not
    fatal to the study."""


@runtime_checkable
class StudyKind(Protocol):
    """What the loop mechanism asks of a kind of study (see the module doc)."""

    name: str
    unit: str
    options: type[ConfigSection]

    def check(self, study: Study) -> list[tuple[str, str]]: ...

    def plan_round(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]]) -> list[WorkItem]: ...

    def evaluate(self, study: Study, item: WorkItem) -> dict[str, Any]: ...

    def aggregate(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]],
                  results: Sequence[WorkResult]) -> tuple[StudyState, list[dict[str, Any]], Decision]: ...

    def finish(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]]) -> dict[str, Any]: ...

    def describe(self, study: Study, state: StudyState) -> list[dict[str, Any]]: ...


_METHODS = ("check", "plan_round", "evaluate", "aggregate", "finish", "describe")


def check_kind(kind: Any) -> StudyKind:
    """The kind itself; TypeError naming what is missing when it does not implement the protocol."""
    missing = [a for a in ("name", "unit", "options", *_METHODS) if not hasattr(kind, a)]
    missing += [m for m in _METHODS if hasattr(kind, m) and not callable(getattr(kind, m))]
    if missing:
        raise TypeError(f"study kind {type(kind).__name__}: missing {missing} (see sbi_core.studies.kinds)")
    return kind  # type: ignore[no-any-return]


def register_kind(kind: Any) -> None:
    """Add a kind (or replace one of the same name) for this process."""
    check_kind(kind)
    _registered[kind.name] = kind


def _load_plugins() -> None:
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        if module not in _plugins_loaded:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise InputError(f"{PLUGINS_ENV}: cannot import study plugin {module!r}: {exc}") from None
            _plugins_loaded.add(module)


def kind_names() -> list[str]:
    """Every kind this process knows (built-in, registered, from plugins)."""
    _load_plugins()
    return sorted({*KINDS, *_registered})


def get_kind(name: str) -> StudyKind:
    """The kind registered under `name`; InputError naming the known kinds."""
    _load_plugins()
    if name not in _registered:
        if name not in KINDS:
            raise InputError(f"kind: unknown study kind {name!r}; known: {kind_names()}")
        module, attr = KINDS[name].split(":")
        register_kind(getattr(importlib.import_module(module), attr))
    return _registered[name]
