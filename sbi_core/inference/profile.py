"""Profile likelihood: the NLL minimised over every parameter except the ones held at given values.

What to use when:
- `Profiler(objective, fixed=..., bounds=...)` wraps any `Objective` (`sbi_core.inference.objective`) with the
  analysis' fixed parameters and bounds; `.best` is the global fit (computed once, or handed in).
- `.point({"cW": 0.2})` is one profile point: a fit with cW held at 0.2, the rest floating, warm-started
  from the nearest point already computed (or the global fit). Delta NLL is relative to `.nll_min`, the
  lowest NLL seen so far: a scan point below the global fit (a fit that stopped in a local minimum) lowers
  it, and `.best_improved` says so.
- `.scan(names, grid)` computes many points in the given order, each warm-started from the one before
  (order the grid so that neighbours follow each other: `snake_order`).
- `.interval(name, level, scan=...)` is a 1D Wilks interval: the crossings of the scan (`intervals.py`)
  refined by root finding (Brent) on the profile itself; without a scan it walks out from the best fit.

Everything is in NLL units (not 2 NLL): the threshold for a level is `asymptotics.wilks_threshold`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq

from sbi_core.inference.asymptotics import wilks_threshold
from sbi_core.inference.fit import FitResult, minimize
from sbi_core.inference.intervals import Interval, interval_from_scan
from sbi_core.inference.objective import Objective, check_objective

__all__ = ["ProfilePoint", "Profiler", "snake_order"]


@dataclass(frozen=True)
class ProfilePoint:
    """One constrained fit: `at` the held values, `values` every parameter at the constrained minimum."""

    at: dict[str, float]
    nll: float
    valid: bool
    values: dict[str, float] = field(repr=False)
    calls: int = 0
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "nll": self.nll, "valid": self.valid, "values": self.values, "calls": self.calls,
                "message": self.message}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProfilePoint:
        return cls(dict(d["at"]), float(d["nll"]), bool(d["valid"]), dict(d["values"]), int(d.get("calls", 0)),
                   str(d.get("message", "")))


def snake_order(shape: tuple[int, ...]) -> np.ndarray:
    """Flat indices of a C-ordered grid of `shape` (1 or 2 axes) in boustrophedon order: consecutive indices
    are grid neighbours, so each profile fit starts next to the previous one."""
    if len(shape) == 1:
        return np.arange(shape[0])
    if len(shape) != 2:
        raise ValueError(f"snake_order: 1 or 2 axes, got {shape}")
    idx = np.arange(shape[0] * shape[1]).reshape(shape)
    idx[1::2] = idx[1::2, ::-1]
    return idx.reshape(-1)


class Profiler:
    """Profile fits of one objective, warm-started, with the analysis' fixed parameters and bounds."""

    def __init__(
        self,
        objective: Objective,
        *,
        fixed: Mapping[str, float] | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        start: Mapping[str, float] | None = None,
        best: FitResult | None = None,
        ncall: int | None = None,
        errors: bool = True,
    ) -> None:
        """fixed / bounds: held parameters and fit limits of every fit; start: where the global fit starts;
        best: a global fit made before (not repeated); errors: False skips the global fit's Hessian (toys)."""
        self.objective = objective
        self.errors = errors
        self.names = check_objective(objective)
        self.fixed = dict(fixed or {})
        self.bounds = dict(bounds or {})
        self.start = dict(start or {})
        self.ncall = ncall
        self._best = best
        if best is not None and list(best.names) != self.names:
            raise ValueError(f"best: a fit of parameters {best.names}, not of this objective's {self.names}")
        self._seen: list[ProfilePoint] = []
        self._cache: dict[tuple[tuple[str, float], ...], ProfilePoint] = {}
        self._nll_min = best.nll if best is not None else math.inf
        self.best_improved = False

    # ------------------------------------------------------------------ global fit
    @property
    def best(self) -> FitResult:
        """The global fit (errors included), computed on first use."""
        if self._best is None:
            self._best = minimize(self.objective, start=self.start or None, fixed=self.fixed, bounds=self.bounds,
                                  ncall=self.ncall, errors=self.errors)
            self._nll_min = min(self._nll_min, self._best.nll)
        return self._best

    @property
    def nll_min(self) -> float:
        """The lowest NLL found: the global fit's, or a profile point's if one went lower."""
        _ = self.best
        return self._nll_min

    # ------------------------------------------------------------------ profile points
    def _warm_start(self, at: Mapping[str, float]) -> dict[str, float]:
        """Values of the nearest computed point (held coordinates compared), else the global fit."""
        best = self.best
        start = dict(best.values)
        if self._seen:
            keys = list(at)
            scale = np.array([max(best.errors.get(k, 0.0), 1e-12) if math.isfinite(best.errors.get(k, math.nan))
                              else 1.0 for k in keys])
            target = np.array([at[k] for k in keys])
            cands = [p for p in self._seen if set(p.at) == set(keys)]
            if cands:
                dist = [float(np.sum(((np.array([p.at[k] for k in keys]) - target) / scale) ** 2)) for p in cands]
                near = cands[int(np.argmin(dist))]
                best_dist = float(np.sum(((np.array([best.values[k] for k in keys]) - target) / scale) ** 2))
                if min(dist) < best_dist:
                    start = dict(near.values)
        start.update(at)
        return start

    def _steps(self) -> dict[str, float]:
        """Initial Migrad steps for warm-started fits: the global fit's errors (its natural scale)."""
        return {n: e for n, e in self.best.errors.items() if math.isfinite(e) and e > 0}

    def point(self, at: Mapping[str, float], *, start: Mapping[str, float] | None = None) -> ProfilePoint:
        """The constrained minimum with the parameters in `at` held (besides the analysis' fixed ones)."""
        unknown = sorted(set(at) - set(self.names))
        if unknown:
            raise ValueError(f"at: unknown parameters {unknown} (known: {self.names})")
        held = {k: float(v) for k, v in at.items()}
        key = tuple(sorted(held.items()))
        if key in self._cache:
            return self._cache[key]
        s = dict(start) if start is not None else self._warm_start(held)
        res = minimize(self.objective, start=s, fixed={**self.fixed, **held}, bounds=self.bounds, ncall=self.ncall,
                       errors=False, steps=self._steps())
        p = ProfilePoint(held, res.nll, res.valid, dict(res.values), res.calls, res.message)
        self.remember([p])
        return p

    def remember(self, points: Sequence[ProfilePoint]) -> None:
        """Add points computed elsewhere (a scan block read back): later points warm-start from them, a
        point asked for again is not refitted, and a valid one below the global minimum lowers `nll_min`."""
        for p in points:
            self._seen.append(p)
            self._cache[tuple(sorted(p.at.items()))] = p
            if p.valid and p.nll < self._nll_min - 1e-9:
                self._nll_min = p.nll
                self.best_improved = True

    def dnll(self, at: Mapping[str, float]) -> float:
        """Delta NLL of the profile at `at` (relative to the lowest NLL found so far)."""
        p = self.point(at)
        return p.nll - self.nll_min

    def scan(self, names: Sequence[str], grid: np.ndarray) -> list[ProfilePoint]:
        """Profile points at every row of grid (m, len(names)), in the given order, each warm-started from
        the previous one (the first from the nearest point computed before, or the global fit)."""
        g = np.asarray(grid, dtype=np.float64)
        if g.ndim != 2 or g.shape[1] != len(names):
            raise ValueError(f"grid: expected shape (m, {len(names)}) for {list(names)}, got {g.shape}")
        out: list[ProfilePoint] = []
        for row in g:
            at = dict(zip(names, (float(v) for v in row), strict=True))
            out.append(self.point(at, start={**out[-1].values, **at} if out else None))
        return out

    # ------------------------------------------------------------------ 1D intervals
    def interval(
        self,
        name: str,
        level: float,
        *,
        scan: tuple[np.ndarray, np.ndarray] | None = None,
        limits: tuple[float, float] | None = None,
        xtol: float = 1e-5,
    ) -> Interval:
        """Wilks interval of `name` at `level`, crossings found by Brent's method on the profile.

        scan: (x, nll) of a 1D profile scan of `name`: every crossing it shows (several pieces, open ends) is
        refined inside its grid cell. Without it, the profile is walked out from the best fit in steps of
        the parabolic error until it crosses the threshold or reaches `limits` (default: the bounds of
        `name`, else +-10 errors), which gives the single piece that holds the best fit."""
        t = wilks_threshold(level, 1)
        if scan is not None:
            x, nll = (np.asarray(a, dtype=np.float64) for a in scan)
            x0 = self.best.values[name]
            if x[0] < x0 < x[-1] and not np.any(np.isclose(x, x0, rtol=0, atol=1e-12)):
                # the best fit is a point of the profile too: with a grid coarser than the interval, no grid
                # point is inside, and the minimum between two points is what brackets the crossings
                i = int(np.searchsorted(x, x0))
                x, nll = np.insert(x, i, x0), np.insert(nll, i, self.best.nll)
            approx = interval_from_scan(x, nll - self.nll_min, level)
            pieces = []
            for a, b in approx.pieces:
                lo = a if a == x[0] and approx.lo_open and a == approx.lo else self._refine(name, x, a, t, xtol)
                hi = b if b == x[-1] and approx.hi_open and b == approx.hi else self._refine(name, x, b, t, xtol)
                pieces.append((lo, hi))
            if not pieces:
                return approx
            return Interval(level, t, pieces[0][0], pieces[-1][1], approx.lo_open, approx.hi_open, tuple(pieces),
                            "profile")
        best = self.best
        x0 = best.values[name]
        err = best.errors.get(name, math.nan)
        step = err * math.sqrt(2 * t) if math.isfinite(err) and err > 0 else 0.1 * max(1.0, abs(x0))
        span = 10 * (err if math.isfinite(err) and err > 0 else step)
        lim = limits or self.bounds.get(name) or (x0 - span, x0 + span)
        ends, opens = [], []
        for side in (-1.0, 1.0):
            edge = lim[0] if side < 0 else lim[1]
            inside, x = x0, x0
            crossed = False
            for _ in range(40):
                x = x + side * step
                if (x - edge) * side >= 0:
                    x = edge
                if self.dnll({name: x}) > t:
                    crossed = True
                    break
                inside = x
                if x == edge:
                    break
            if crossed:
                root = brentq(lambda v: self.dnll({name: v}) - t, min(inside, x), max(inside, x), xtol=xtol)
                ends.append(float(root))
                opens.append(False)
            else:
                ends.append(float(inside))
                opens.append(True)
        return Interval(level, t, ends[0], ends[1], opens[0], opens[1], ((ends[0], ends[1]),), "profile")

    def _refine(self, name: str, x: np.ndarray, approx: float, t: float, xtol: float) -> float:
        """The crossing of the profile with t inside the grid cell holding `approx` (Brent)."""
        i = int(np.clip(np.searchsorted(x, approx), 1, x.size - 1))
        a, b = float(x[i - 1]), float(x[i])
        fa, fb = self.dnll({name: a}) - t, self.dnll({name: b}) - t
        if fa * fb > 0:  # the refit moved the curve (a better minimum): keep the interpolated crossing
            return float(approx)
        return float(brentq(lambda v: self.dnll({name: v}) - t, a, b, xtol=xtol))
