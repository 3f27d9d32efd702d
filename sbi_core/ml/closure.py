"""Closure on a simulator with an exact likelihood: the learned log r against the true one.

The networks learn ratios of densities *after cuts* (the samples are drawn from the selected events), while
`Simulator.log_likelihood` is the density before cuts; inside the selection the two differ by the
selection efficiency eps(theta) = sigma_fid(theta) / sigma(theta):

    log r_true(x|theta0, theta1) = log p(x|theta0) - log p(x|theta1) - log eps(theta0) + log eps(theta1).

sigma(theta) is the simulator's exact cross section and sigma_fid(theta) the events' weights morphed to theta
(their sum estimates it; with 6000 benchmark events its error on the log efficiency ratio is ~0.002).

`morphed_log_ratio` turns per-benchmark ratios r_b(x) = p(x|theta_b) / p(x|theta_ref) (the benchmark_ratio
ensembles; r_ref = 1) into log r(x|theta, theta_ref): with fiducial cross sections sigma_b and morphing
coefficients alpha_b(theta), p(x|theta) = sum_b alpha_b sigma_b r_b(x) p(x|theta_ref) / sum_b alpha_b sigma_b.

What to use when: `ExactRatio.from_run(layout, cfg, events)` once, then `.log_ratio(x, theta0)`;
`rms(a, b)`; `untrained_like(ensemble, x, ranges)` for the untrained baseline. The `bench learn` closure and
the closure tests use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

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
