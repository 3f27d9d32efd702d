"""Local excesses over the parameter space: the observed and expected evidence for a signal hypothesis theta
against the null (the reference benchmark, nuisances profiled), what the active-learning `excess` objective
evaluates at each point it asks (the iDDS use case: where do observed and expected results differ most?).

Two statistics, for ANY objective (`sbi_core.inference.objective`: an NLL, not 2 NLL):
- `local_significance(observed, expected, at, null)`: q(theta) = 2 (NLL(null, nu^^) - NLL(theta, nu^^)), the
  profile likelihood ratio of the point hypothesis theta against the null, as a signed local significance
  Z = sign(q) sqrt(|q|). Largest where the data favour theta most: at the best fit, so a search for its
  maximum locates an excess. `expected` is the same on the background-only Asimov dataset (Z <= 0: how
  strongly the null would disfavour theta).
- `cls_excess(observed, expected_factory, at, null)`: the CLs test (q~, `limits.AsymptoticCLs`) of the signal
  strength mu along the ray theta(mu) = null + mu (theta - null) at mu = 1 (`RayObjective`), observed and
  median expected; the excess in sigma is Phi^-1(1 - CLs_exp) - Phi^-1(1 - CLs_obs): > 0 where theta is less
  excluded than expected.
`ExcessEvaluator(run, statistic).evaluate(point)` (or `evaluate_points(run, points, statistic)`) runs either on a
fitted run's dataset (the fit step's likelihood
arrays; the expected side from the Asimov dataset at the null, `toys.ToyGenerator`), one entry per point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from sbi_core.errors import InputError
from sbi_core.inference.objective import Objective, check_objective
from sbi_core.inference.profile import Profiler

__all__ = ["STATISTICS", "Excess", "ExcessEvaluator", "RayObjective", "cls_excess", "evaluate_points",
           "local_significance"]

#: The excess statistics by name (the study's `objective.statistic`).
STATISTICS = ("local_significance", "cls")
#: Where the ray's signal strength is bounded above in the CLs fits (mu = 1 is the asked point).
RAY_UPPER = 10.0


@dataclass(frozen=True)
class Excess:
    """One point's excess: `value` (the searched quantity), observed and expected figures, validity."""

    at: dict[str, float]
    statistic: str
    value: float
    observed: dict[str, float]
    expected: dict[str, float]
    valid: bool
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "statistic": self.statistic, "value": self.value, "observed": self.observed,
                "expected": self.expected, "valid": self.valid, "message": self.message, **self.extra}


def _signed_sqrt(q: float) -> float:
    return math.copysign(math.sqrt(abs(q)), q)


def local_significance(observed: Profiler, expected: Profiler | None, at: Mapping[str, float],
                       null: Mapping[str, float]) -> Excess:
    """q and Z of theta = `at` against `null` (both POI values; nuisances profiled), observed and expected."""
    def one(prof: Profiler) -> tuple[dict[str, float], bool, str]:
        p0, p1 = prof.point(dict(null)), prof.point(dict(at))
        q = 2.0 * (p0.nll - p1.nll)
        return {"q": q, "z": _signed_sqrt(q)}, p0.valid and p1.valid, "; ".join(
            m for m in (p0.message, p1.message) if m and m != "valid")

    obs, ok, msg = one(observed)
    exp, ok_e, msg_e = one(expected) if expected is not None else ({}, True, "")
    return Excess({k: float(v) for k, v in at.items()}, "local_significance", obs["z"], obs, exp, ok and ok_e,
                  "; ".join(m for m in (msg, msg_e) if m))


class RayObjective:
    """An objective along the ray theta(mu) = null + mu (point - null): parameters `mu` then the objective's
    non-POI parameters (nuisances), so a CLs test of mu = 1 tests the signal hypothesis `point`."""

    def __init__(self, objective: Objective, null: Mapping[str, float], point: Mapping[str, float]) -> None:
        names = check_objective(objective)
        unknown = sorted(set(point) - set(names))
        if unknown or set(point) != set(null):
            raise ValueError(f"RayObjective: point and null must name the same parameters of {names}, got "
                             f"{sorted(point)} and {sorted(null)}")
        self.objective = objective
        self.pois = [n for n in names if n in point]
        self.others = [n for n in names if n not in point]
        self._idx_p = np.array([names.index(n) for n in self.pois], dtype=np.int64)
        self._idx_o = np.array([names.index(n) for n in self.others], dtype=np.int64)
        self._null = np.array([float(null[n]) for n in self.pois])
        self._dir = np.array([float(point[n]) for n in self.pois]) - self._null
        self._n = len(names)
        if not np.any(self._dir != 0):
            raise ValueError("RayObjective: the point equals the null")

    @property
    def names(self) -> list[str]:
        return ["mu", *self.others]

    def full(self, p: np.ndarray) -> np.ndarray:
        """The objective's parameter vector at (mu, others)."""
        p = np.asarray(p, dtype=np.float64)
        out = np.empty(self._n)
        out[self._idx_p] = self._null + p[0] * self._dir
        out[self._idx_o] = p[1:]
        return out

    def value(self, p: np.ndarray) -> float:
        return float(self.objective.value(self.full(p)))

    def grad(self, p: np.ndarray) -> np.ndarray:
        g = np.asarray(self.objective.grad(self.full(p)), dtype=np.float64)
        return np.concatenate([[g[self._idx_p] @ self._dir], g[self._idx_o]])


