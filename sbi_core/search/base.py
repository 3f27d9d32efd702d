"""What every searcher shares: the trial history (plain JSON), the `Searcher` interface, seeded fallbacks.

A searcher is rebuilt from (options, history) whenever it is needed: `ask(n)` is a pure function of the
options, the history and the seed (asking twice without telling returns the same points), and `tell`
appends to the history. So a study stores only JSON between rounds (`history_to_json` /
`history_from_json`), and a retried round asks exactly what the first try asked.

Values are minimised: a study that maximises (an excess, a disagreement) gives `goal="maximize"`, and the
searcher negates internally; the history keeps the objective's own values. A failed evaluation (a fit that
did not converge, a network that diverged) is told as `None` with its reason and stays in the history: the
Bayesian searcher counts it at the worst value seen, so it is not asked again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from sbi_core.errors import InputError
from sbi_core.search.space import Choice, SearchOptions, SearchSpace

__all__ = ["Goal", "Searcher", "Trial", "best_trial", "history_from_json", "history_to_json", "point_rng"]

Goal = Literal["minimize", "maximize"]
#: Draws tried to replace an asked point that repeats one already in the history (small discrete spaces).
DEDUPE_TRIES = 64


@dataclass(frozen=True)
class Trial:
    """One evaluated point: its value (None when the evaluation failed), why it failed, and extras to keep."""

    point: dict[str, Choice]
    value: float | None
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.value is not None

    def to_json(self) -> dict[str, Any]:
        return {"point": dict(self.point), "value": self.value, "reason": self.reason, "info": dict(self.info)}


def history_to_json(trials: Sequence[Trial]) -> list[dict[str, Any]]:
    return [t.to_json() for t in trials]


def history_from_json(data: Any, space: SearchSpace, where: str = "history") -> list[Trial]:
    """Trials from their JSON; InputError naming the entry that is malformed or outside the space."""
    if not isinstance(data, list):
        raise InputError(f"{where}: expected a list of trials, got {type(data).__name__}")
    trials = []
    for i, item in enumerate(data):
        if not isinstance(item, Mapping) or "point" not in item or "value" not in item:
            raise InputError(f"{where}[{i}]: expected {{point, value}}, got {item!r}")
        value = item["value"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value)):
            raise InputError(f"{where}[{i}].value: expected a finite number or null, got {value!r}")
        trials.append(Trial(space.check_point(item["point"], f"{where}[{i}].point"),
                            None if value is None else float(value), str(item.get("reason", "")),
                            dict(item.get("info", {}))))
    return trials


def best_trial(trials: Iterable[Trial], goal: Goal = "minimize") -> Trial | None:
    """The successful trial with the lowest (or highest) value; the first one on ties; None if none succeeded."""
    ok = [t for t in trials if t.ok]
    if not ok:
        return None
    sign = 1.0 if goal == "minimize" else -1.0
    return min(ok, key=lambda t: sign * float(t.value))  # type: ignore[arg-type]


def point_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator for one purpose of one ask: SeedSequence(seed, *keys), e.g. (seed, trial index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in keys)]))


def _key(point: Mapping[str, Choice]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in point.items()))


def replace_repeats(points: list[dict[str, Choice]], trials: Sequence[Trial], space: SearchSpace, seed: int,
                    tag: int) -> list[dict[str, Choice]]:
    """The points with each one that repeats a trial (or an earlier point of the batch) replaced by a seeded
    uniform draw: on small discrete spaces a model may ask again what it already knows."""
    seen = {_key(t.point) for t in trials}
    out = []
    for i, p in enumerate(points):
        rng = point_rng(seed, tag, len(trials) + i)
        tries = 0
        while _key(p) in seen and tries < DEDUPE_TRIES:
            p, tries = space.sample(rng), tries + 1
        seen.add(_key(p))
        out.append(p)
    return out


@runtime_checkable
class Searcher(Protocol):
    """Ask points, tell their values; rebuilt from (options, history) whenever needed."""

    options: SearchOptions
    goal: Goal
    trials: list[Trial]

    def ask(self, n: int) -> list[dict[str, Choice]]:
        """The next n points to evaluate (deterministic for the options, the history and the seed)."""
        ...

    def tell(self, points: Sequence[Mapping[str, Choice]], values: Sequence[float | None],
             reasons: Sequence[str] | None = None, infos: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Record evaluated points (None: failed, with its reason)."""
        ...


class SearcherBase:
    """History bookkeeping shared by the searchers; subclasses implement `_ask(n)`."""

    name = "base"

    def __init__(self, options: SearchOptions, trials: Sequence[Trial] = (), goal: Goal = "minimize") -> None:
        if goal not in ("minimize", "maximize"):
            raise ValueError(f"goal must be minimize or maximize, got {goal!r}")
        self.options, self.goal = options, goal
        self.space = options.search_space
        self.trials = [Trial(self.space.check_point(t.point, f"history[{i}].point"), t.value, t.reason, t.info)
                       for i, t in enumerate(trials)]

    def ask(self, n: int) -> list[dict[str, Choice]]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"ask: n must be an int >= 1, got {n!r}")
        return [self.space.check_point(p, "asked point") for p in self._ask(n)]

    def _ask(self, n: int) -> list[dict[str, Choice]]:
        raise NotImplementedError

    def tell(self, points: Sequence[Mapping[str, Choice]], values: Sequence[float | None],
             reasons: Sequence[str] | None = None, infos: Sequence[Mapping[str, Any]] | None = None) -> None:
        if len(points) != len(values):
            raise ValueError(f"tell: {len(points)} points but {len(values)} values")
        reasons = list(reasons) if reasons is not None else [""] * len(points)
        infos = list(infos) if infos is not None else [{}] * len(points)
        for i, (p, v) in enumerate(zip(points, values, strict=True)):
            value = None if v is None or not math.isfinite(float(v)) else float(v)
            reason = reasons[i] or ("" if value is not None else f"value {v!r} is not finite")
            self.trials.append(Trial(self.space.check_point(dict(p), f"told point {i}"), value, reason,
                                     dict(infos[i])))

    def best(self) -> Trial | None:
        return best_trial(self.trials, self.goal)

    def history(self) -> list[dict[str, Any]]:
        return history_to_json(self.trials)
