"""Adaptive importance sampling on a box (a `vegas` map), then exact unweighting (`unweighting.Unweighter`).

How it works, in the order `AdaptiveSampler` does it:
1. Adapt: `vegas.Integrator` iterates on the integrand f(x) >= 0 over the box and learns a separable
   map y -> x(y) from the unit cube, with Jacobian J(y), that makes w(y) = f(x(y)) J(y) as flat as it can.
   Its random numbers come from `numpy.random.default_rng([seed, 0])`, so the map is a pure function
   of (integrand, box, seed): every shard of a run draws from the same map.
2. Maximum weight, overweights and accept-reject: `unweighting.Unweighter` on the map (`VegasProposal`:
   uniform y, x = x(y), w = f(x) J(y)), with its seeded streams `[seed, 1]` (w_max) and `[seed, 2]` (the
   excess above w_max); `SamplerSettings.safety` and `overweight_fraction` choose the rule (the largest
   weight found, or the quantile rule of MadGraph and MadNIS).
The unweighting efficiency is accepted / proposed points: `efficiency_flat` is the same figure for the
identity map (no adaptation, same max-finding), `efficiency` for the map drawn from (the adapted one, or
the flat one when `SamplerSettings.adapt` is False, which exists for comparisons).

What to use when: build one `AdaptiveSampler` per integrand (it is deterministic: cache it), then
`sample(n, rng)` as often as needed; `report()` gives the figures for logs and benchmarks; `map` is the
adapted grid (`neural_sampling` starts its flows from such a grid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import vegas

from sbi_core.physics.unweighting import MaxWeightRule, Unweighter, WeightStats

__all__ = ["AdaptiveSampler", "SamplerSettings", "UnweightingReport", "VegasProposal", "adapt_map"]

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
    overweight_fraction: float = 0.0  # > 0: the quantile rule for w_max (unweighting.max_weight)

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.evaluations < 100 or self.max_points < 1000 or self.increments < 2:
            raise ValueError(f"sampler settings too small: {self}")
        MaxWeightRule(self.safety, self.overweight_fraction)  # checks both

    @property
    def rule(self) -> MaxWeightRule:
        return MaxWeightRule(self.safety, self.overweight_fraction)


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


def adapt_map(integrand: Integrand, limits: np.ndarray, *, seed: int, iterations: int,
              evaluations: int) -> vegas.AdaptiveMap:
    """A vegas map adapted on integrand over the box limits (d, 2), from the stream `[seed, 0]` (vegas
    chooses the number of increments)."""
    rng = np.random.default_rng([seed, 0])
    integ = vegas.Integrator(np.asarray(limits, dtype=np.float64).tolist(),
                             ran_array_generator=lambda size: rng.random(size), nproc=1)

    @vegas.lbatchintegrand
    def f(x: np.ndarray) -> np.ndarray:
        return integrand(np.ascontiguousarray(x))

    integ(f, nitn=iterations, neval=evaluations)
    return vegas.AdaptiveMap(integ.map)  # a copy: the integrator may be dropped


class VegasProposal:
    """Uniform y in the unit cube through a vegas map: x = x(y), w = f(x) J(y)."""

    def __init__(self, integrand: Integrand, amap: vegas.AdaptiveMap) -> None:
        self._f = integrand
        self.map = amap
        self.dim = int(amap.dim)

    def weights(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x(y) (n, d), w(y) = f(x) J(y) (n,)) for points y (n, d) of the unit cube."""
        y = np.ascontiguousarray(y, dtype=np.float64)
        x = np.empty_like(y)
        jac = np.empty(y.shape[0])
        self.map.map(y, x, jac)
        w = self._f(x) * jac
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("integrand: weights must be finite and >= 0")
        return x, w

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.weights(rng.random((n, self.dim)))


class AdaptiveSampler:
    """Exact draws from f(x) / integral(f) on a box, via a vegas-adapted map and accept-reject."""

    def __init__(self, integrand: Integrand, limits: np.ndarray, settings: SamplerSettings | None = None) -> None:
        self.settings = st = settings or SamplerSettings()
        lim = np.asarray(limits, dtype=np.float64)
        if lim.ndim != 2 or lim.shape[1] != 2 or not np.all(lim[:, 0] < lim[:, 1]):
            raise ValueError(f"limits: expected (d, 2) with low < high, got {lim.tolist()}")
        self.limits = lim
        self.dim = lim.shape[0]
        flat = VegasProposal(integrand, vegas.AdaptiveMap(lim.tolist(), ninc=st.increments))
        self.flat_stats = Unweighter.find(flat, seed=st.seed, max_points=st.max_points, rule=st.rule).stats
        self.efficiency_flat = self.flat_stats.efficiency
        amap = adapt_map(integrand, lim, seed=st.seed, iterations=st.iterations,
                         evaluations=st.evaluations) if st.adapt else flat.map
        self.proposal = VegasProposal(integrand, amap)
        self._unweighter = Unweighter.find(self.proposal, seed=st.seed, max_points=st.max_points, rule=st.rule)
        self.map = amap
        self.efficiency = self._unweighter.efficiency
        self.w_max = self._unweighter.w_max
        self.integral = self._unweighter.integral
        self.excess = self._unweighter.excess

    @property
    def stats(self) -> WeightStats:
        """Efficiency, relative variance of the weights, overweights of the map drawn from (max-search sample)."""
        return self._unweighter.stats

    def weights(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x(y) (n, d), w(y) = f(x) J(y) (n,)) for points y (n, d) of the unit cube."""
        return self.proposal.weights(y)

    def clipped_integral(self, integral: float) -> float:
        """integral(min(w, w_max)) given an accurate integral(f): what the accepted events represent."""
        return self._unweighter.clipped_integral(integral)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Exactly n accepted points x (n, d) and their overweight factors max(1, w / w_max) (n,).

        Deterministic given rng: per round, uniform y (m, d) then one uniform per point for the test."""
        return self._unweighter.sample(n, rng)

    def report(self) -> UnweightingReport:
        return UnweightingReport(self.efficiency_flat, self.efficiency, self.w_max, self.integral, self.excess)