def cls_excess(observed: Objective, expected: Callable[[np.ndarray], Objective], at: Mapping[str, float],
               null: Mapping[str, float], *, fixed: Mapping[str, float] | None = None,
               bounds: Mapping[str, tuple[float, float]] | None = None, start: Mapping[str, float] | None = None,
               upper: float = RAY_UPPER) -> Excess:
    """CLs of mu = 1 along the ray to `at` (q~, asymptotic), observed and median expected; `expected(x)` builds
    the Asimov objective from the observed objective's parameter vector x of the conditional fit at mu = 0."""
    from sbi_core.inference.limits import AsymptoticCLs

    ray = RayObjective(observed, null, at)
    others = set(ray.others)
    calc = AsymptoticCLs(ray, "mu", lambda fit: RayObjective(expected(ray.full(fit.x)), null, at), null=0.0,
                         upper=upper, fixed={k: v for k, v in (fixed or {}).items() if k in others},
                         bounds={k: v for k, v in (bounds or {}).items() if k in others},
                         start={k: v for k, v in (start or {}).items() if k in others})
    test = calc.hypotest(1.0)
    cls_exp = test.expected["0"]
    value = float(stats.norm.isf(max(cls_exp, 1e-300)) - stats.norm.isf(max(test.cls, 1e-300)))
    return Excess({k: float(v) for k, v in at.items()}, "cls", value,
                  {"cls": test.cls, "clsb": test.clsb, "clb": test.clb, "qtilde": test.qtilde},
                  {"cls": cls_exp, "qtilde": test.qtilde_asimov}, test.valid,
                  "" if test.valid else "a fit of the CLs test is not valid", {"mu_hat": calc.mu_hat})


class ExcessEvaluator:
    """The excess at points of a fitted run's dataset, the run's model and profiles built once (a mapped task
    evaluates several points): observed NLL of the fitted dataset, expected from the background-only Asimov
    dataset at the null (the reference benchmark, nuisances 0), the run's fixed parameters and bounds."""

    def __init__(self, run_uri: str, statistic: str = "local_significance") -> None:
        from sbi_core.inference.stats_steps import load_context

        if statistic not in STATISTICS:
            raise InputError(f"excess statistic {statistic!r}: expected one of {list(STATISTICS)}")
        self.statistic = statistic
        ctx = self.ctx = load_context(run_uri)
        inf = ctx.inf
        self.free = [p for p in ctx.cfg.parameter_names if p not in inf.fix]
        ref = ctx.cfg.benchmark_matrix()[ctx.cfg.benchmark_names.index(ctx.cfg.sampling_benchmark)]
        self.null = {p: float(v) for p, v in zip(ctx.cfg.parameter_names, ref, strict=True) if p in self.free}
        self.pool = ctx.pool()
        self.gen = ctx.generator(self.pool)
        self.observed = ctx.observed_model()
        null_point = {n: 0.0 for n in ctx.best["names"]}
        null_point.update({**self.null, **{k: float(v) for k, v in inf.fix.items()}})
        self.obs = Profiler(self.observed, fixed=inf.fix, bounds=inf.bounds, best=ctx.fit_result())
        self.exp = Profiler(ctx.model(self.gen.asimov(self.gen.vector(null_point)), self.pool), fixed=inf.fix,
                            bounds=inf.bounds, start=null_point) if statistic == "local_significance" else None

    def evaluate(self, point: Mapping[str, float]) -> Excess:
        """The excess at one point (the free parameters of interest); InputError for a point of other names."""
        if set(point) != set(self.free):
            raise InputError(f"excess point: give the free parameters of interest {self.free}, got {sorted(point)}")
        at = {k: float(point[k]) for k in self.free}
        if self.statistic == "local_significance":
            return local_significance(self.obs, self.exp, at, self.null)
        ctx, inf = self.ctx, self.ctx.inf
        return cls_excess(self.observed, lambda x: ctx.model(self.gen.asimov(x), self.pool), at, self.null,
                          fixed=inf.fix, bounds=inf.bounds, start=ctx.best["values"])


def evaluate_points(run_uri: str, points: Sequence[Mapping[str, float]],
                    statistic: str = "local_significance") -> list[dict[str, Any]]:
    """The excess at each point (POI values) on a fitted run's dataset: `Excess.to_json()` per point, or
    {"at", "valid": False, "message"} for a point whose fits raised (the study records it and goes on)."""
    ev = ExcessEvaluator(run_uri, statistic)
    out = []
    for point in points:
        try:
            out.append(ev.evaluate(point).to_json())
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            out.append({"at": dict(point), "statistic": statistic, "value": None, "valid": False,
                        "message": f"{type(exc).__name__}: {exc}"})
    return out
