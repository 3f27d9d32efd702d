"""Toy pseudo-experiments that resample evaluated events: no toy ever needs a new simulation or network pass.

A *pool* is one dataset's likelihood arrays (`LikelihoodArrays`) whose `weight` is each event's weight at the
reference, in pb (the run's own events, `pool.py`: the same MC sample the NLL's "mc" normalisation sums). The
contract's per-event rate at (theta, nu) (version 2: per-sample modifiers, docs/likelihood-model.md) is

    rate_i(theta, nu) = weight_i * sum_s [ sum_{b in s} w_b(theta) exp(log_ratio[i, b]) ] * T_is(nu)

with T_is the product of the multiplicative nuisances' G(log_ratio_var[i, k, :, s], nu_k) times 1 + the sum of
the additive ones' changes (`interpolation.py`), and a toy at (theta, nu) is N ~ Poisson(L sigma(theta, nu))
events drawn from the pool with probability proportional to rate_i, with replacement, and one auxiliary datum
per nuisance parameter drawn from its constraint at the generating value, aux_k ~ N(nu_k, 1) (the global
observables, as pyhf's and RooStats' toys draw them). sigma is the model's own: sum_i rate_i for normalization
"mc" (then toys and Asimov data are exactly the model's), the interpolated cross sections of the arrays for
"xsec" (as `NLLModel` computes them). A toy is stored as the pool rows it drew with their multiplicities as
weights, which gives the same NLL as the drawn events one by one, and its aux. Toy i draws from
SeedSequence(seed, spawn_key=(i,)) (count, events, then aux), so any toy can be rebuilt alone, in any task.

What to use when:
- `ToyGenerator(pool, luminosity=..., interpolation=...)`: `.toy(p, seed, index)` -> a toy's arrays,
  `.asimov(p)` -> the Asimov dataset at p (every pool event weighted by its expected count, scaled to L sigma(p),
  and the auxiliary data set to p's nuisance values: for the CLs limits p is the conditional fit, as in
  pyhf/RooStats), `.expected_events(p)`, `.rates(p)`.
- `fit_toy(arrays, ...)`: the toy's global fit and its profile Delta NLL at the tested values (the test
  statistic of intervals, coverage and Neyman constructions) -> `ToyFit`.
- `coverage(fits, key, level, ndim)`, `critical_value(fits, key, level)`, `neyman_interval(...)`: what the
  toy fits say about intervals (`ToyFit.dnll[key]` for key "cW" or "cW,cHW").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sbi_core.data.likelihood_arrays import LikelihoodArrays
from sbi_core.inference.asymptotics import wilks_threshold
from sbi_core.inference.interpolation import ADDITIVE, basis_numpy, schemes_for
from sbi_core.physics.morphing import monomials

__all__ = ["ToyFit", "ToyGenerator", "coverage", "critical_value", "fit_toy", "neyman_interval", "toy_rng"]


def toy_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of toy `index`: SeedSequence(seed, spawn_key=(index,))."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(index),)))


class ToyGenerator:
    """Toys and Asimov datasets resampled from a pool (see the module doc). Parameters: POIs then nuisances."""

    def __init__(self, pool: LikelihoodArrays, *, luminosity: float, interpolation: str = "polyexp",
                 normalization: str = "mc", schemes: Mapping[str, str] | None = None) -> None:
        if normalization not in ("mc", "xsec"):
            raise ValueError(f"normalization: expected mc or xsec, got {normalization!r}")
        self.normalization = normalization
        if pool.n_events == 0:
            raise ValueError("pool: no events to resample")
        if not np.all(pool.weight >= 0) or not np.any(pool.weight > 0):
            raise ValueError("pool: weights must be >= 0 (expected counts at the reference) and not all 0")
        self.pool = pool
        self.luminosity = float(luminosity)
        self.interpolation = interpolation
        self.schemes = schemes_for(pool.nuisance, interpolation, schemes)
        self.names = list(pool.parameters) + list(pool.nuisance)
        self.n_pois = len(pool.parameters)
        lr = np.asarray(pool.log_ratio, dtype=np.float64)
        self._shift = lr.max(axis=1)
        self._e = np.exp(lr - self._shift[:, None])  # (n, B) in (0, 1]
        with np.errstate(divide="ignore"):
            self._log_w = np.log(np.asarray(pool.weight, dtype=np.float64)) + self._shift
        self._owner = np.zeros((pool.n_samples, len(pool.benchmarks)))
        self._owner[np.asarray(pool.benchmark_sample), np.arange(len(pool.benchmarks))] = 1.0
        lrv = np.asarray(pool.log_ratio_var, dtype=np.float64)  # (n, K, 2, S)
        self._add = np.array([s in ADDITIVE for s in self.schemes], dtype=bool)
        self._lrv_mult = lrv[:, ~self._add]
        self._d_add = np.expm1(lrv[:, self._add])
        self._xsec = np.asarray(pool.xsec, dtype=np.float64)
        self._xsec_ratio = np.asarray(pool.xsec_var, dtype=np.float64) / self._xsec[None, None, :]  # (K, 2, B)
        self._prob_cache: tuple[bytes, np.ndarray] | None = None

    def _split(self, p: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(p, dtype=np.float64)
        if arr.shape != (len(self.names),) or not np.all(np.isfinite(arr)):
            raise ValueError(f"p: expected {len(self.names)} finite values for {self.names}, got {arr.tolist()}")
        return arr[: self.n_pois], arr[self.n_pois :]

    def _alpha(self, theta: np.ndarray) -> np.ndarray:
        return monomials(theta, np.asarray(self.pool.morphing_components)) @ np.asarray(self.pool.morphing_matrix)

    def vector(self, values: Mapping[str, float]) -> np.ndarray:
        """The parameter vector of a {name: value} mapping (nuisances default to 0)."""
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise ValueError(f"unknown parameters {unknown} (known: {self.names})")
        return np.array([float(values.get(n, 0.0)) for n in self.names])

    def expected_events(self, p: Sequence[float] | np.ndarray) -> float:
        """L sigma(theta, nu), as the NLL's extended term: the pool's sum ("mc") or the cross sections ("xsec")."""
        if self.normalization == "mc":
            return float(self.luminosity * np.sum(self.rates(p)))
        theta, nu = self._split(p)
        f = basis_numpy(self.schemes, nu)  # (K, 2)
        mult = np.exp(np.einsum("kjb,kj->b", np.log(self._xsec_ratio[~self._add]), f[~self._add]))
        add = 1.0 + np.einsum("kjb,kj->b", self._xsec_ratio[self._add] - 1.0, f[self._add])
        return float(self.luminosity * np.sum(self._alpha(theta) * self._xsec * mult * add))

    def log_rates(self, p: Sequence[float] | np.ndarray) -> tuple[np.ndarray, int]:
        """(log rate_i (n,), number of events whose rate is <= 0 and get log rate -inf)."""
        theta, nu = self._split(p)
        f = basis_numpy(self.schemes, nu)  # (K, 2)
        per_sample = self._e @ (self._owner * self._alpha(theta)[None, :]).T  # (n, S)
        factors = np.exp(np.einsum("nkjs,kj->ns", self._lrv_mult, f[~self._add]))
        if self._add.any():
            factors = factors * (1.0 + np.einsum("nkjs,kj->ns", self._d_add, f[self._add]))
        s = np.sum(per_sample * factors, axis=1)
        bad = int(np.count_nonzero(s <= 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self._log_w + np.where(s > 0, np.log(np.where(s > 0, s, 1.0)), -np.inf)
        return out, bad

    def rates(self, p: Sequence[float] | np.ndarray) -> np.ndarray:
        """Per-event cross sections at p in pb (the contract's rate; negative rates clipped to 0)."""
        return np.exp(self.log_rates(p)[0])

    def _probabilities(self, p: Sequence[float] | np.ndarray) -> np.ndarray:
        key = np.asarray(p, dtype=np.float64).tobytes()
        if self._prob_cache is not None and self._prob_cache[0] == key:  # a batch of toys shares one point
            return self._prob_cache[1]
        lr, _ = self.log_rates(p)
        top = np.max(lr)
        if not np.isfinite(top):
            raise ValueError(f"no pool event has a positive rate at {list(np.asarray(p))}")
        prob = np.exp(lr - top)
        prob /= prob.sum()
        self._prob_cache = (key, prob)
        return prob

    def draw(self, p: Sequence[float] | np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(pool rows, multiplicities) of one toy at p: N ~ Poisson(L sigma(p)), rows ~ rate_i (with replacement)."""
        n = int(rng.poisson(self.expected_events(p)))
        picks = rng.choice(self.pool.n_events, size=n, replace=True, p=self._probabilities(p))
        rows, counts = np.unique(picks, return_counts=True)
        return rows, counts.astype(np.float64)

    def draw_aux(self, p: Sequence[float] | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The auxiliary data of one toy at p: aux_k ~ N(nu_k, 1), each nuisance's Gaussian constraint."""
        _, nu = self._split(p)
        return nu + rng.standard_normal(nu.size)

    def toy(self, p: Sequence[float] | np.ndarray, seed: int, index: int) -> LikelihoodArrays:
        """Toy `index` at p: the drawn pool rows, weight = how often each was drawn, and its drawn aux."""
        rng = toy_rng(seed, index)
        rows, counts = self.draw(p, rng)
        aux = self.draw_aux(p, rng)
        arrays = self.pool.select(rows)
        return replace(arrays, weight=counts, aux=aux, meta={**self.pool.meta, "toy": int(index), "toy_seed": int(seed)})

    def asimov(self, p: Sequence[float] | np.ndarray) -> LikelihoodArrays:
        """The Asimov dataset at p: every pool event weighted by its expected count L rate_i, the total equal to
        L sigma(p) (for "xsec" scaled to it, so the extended term and the events agree on the count; the shapes
        then agree up to the pool's own statistics), and the auxiliary data at p's nuisance values. With "mc" its
        NLL minimum is exactly at p."""
        _, nu = self._split(p)
        r = self.rates(p)
        total = r.sum()
        if not total > 0:
            raise ValueError(f"no pool event has a positive rate at {list(np.asarray(p))}")
        w = r * (self.expected_events(p) / total)
        keep = w > 0
        arrays = self.pool.select(np.flatnonzero(keep))
        return replace(arrays, weight=w[keep], aux=nu.copy(),
                       meta={**self.pool.meta, "asimov": [float(v) for v in np.asarray(p)]})


@dataclass(frozen=True)
class ToyFit:
    """One toy: its size, global fit and the profile Delta NLL at the tested values, per tested set.

    `dnll` is keyed by the tested parameter names joined by "," ("cW", or "cW,cHW" for a joint test)."""

    index: int
    n_events: int
    valid: bool
    nll: float
    values: dict[str, float]
    dnll: dict[str, float]
    tested: dict[str, float] = field(default_factory=dict)
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "n_events": self.n_events, "valid": self.valid, "nll": self.nll,
                "values": self.values, "dnll": self.dnll, "tested": self.tested, "message": self.message}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ToyFit:
        return cls(int(d["index"]), int(d["n_events"]), bool(d["valid"]), float(d["nll"]), dict(d["values"]),
                   dict(d["dnll"]), dict(d.get("tested", {})), str(d.get("message", "")))


def fit_toy(
    objective: Any,
    index: int,
    n_events: int,
    tested: Mapping[str, float],
    tests: Sequence[Sequence[str]],
    *,
    start: Mapping[str, float] | None = None,
    fixed: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> ToyFit:
    """Global fit of a toy's objective (started at the generating point) and its profile Delta NLL with each
    set in `tests` held at its `tested` values (Delta NLL >= 0 by construction: a profile point below the
    global fit replaces it)."""
    from sbi_core.inference.profile import Profiler

    prof = Profiler(objective, fixed=fixed, bounds=bounds, start=dict(start or tested), errors=False)
    best = prof.best
    points = {",".join(t): prof.point({n: float(tested[n]) for n in t}) for t in tests}
    nll_min = prof.nll_min
    dnll = {k: max(0.0, p.nll - nll_min) for k, p in points.items()}
    valid = best.valid and all(p.valid for p in points.values())
    msg = best.message if not best.valid else next((p.message for p in points.values() if not p.valid), "valid")
    return ToyFit(int(index), int(n_events), valid, float(nll_min), dict(best.values), dnll,
                  {k: float(v) for k, v in tested.items()}, msg)


def coverage(fits: Sequence[ToyFit], key: str, level: float, ndim: int | None = None) -> dict[str, float]:
    """Fraction of valid toys whose Wilks region at `level` holds the tested value (Delta NLL <= threshold),
    with its binomial standard error."""
    ndim = ndim or len(key.split(","))
    vals = np.array([f.dnll[key] for f in fits if f.valid and key in f.dnll])
    if vals.size == 0:
        return {"level": level, "n": 0, "coverage": math.nan, "error": math.nan}
    frac = float(np.mean(vals <= wilks_threshold(level, ndim)))
    return {"level": level, "n": int(vals.size), "coverage": frac,
            "error": math.sqrt(max(frac * (1 - frac), 1.0 / vals.size) / vals.size)}


def critical_value(fits: Sequence[ToyFit], key: str, level: float) -> dict[str, float]:
    """The `level` quantile of the toys' Delta NLL (the Neyman critical value at the toys' point), with a
    68% order-statistic interval on it."""
    vals = np.sort([f.dnll[key] for f in fits if f.valid and key in f.dnll])
    n = vals.size
    if n == 0:
        return {"level": level, "n": 0, "value": math.nan, "lo": math.nan, "hi": math.nan}
    half = math.sqrt(level * (1 - level) * n)
    lo_i, hi_i = int(max(0, math.floor(level * n - half))), int(min(n - 1, math.ceil(level * n + half)))
    return {"level": level, "n": int(n), "value": float(np.quantile(vals, level)), "lo": float(vals[lo_i]),
            "hi": float(vals[hi_i])}


def neyman_interval(grid: np.ndarray, observed_dnll: np.ndarray, critical: np.ndarray) -> tuple[float, float]:
    """The Neyman confidence set {x : observed Delta NLL(x) <= critical value(x)} on a 1D grid, its ends
    interpolated linearly between grid points; (nan, nan) when no grid point is accepted."""
    x, obs, crit = (np.asarray(a, dtype=np.float64) for a in (grid, observed_dnll, critical))
    if not (x.ndim == 1 and obs.shape == x.shape and crit.shape == x.shape):
        raise ValueError(f"grid, observed_dnll, critical: expected three 1-D arrays of one length, got "
                         f"{x.shape}, {obs.shape}, {crit.shape}")
    d = obs - crit
    inside = np.flatnonzero(d <= 0)
    if inside.size == 0:
        return math.nan, math.nan
    ends = []
    for i, j in ((inside[0], inside[0] - 1), (inside[-1], inside[-1] + 1)):
        if 0 <= j < x.size:
            ends.append(float(x[i] + (x[j] - x[i]) * d[i] / (d[i] - d[j])))
        else:
            ends.append(float(x[i]))
    return ends[0], ends[1]
