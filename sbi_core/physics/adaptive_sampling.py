"""Adaptive importance sampling on a box (a `vegas` map), then unweighting by accept-reject.

How it works, in the order `AdaptiveSampler` does it:
1. Adapt: `vegas.Integrator` iterates on the integrand f(x) >= 0 over the box and learns a separable
   map y -> x(y) from the unit cube, with Jacobian J(y), that makes w(y) = f(x(y)) J(y) as flat as it can.
   Its random numbers come from `numpy.random.default_rng([seed, 0])`, so the map is a pure function
   of (integrand, box, seed): every shard of a run draws from the same map.
2. Find the maximum weight: w_max = `safety` x the largest w over `max_points` uniform y from the
   stream `[seed, 1]`. A finite sample can miss the true maximum, so an event above w_max is not
   dropped: it is accepted and keeps the factor w / w_max (`overweight`), which keeps the sample
   exact (accepted density min(w, w_max); weight max(1, w / w_max): their product is w). The
   integral of the part above w_max, estimated on an independent stream `[seed, 2]`, is `excess`:
   normalisations use the clipped integral `integral - excess` (see `clipped_integral`).
3. Draw: uniform y from the caller's Generator, x = x(y), accept with probability min(1, w / w_max).
The unweighting efficiency is mean(w) / w_max: `efficiency_flat` is the same figure for the identity
map (no adaptation, same max-finding), `efficiency` for the map drawn from (the adapted one, or the
flat one when `SamplerSettings.adapt` is False, which exists for comparisons).

What to use when: build one `AdaptiveSampler` per integrand (it is deterministic: cache it), then
`sample(n, rng)` as often as needed; `report()` gives the figures for logs and benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import vegas

__all__ = ["AdaptiveSampler", "SamplerSettings", "UnweightingReport"]

Integrand = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SamplerSettings:
    """How hard to adapt and how to find the maximum weight."""

    seed: int = 0
    iterations: int = 12
    evaluations: int = 20_000
    max_points: int = 200_000
    safety: float = 1.1
    increments: int = 200
    adapt: bool = True  # False: draw from the flat map (for comparison only: far less efficient)

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.evaluations < 100 or self.max_points < 1000 or self.increments < 2:
            raise ValueError(f"sampler settings too small: {self}")
        if not self.safety >= 1.0:
            raise ValueError(f"safety must be >= 1, got {self.safety}")


@dataclass(frozen=True)
class UnweightingReport:
    """Figures of one sampler (efficiencies are accepted / proposed points)."""

    efficiency_flat: float
    efficiency: float
    w_max: float
    integral: float
    excess: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


class AdaptiveSampler:
    """Exact draws from f(x) / integral(f) on a box, via a vegas-adapted map and accept-reject."""

    def __init__(self, integrand: Integrand, limits: np.ndarray, settings: SamplerSettings | None = None) -> None:
        self.settings = settings or SamplerSettings()
        lim = np.asarray(limits, dtype=np.float64)
        if lim.ndim != 2 or lim.shape[1] != 2 or not np.all(lim[:, 0] < lim[:, 1]):
            raise ValueError(f"limits: expected (d, 2) with low < high, got {lim.tolist()}")
        self._f = integrand
        self.limits = lim
        self.dim = lim.shape[0]
        st = self.settings
        flat = vegas.AdaptiveMap(lim.tolist(), ninc=st.increments)
        self.efficiency_flat, _, _ = self._max_weight(flat, np.random.default_rng([st.seed, 1]))
        self.map = self._adapt() if st.adapt else flat
        self.efficiency, self.w_max, self.integral = self._max_weight(self.map, np.random.default_rng([st.seed, 1]))
        y = np.random.default_rng([st.seed, 2]).random((st.max_points, self.dim))
        w = self.weights(y)[1]
        self.excess = float(np.maximum(w - self.w_max, 0.0).mean())

    # ---------------------------------------------------------------- set-up
    def _adapt(self) -> vegas.AdaptiveMap:
        st = self.settings
        rng = np.random.default_rng([st.seed, 0])
        integ = vegas.Integrator(self.limits.tolist(), ran_array_generator=lambda size: rng.random(size),
                                 nproc=1)

        @vegas.lbatchintegrand
        def f(x: np.ndarray) -> np.ndarray:
            return self._f(np.ascontiguousarray(x))

        integ(f, nitn=st.iterations, neval=st.evaluations)
        return vegas.AdaptiveMap(integ.map)  # a copy: the integrator may be dropped

    def _max_weight(self, amap: vegas.AdaptiveMap, rng: np.random.Generator) -> tuple[float, float, float]:
        """(efficiency mean(w)/w_max, w_max, mean(w)) over max_points uniform y."""
        st = self.settings
        y = rng.random((st.max_points, self.dim))
        w = self._weights(amap, y)[1]
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("integrand: weights must be finite and >= 0")
        w_max = st.safety * float(w.max())
        if not w_max > 0:
            raise ValueError("integrand: zero everywhere on the max-finding sample")
        return float(w.mean()) / w_max, w_max, float(w.mean())

    def _weights(self, amap: vegas.AdaptiveMap, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = np.ascontiguousarray(y, dtype=np.float64)
        x = np.empty_like(y)
        jac = np.empty(y.shape[0])
        amap.map(y, x, jac)
        return x, self._f(x) * jac

    # ---------------------------------------------------------------- use
    def weights(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x(y) (n, d), w(y) = f(x) J(y) (n,)) for points y (n, d) of the unit cube."""
        return self._weights(self.map, y)

    def clipped_integral(self, integral: float) -> float:
        """integral(min(w, w_max)) given an accurate integral(f): what the accepted events represent."""
        return integral - self.excess

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Exactly n accepted points x (n, d) and their overweight factors max(1, w / w_max) (n,).

        Deterministic given rng: per round, uniform y (m, d) then one uniform per point for the test."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n: expected an int >= 0, got {n!r}")
        xs, factors = [], []
        have = 0
        while have < n:
            m = math.ceil((n - have) / self.efficiency * 1.05) + 64
            x, w = self.weights(rng.random((m, self.dim)))
            keep = rng.random(m) * self.w_max < w
            take = np.flatnonzero(keep)[: n - have]
            xs.append(x[take])
            factors.append(np.maximum(1.0, w[take] / self.w_max))
            have += take.size
        if not xs:
            return np.empty((0, self.dim)), np.empty(0)
        return np.concatenate(xs), np.concatenate(factors)

    def report(self) -> UnweightingReport:
        return UnweightingReport(self.efficiency_flat, self.efficiency, self.w_max, self.integral, self.excess)
