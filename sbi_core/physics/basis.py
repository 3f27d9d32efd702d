"""Choosing a morphing basis: the benchmarks whose weights morph to any theta with the least noise.

The weight at theta is sum_b alpha_b(theta) w_b, so with independent noise on the w_b its variance
grows with sum_b alpha_b(theta)^2. MadMiner's criterion, used here: minimise the expected value of that
sum over the parameter ranges (theta uniform), keeping the benchmarks the user fixed. The search is a
Fedorov exchange over random candidate points (each free slot swapped for the candidate that lowers the
figure most, sweeping until nothing improves), from a few random starts.

What to use when: `resolve_basis(cfg)` fills an `morphing.basis: optimised` config's benchmark list
(`sbi_core.analysis` calls it); `optimise_basis(...)` and `basis_report(...)` work on plain arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sbi_core.errors import ConfigError
from sbi_core.physics.morphing import MAX_CONDITION, monomials, morphing_powers

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig

#: theta points of the Monte Carlo average over the ranges (fixed seed: the figure is deterministic).
EVALUATION_POINTS = 4096
RESTARTS = 4


@dataclass(frozen=True)
class BasisReport:
    """A basis and its figures of merit."""

    basis: np.ndarray  # (n_components, n_params)
    expected_squared_weights: float  # E_theta[sum_b alpha_b(theta)^2], theta uniform over the ranges
    condition_number: float  # of the monomial matrix

    def to_json(self) -> dict[str, object]:
        return {
            "basis": self.basis.tolist(),
            "expected_squared_weights": self.expected_squared_weights,
            "condition_number": self.condition_number,
        }


def _gram(powers: np.ndarray, ranges: np.ndarray, seed: int) -> np.ndarray:
    """E_theta[phi(theta) phi(theta)^T] for the monomials phi, theta uniform in ranges (Monte Carlo)."""
    rng = np.random.default_rng([seed, 0x5EED])
    thetas = rng.uniform(ranges[:, 0], ranges[:, 1], size=(EVALUATION_POINTS, ranges.shape[0]))
    phi = monomials(thetas, powers)
    return phi.T @ phi / EVALUATION_POINTS


def _cost(matrix: np.ndarray, gram: np.ndarray) -> float:
    """E[sum_b alpha_b^2] = trace(M^-T G M^-1) for alpha = phi M^-1; inf when M is singular."""
    try:
        inv = np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        return math.inf
    value = float(np.einsum("ij,jk,ik->", inv.T, gram, inv.T))
    return value if math.isfinite(value) and value > 0 else math.inf


def basis_report(powers: np.ndarray, basis: np.ndarray, ranges: np.ndarray, seed: int = 0) -> BasisReport:
    """The figures of merit of a given basis over the ranges (P, 2)."""
    basis = np.asarray(basis, dtype=np.float64)
    matrix = monomials(basis, powers)
    return BasisReport(basis, _cost(matrix, _gram(powers, np.asarray(ranges, float), seed)), float(np.linalg.cond(matrix)))


def optimise_basis(
    powers: np.ndarray, ranges: np.ndarray, fixed: np.ndarray, *, candidates: int = 400, seed: int = 0
) -> BasisReport:
    """A basis with the `fixed` (F, P) points first and n_components - F points chosen from candidates
    uniform in ranges (P, 2) (plus the corners), minimising the expected sum of squared morphing weights."""
    ranges = np.asarray(ranges, dtype=np.float64)
    fixed = np.asarray(fixed, dtype=np.float64).reshape(-1, ranges.shape[0])
    n_comp = powers.shape[0]
    free = n_comp - fixed.shape[0]
    if free < 0:
        raise ValueError(f"{fixed.shape[0]} fixed benchmarks for {n_comp} morphing components")
    gram = _gram(powers, ranges, seed)
    rng = np.random.default_rng([seed, 0xBA515])
    corners = np.array(np.meshgrid(*ranges)).reshape(ranges.shape[0], -1).T
    pool = np.vstack([corners, rng.uniform(ranges[:, 0], ranges[:, 1], size=(candidates, ranges.shape[0]))])
    pool_phi = monomials(pool, powers)
    fixed_phi = monomials(fixed, powers) if fixed.size else np.empty((0, n_comp))
    best_choice, best_cost = None, math.inf
    for _ in range(RESTARTS if free else 1):
        choice = list(rng.choice(len(pool), size=free, replace=False))
        cost = _cost(np.vstack([fixed_phi, pool_phi[choice]]), gram)
        improved = True
        while improved:
            improved = False
            for slot in range(free):
                rows = np.vstack([fixed_phi, pool_phi[choice]])
                for c in range(len(pool)):
                    if c in choice:
                        continue
                    rows[fixed.shape[0] + slot] = pool_phi[c]
                    trial = _cost(rows, gram)
                    if trial < cost * (1 - 1e-12):
                        cost, choice[slot], improved = trial, c, True
                    rows[fixed.shape[0] + slot] = pool_phi[choice[slot]]
        if cost < best_cost:
            best_choice, best_cost = list(choice), cost
    basis = np.vstack([fixed, pool[best_choice]]) if free else fixed
    return BasisReport(basis, best_cost, float(np.linalg.cond(monomials(basis, powers))))


def config_powers(cfg: AnalysisConfig) -> np.ndarray:
    """The config's morphing monomials (max power per parameter, max overall power)."""
    return morphing_powers(cfg.max_powers, cfg.morphing.max_overall_power)


