"""Closure on a simulator with an exact likelihood: what a perfectly trained network would output, to check
learned ratios against.

The networks learn ratios of densities *after cuts* (the samples are drawn from the selected events), while
`Simulator.log_likelihood` is the density before cuts; inside the selection the two differ by the
selection efficiency eps(theta) = sigma_fid(theta) / sigma(theta):

    log r_true(x|theta0, theta1) = log p(x|theta0) - log p(x|theta1) - log eps(theta0) + log eps(theta1).

sigma(theta) is the simulator's exact cross section and sigma_fid(theta) = alpha(theta) . S the events' weights
morphed to theta (S_b: the sum of the run's weights at basis benchmark b; with 6000 benchmark events its error
on the log efficiency ratio is ~0.002). A per-variation network (nu_k = +-1 against nominal, at the reference)
learns log p(x|nu) - log p(x|0) - log f(nu), where f(nu) is the fraction of the weight at the reference that
the variation keeps: for `observable_scale` nuisances the events whose moved observations still pass the cuts
(the training sets move the same events, `Simulator.observations_at`), for `shape_weight` ones the ratio of the
variation's weight column to the nominal one.

`morphed_log_ratio` turns per-benchmark ratios r_b(x) = p(x|theta_b) / p(x|theta_ref) (the benchmark_ratio
ensembles; r_ref = 1) into log r(x|theta, theta_ref): with fiducial cross sections sigma_b and morphing
coefficients alpha_b(theta), p(x|theta) = sum_b alpha_b sigma_b r_b(x) p(x|theta_ref) / sum_b alpha_b sigma_b.

What to use when:
- `ExactRatio.from_events(cfg, basis_weights)` then `.log_ratio(x, theta0)`: nominal ratios against the
  reference from weights in memory (`bench learn` and the closure test of the training stage).
- `FiducialSums.from_events(cfg, sim, events_uri)` (one streaming pass, bounded memory, also the per-variation
  kept fractions), then `ExactTargets(cfg, sim, sums)`: every kind of network's target, as the evaluate step
  needs them: `log_ratio(x, theta0, theta1)` (theta0 per event allowed), `log_ratio_variation(x, variation)`,
  `score(x, theta)`; `available` says whether the simulator has an exact likelihood.
- `rms(a, b)`, `morphed_log_ratio(...)`.
- `untrained_like(ensemble, x, ranges)`: the same architecture at seeded initial weights (the untrained baseline
  of the closure tests and `bench learn`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.physics.morphing import Morphing

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.physics.base import Simulator

#: Floor of a morphed density ratio (a learned sum of signed terms can dip below zero): log stays finite.
MIN_RATIO = 1e-30


def rms(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean square of a - b (same shape, never broadcast)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rms: shapes differ, {a.shape} vs {b.shape}")
    return float(np.sqrt(np.mean((a - b) ** 2)))


@dataclass
class ExactRatio:
    """True log r(x|theta0, theta_ref) after cuts for a simulator with `log_likelihood`."""

    sim: Any
    morphing: Any  # sbi_core.physics.morphing.Morphing of the config's basis
    basis_totals: np.ndarray  # (B,) fiducial sigma_b: the events' summed basis weights
    theta_ref: np.ndarray

    @classmethod
    def from_events(cls, cfg: Any, basis_weights: np.ndarray) -> ExactRatio:
        """From the config and the events' basis weight columns (n, B) (all events of the run)."""
        from sbi_core.physics.morphing import Morphing
        from sbi_core.physics.registry import make_simulator

        sim = make_simulator(cfg)
        basis = np.asarray(cfg.benchmark_matrix(), dtype=np.float64)
        w = np.asarray(basis_weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != basis.shape[0]:
            raise ValueError(f"basis_weights: expected (n, {basis.shape[0]}), got {w.shape}")
        ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
        return cls(sim, Morphing(sim.morphing_powers, basis), w.sum(axis=0), basis[ref].copy())

    def fiducial_xsec(self, theta: np.ndarray) -> float:
        return float(self.morphing.basis_coefficients(np.asarray(theta, dtype=np.float64)) @ self.basis_totals)

    def log_efficiency(self, theta: np.ndarray) -> float:
        return math.log(self.fiducial_xsec(theta) / self.sim.cross_section(np.asarray(theta, dtype=np.float64)))

    def log_ratio(self, x: np.ndarray, theta0: np.ndarray) -> np.ndarray:
        """(n,) true log p_fid(x|theta0) / p_fid(x|theta_ref) for one theta0 (P,)."""
        t0 = np.asarray(theta0, dtype=np.float64)
        xa = np.asarray(x, dtype=np.float64)
        return (self.sim.log_likelihood(xa, t0) - self.sim.log_likelihood(xa, self.theta_ref)
                - self.log_efficiency(t0) + self.log_efficiency(self.theta_ref))


def morphed_log_ratio(log_r_basis: np.ndarray, alpha: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """log r(x|theta, ref) (n,) from per-benchmark log r_b (n, B) (0 for the reference column), morphing
    coefficients alpha (B,) at theta and fiducial cross sections sigma (B,)."""
    lr = np.asarray(log_r_basis, dtype=np.float64)
    a, s = np.asarray(alpha, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    if lr.ndim != 2 or a.shape != (lr.shape[1],) or s.shape != (lr.shape[1],):
        raise ValueError(f"morphed_log_ratio: log_r_basis (n, B), alpha (B,), sigma (B,); got {lr.shape}, "
                         f"{a.shape}, {s.shape}")
    num = np.exp(lr) @ (a * s)
    return np.log(np.maximum(num, MIN_RATIO)) - math.log(float(a @ s))


#: Relative step (of each parameter's range) of the central finite differences of the exact score.
SCORE_STEP = 1e-4


def _morphing(cfg: AnalysisConfig, sim: Simulator) -> Morphing:
    return Morphing(sim.morphing_powers, np.asarray(cfg.benchmark_matrix(), dtype=np.float64))


@dataclass(frozen=True)
class FiducialSums:
    """Weight sums over a run's events (after cuts): `basis` (B,) = sigma_fid at each basis benchmark, in pb;
    `variation_fraction` {'<nuisance>_up' | '_down': f} for every shape systematic, at the reference."""

    basis: np.ndarray
    variation_fraction: dict[str, float] = field(default_factory=dict)
    n_events: int = 0

    @staticmethod
    def from_events(cfg: AnalysisConfig, sim: Simulator, events_uri: str, chunk_rows: int | None = None) -> FiducialSums:
        """One pass over the events file in chunks of `chunk_rows` (default training.samples.chunk_rows)."""
        import h5py

        from sbi_core.data.format import weight_columns
        from sbi_core.data.training_sets import shape_variations
        from sbi_core.physics.cuts import cut_mask

        rows = chunk_rows or cfg.training.samples.chunk_rows
        columns = weight_columns(cfg)
        n_basis = len(cfg.benchmarks)
        ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
        nuisance = [n.name for n in cfg.nuisance]
        variations = shape_variations(cfg)
        kinds = {n.name: str(n.kind) for n in cfg.nuisance}
        basis = np.zeros(n_basis)
        kept = dict.fromkeys((v for v, _, _ in variations), 0.0)
        n = 0
        try:
            with storage.local_copy(events_uri) as path, h5py.File(path, "r") as f:
                obs, wts, lat = f["samples/observations"], f["samples/weights"], f["samples/latent"]
                if wts.shape[1] != len(columns):
                    raise InputError(f"{events_uri}: samples/weights has {wts.shape[1]} columns, the config "
                                     f"describes {len(columns)} ({columns})")
                n = int(wts.shape[0])
                for start in range(0, n, rows):
                    w = wts[start:start + rows]
                    basis += w[:, :n_basis].sum(axis=0)
                    x = z = None
                    for name, nuis, direction in variations:
                        if kinds[nuis] == "shape_weight":
                            col = columns.index(f"{nuis}_{'up' if direction > 0 else 'down'}")
                            kept[name] += float(w[:, col].sum())
                        else:  # observable_scale: the same events, moved, cut again
                            if x is None:
                                x, z = obs[start:start + rows], lat[start:start + rows]
                            nu = np.zeros(len(nuisance))
                            nu[nuisance.index(nuis)] = direction
                            moved = sim.observations_at(x, z, nu)
                            kept[name] += float(w[cut_mask(cfg, moved), ref].sum())
        except FileNotFoundError:
            raise InputError(f"events file {events_uri} not found: run combine --all first") from None
        if not np.all(basis > 0):
            raise InputError(f"{events_uri}: a basis benchmark's weights sum to <= 0 ({basis.tolist()})")
        return FiducialSums(basis, {k: v / basis[ref] for k, v in kept.items()}, n)

    def to_json(self) -> dict[str, object]:
        return {"basis": self.basis.tolist(), "variation_fraction": dict(self.variation_fraction),
                "n_events": self.n_events}

    @staticmethod
    def from_json(d: dict[str, object]) -> FiducialSums:
        return FiducialSums(np.asarray(d["basis"], dtype=np.float64), dict(d["variation_fraction"]),  # type: ignore[arg-type]
                            int(d.get("n_events", 0)))  # type: ignore[call-overload]


class ExactTargets:
    """Exact per-event targets of learned ratios and scores after cuts (see the module docstring)."""

    def __init__(self, cfg: AnalysisConfig, sim: Simulator, sums: FiducialSums) -> None:
        self.cfg, self.sim, self.sums = cfg, sim, sums
        self.morphing = _morphing(cfg, sim)
        self.reference = np.asarray(cfg.benchmark_matrix()[cfg.benchmark_names.index(cfg.sampling_benchmark)])
        self._nuisance = [n.name for n in cfg.nuisance]
        self.available = self.available_for(cfg, sim)

    @staticmethod
    def available_for(cfg: AnalysisConfig, sim: Simulator) -> bool:
        """Whether the simulator has an exact likelihood (else log_likelihood raises NotImplementedError)."""
        ref = np.asarray(cfg.benchmark_matrix()[cfg.benchmark_names.index(cfg.sampling_benchmark)], dtype=np.float64)
        try:
            sim.log_likelihood(np.zeros((1, len(cfg.observables))), ref)
        except NotImplementedError:
            return False
        return True

    def _check(self) -> None:
        if not self.available:
            raise NotImplementedError(f"simulator {self.cfg.simulator.name!r} has no exact likelihood")

    def log_fiducial(self, theta: np.ndarray) -> float:
        """log sigma_fid(theta) = log alpha(theta) . S (from the run's events)."""
        value = float(self.morphing.basis_coefficients(np.asarray(theta, dtype=np.float64)) @ self.sums.basis)
        return float(np.log(value)) if value > 0 else float("nan")

    def log_pass(self, theta: np.ndarray) -> float:
        """log P(theta): the log of the fraction of events passing the cuts at theta."""
        return self.log_fiducial(theta) - float(np.log(self.sim.cross_section(np.asarray(theta, dtype=np.float64))))

    def log_ratio(self, x: np.ndarray, theta0: np.ndarray, theta1: np.ndarray) -> np.ndarray:
        """log p(x|theta0, cuts) / p(x|theta1, cuts) per event, (n,); theta0 and theta1 (P,) or per event (n, P)."""
        self._check()
        x = np.asarray(x, dtype=np.float64)
        return self._log_density(x, theta0) - self._log_density(x, theta1)

    def _log_density(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """log p(x|theta, cuts) per event; theta (P,) or (n, P) evaluated once per distinct row."""
        t = np.asarray(theta, dtype=np.float64)
        p = len(self.cfg.parameters)
        if t.shape == (p,):
            return self.sim.log_likelihood(x, t) - self.log_pass(t)
        if t.shape != (x.shape[0], p):
            raise ValueError(f"theta: expected ({p},) or ({x.shape[0]}, {p}), got {t.shape}")
        out = np.empty(x.shape[0])
        unique, inverse = np.unique(t, axis=0, return_inverse=True)
        for j, row in enumerate(unique):
            sel = inverse.ravel() == j
            out[sel] = self.sim.log_likelihood(x[sel], row) - self.log_pass(row)
        return out

    def log_ratio_variation(self, x: np.ndarray, variation: str) -> np.ndarray:
        """log p(x|ref, nu_k = +-1, cuts) / p(x|ref, nu = 0, cuts) for variation '<nuisance>_up' | '_down'."""
        self._check()
        name, _, direction = variation.rpartition("_")
        if name not in self._nuisance or direction not in ("up", "down"):
            raise InputError(f"variation {variation!r}: expected <nuisance>_up or _down, nuisance in {self._nuisance}")
        if variation not in self.sums.variation_fraction:
            raise InputError(f"variation {variation!r} is not a shape systematic of this analysis")
        nu = np.zeros(len(self._nuisance))
        nu[self._nuisance.index(name)] = 1.0 if direction == "up" else -1.0
        x = np.asarray(x, dtype=np.float64)
        return (self.sim.log_likelihood(x, self.reference, nu) - self.sim.log_likelihood(x, self.reference)
                - np.log(self.sums.variation_fraction[variation]))

    def score(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """grad_theta log p(x|theta, cuts) per event, (n, P), by central differences (SCORE_STEP of each range)."""
        self._check()
        x = np.asarray(x, dtype=np.float64)
        t = np.asarray(theta, dtype=np.float64)
        out = np.empty((x.shape[0], t.shape[0]))
        for k, par in enumerate(self.cfg.parameters):
            h = SCORE_STEP * (par.range[1] - par.range[0])
            step = np.zeros_like(t)
            step[k] = h
            out[:, k] = (self._log_density(x, t + step) - self._log_density(x, t - step)) / (2 * h)
        return out


def untrained_like(ensemble: Any, x: np.ndarray, theta_ranges: np.ndarray | None = None, seed: int = 0) -> Any:
    """An Ensemble of the same architecture at seeded initial weights, standardised on x (and on theta0 uniform
    over theta_ranges (P, 2) for parametrised members): the baseline a closure RMS is compared with."""
    import torch

    from sbi_core.ml.ensemble import Ensemble
    from sbi_core.ml.mlp import MLP

    xa = torch.from_numpy(np.asarray(x, dtype=np.float32))
    models = []
    for m, info in enumerate(ensemble.infos):
        torch.manual_seed(seed + m)
        model = MLP(**info.architecture)
        theta = None
        if model.n_theta:
            if theta_ranges is None:
                raise ValueError("untrained_like: a parametrised ensemble needs theta_ranges")
            lo, hi = np.asarray(theta_ranges, dtype=np.float64).T
            gen = np.random.default_rng(seed + m)
            theta = torch.from_numpy(gen.uniform(lo, hi, (xa.shape[0], model.n_theta)).astype(np.float32))
        model.set_standardisation(xa, theta)
        models.append(model.eval().requires_grad_(False))
    return Ensemble(ensemble.method, ensemble.head, ensemble.variation, list(ensemble.members), models,
                    list(ensemble.infos))
