"""The exact answer learned ratios are checked against, for simulators with an exact likelihood (the benchmark).

A network trained on events after cuts learns ratios of densities *after cuts*:

    log r(x | theta0, theta1) = log p(x|theta0) - log p(x|theta1) - log P(theta0) + log P(theta1),

P(theta) = sigma_fid(theta) / sigma(theta) the fraction of events passing the cuts. The simulator gives
p(x|theta) (before cuts) and sigma(theta) in closed form; sigma_fid(theta) = alpha(theta) . S comes from the
run's events (S_b: the sum of their weights at basis benchmark b; alpha: the morphing coefficients), the same
events the training sets were drawn from. A per-variation network (nu_k = +-1 against nominal, at the reference)
learns log p(x|nu) - log p(x|0) - log f(nu), where f(nu) is the fraction of the weight at the reference that the
variation keeps: for `observable_scale` nuisances the events whose moved observations still pass the cuts (the
training sets move the same events, `Simulator.observations_at`), for `shape_weight` ones the ratio of the
variation's weight column to the nominal one.

What to use when:
- `FiducialSums.from_events(cfg, sim, events_uri)`: one streaming pass over a run's events (bounded memory).
- `ExactRatios(cfg, sim, sums)`: `available` says whether the simulator has an exact likelihood;
  `log_ratio(x, theta0, theta1)`, `log_ratio_variation(x, variation)` and `score(x, theta)` give the exact
  targets per event; `log_fiducial(theta)` is log sigma_fid(theta).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.physics.morphing import Morphing

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.physics.base import Simulator

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
        from sbi_core.data.generate import cut_mask
        from sbi_core.data.training_sets import shape_variations

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


class ExactRatios:
    """Exact per-event targets of learned ratios and scores after cuts (see the module docstring)."""

    def __init__(self, cfg: AnalysisConfig, sim: Simulator, sums: FiducialSums) -> None:
        self.cfg, self.sim, self.sums = cfg, sim, sums
        self.morphing = _morphing(cfg, sim)
        self.reference = np.asarray(cfg.benchmark_matrix()[cfg.benchmark_names.index(cfg.sampling_benchmark)])
        self._nuisance = [n.name for n in cfg.nuisance]
        try:
            sim.log_likelihood(np.zeros((1, len(cfg.observables))), self.reference)
            self.available = True
        except NotImplementedError:
            self.available = False

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