def resolve_basis(cfg: AnalysisConfig, source: str = "") -> AnalysisConfig:
    """The config with a complete basis: unchanged when it lists one benchmark per monomial; with the
    missing benchmarks chosen by `optimise_basis` when `morphing.basis: optimised`; ConfigError otherwise."""
    from sbi_core.config import validate_config

    powers = config_powers(cfg)
    n_comp, n_given = powers.shape[0], len(cfg.benchmarks)
    if n_given > n_comp:
        raise ConfigError(source, [("benchmarks", f"{n_given} benchmarks for {n_comp} morphing components "
                                    f"(max_power {cfg.max_powers}): exactly {n_comp} are needed")])
    if n_given == n_comp:
        return cfg
    if cfg.morphing.basis != "optimised":
        raise ConfigError(source, [("benchmarks", f"{n_given} benchmarks for {n_comp} morphing components "
                                    f"(max_power {cfg.max_powers}): list {n_comp}, or set morphing.basis: "
                                    f"optimised to choose the other {n_comp - n_given}")])
    ranges = np.array([p.range for p in cfg.parameters], dtype=np.float64)
    report = optimise_basis(powers, ranges, np.array(cfg.benchmark_matrix()), candidates=cfg.morphing.candidates,
                            seed=cfg.morphing.seed)
    if report.condition_number > MAX_CONDITION:
        raise ConfigError(source, [("benchmarks", f"no well-conditioned basis found (condition number "
                                    f"{report.condition_number:.3g}): fix fewer benchmarks or widen the ranges")])
    taken = set(cfg.benchmark_names)
    names = [f"morph{i}" for i in range(1, 10 * n_comp) if f"morph{i}" not in taken][: n_comp - n_given]
    data = cfg.model_dump(mode="json")
    data["benchmarks"] = data["benchmarks"] + [
        {"name": name, "values": {p: round(float(v), 12) for p, v in zip(cfg.parameter_names, row, strict=True)}}
        for name, row in zip(names, report.basis[n_given:], strict=True)
    ]
    return validate_config(data, source)


def quadratic_morphing_issues(cfg: AnalysisConfig, simulator: str) -> list[tuple[str, str]]:
    """For simulators whose |M|^2 is quadratic in every parameter: the config must morph with max_power 2."""
    if cfg.max_powers == [2] * len(cfg.parameters) and cfg.morphing.max_overall_power in (None, 2):
        return []
    return [("morphing.max_power", f"the {simulator} simulator's |M|^2 is quadratic in every parameter: "
             "max_power 2 and max_overall_power 2 (the defaults) are needed")]
