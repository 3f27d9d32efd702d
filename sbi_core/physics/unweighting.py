"""Exact unweighting of any importance-sampling proposal: the maximum weight, accept-reject, overweights.

A proposal draws points x with weights w = f(x) / q(x) (f the integrand, q the proposal's density), so
mean(w) estimates the integral of f. Unweighting turns them into events distributed as f / integral(f):
accept a point with probability min(1, w / w_max). How `Unweighter` does it:

1. The maximum weight (`max_weight`), from `max_points` weights of the proposal's own seeded stream:
   - `overweight_fraction = 0` (the default, what `drell_yan_eft` did before): w_max = `safety` x the
     largest weight found;
   - `overweight_fraction = eps > 0`: the quantile rule of MadGraph and MadNIS: w_max = `safety` x the
     smallest w* whose excess, sum(max(w - w*, 0)), is at most eps x sum(w). A few events then lie above
     w_max: far fewer rejections for a proposal whose weights have a long thin tail.
2. Overweight events are kept and counted: an event above w_max is accepted and keeps the factor
   w / w_max (`overweight`), so the sample stays exact (accepted density min(w, w_max), weight
   max(1, w / w_max): their product is w). The integral of the part above w_max, estimated on an
   independent stream, is `excess`: normalisations use the clipped integral `integral - excess`.
3. Draw: points from the caller's Generator, accept where uniform x w_max < w.

`WeightStats` are the figures a physicist asks of a proposal: the unweighting efficiency (accepted /
proposed = mean(min(w, w_max)) / w_max), the relative variance of the weights var(w) / mean(w)^2, and how
many events are overweight. What to use when: wrap a proposal in `Unweighter` once (it is deterministic
given the proposal and the seed: every shard gets the same w_max), then `sample(n, rng)` as often as needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["MaxWeightRule", "Proposal", "Unweighter", "WeightStats", "max_weight", "weight_stats"]


class Proposal(Protocol):
    """Draws points and their importance weights; deterministic given the Generator."""

    dim: int

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(x (n, dim), w (n,)): n points of the proposal and their weights f(x) / q(x) >= 0."""
        ...


@dataclass(frozen=True)
class MaxWeightRule:
    """How w_max is found from a sample of weights (module docstring, step 1)."""

    safety: float = 1.1
    overweight_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not self.safety >= 1.0:
            raise ValueError(f"safety must be >= 1, got {self.safety}")
        if not 0.0 <= self.overweight_fraction < 0.5:
            raise ValueError(f"overweight_fraction must lie in [0, 0.5), got {self.overweight_fraction}")


def max_weight(w: np.ndarray, rule: MaxWeightRule) -> float:
    """w_max of a sample of weights under `rule`; ValueError when the weights are not finite and >= 0."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be a non-empty (n,) array, finite and >= 0")
    top = float(w.max())
    if not top > 0:
        raise ValueError("integrand: zero everywhere on the max-finding sample")
    if rule.overweight_fraction == 0.0:
        return rule.safety * top
    s = np.sort(w)[::-1]
    cum = np.cumsum(s)
    budget = rule.overweight_fraction * float(cum[-1])
    k = np.arange(1, s.size + 1)
    excess_at = cum - k * s  # excess above t = s[k-1]: sum over the k largest of (s_i - s[k-1])
    last = int(np.flatnonzero(excess_at <= budget)[-1])  # excess_at[0] = 0, so there is one
    if last + 1 >= s.size:
        return rule.safety * float(s[-1])
    # On [s[last+1], s[last]] the excess is cum[last] - (last + 1) t: solve for the budget.
    t = max(float(s[last + 1]), (float(cum[last]) - budget) / (last + 1))
    return float(rule.safety * t)


@dataclass(frozen=True)
class WeightStats:
    """Figures of a weight sample at a given w_max."""

    efficiency: float  # mean(min(w, w_max)) / w_max: accepted / proposed
    relative_variance: float  # var(w) / mean(w)^2
    overweight_rate: float  # fraction of points with w > w_max
    overweight_excess: float  # sum(max(w - w_max, 0)) / sum(w)
    integral: float  # mean(w)
    integral_error: float  # std(w) / sqrt(n)
    w_max: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def weight_stats(w: np.ndarray, w_max: float) -> WeightStats:
    """The figures of weights w (n,) for the maximum weight w_max."""
    w = np.asarray(w, dtype=np.float64)
    mean = float(w.mean())
    return WeightStats(
        efficiency=float(np.minimum(w, w_max).mean()) / w_max,
        relative_variance=float(w.var()) / mean**2,
        overweight_rate=float((w > w_max).mean()),
        overweight_excess=float(np.maximum(w - w_max, 0.0).sum()) / float(w.sum()),
        integral=mean,
        integral_error=float(w.std()) / math.sqrt(w.size),
        w_max=float(w_max),
    )


class Unweighter:
    """Exact events from a proposal at a known w_max (`find` searches it: w_max from the stream `[seed, 1]`,
    the excess from `[seed, 2]`)."""

    def __init__(self, proposal: Proposal, *, w_max: float, excess: float, stats: WeightStats) -> None:
        if not (math.isfinite(w_max) and w_max > 0 and math.isfinite(excess) and excess >= 0):
            raise ValueError(f"w_max must be > 0 and excess >= 0, got {w_max}, {excess}")
        self.proposal = proposal
        self.w_max = float(w_max)
        self.excess = float(excess)
        self.stats = stats
        self.efficiency = stats.efficiency
        self.integral = stats.integral

    @classmethod
    def find(cls, proposal: Proposal, *, seed: int, max_points: int, rule: MaxWeightRule) -> Unweighter:
        """Search w_max on max_points weights of the stream `[seed, 1]`, the excess on `[seed, 2]`."""
        if max_points < 1000:
            raise ValueError(f"max_points must be >= 1000, got {max_points}")
        _, w = proposal.draw(max_points, np.random.default_rng([seed, 1]))
        w_max = max_weight(w, rule)
        _, w2 = proposal.draw(max_points, np.random.default_rng([seed, 2]))
        return cls(proposal, w_max=w_max, excess=float(np.maximum(w2 - w_max, 0.0).mean()),
                   stats=weight_stats(w, w_max))

    def clipped_integral(self, integral: float) -> float:
        """integral(min(w, w_max)) given an accurate integral(f): what the accepted events represent."""
        return integral - self.excess

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Exactly n accepted points x (n, d) and their overweight factors max(1, w / w_max) (n,).

        Deterministic given rng: per round, the proposal's draw of m points, then one uniform per point."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n: expected an int >= 0, got {n!r}")
        xs, factors = [], []
        have = 0
        while have < n:
            m = math.ceil((n - have) / self.efficiency * 1.05) + 64
            x, w = self.proposal.draw(m, rng)
            keep = rng.random(m) * self.w_max < w
            take = np.flatnonzero(keep)[: n - have]
            xs.append(x[take])
            factors.append(np.maximum(1.0, w[take] / self.w_max))
            have += take.size
        if not xs:
            return np.empty((0, self.proposal.dim)), np.empty(0)
        return np.concatenate(xs), np.concatenate(factors)
