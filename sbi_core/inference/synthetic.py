"""Synthetic likelihood arrays of a physical model, for tests and benchmarks of the inference code.

`synthetic_arrays(n, n_nuisance, ...)` returns contract arrays (`LikelihoodArrays`) of a squared-amplitude
model: per event, dsigma_i(theta) proportional to (1 + sum_p theta_p c_ip)^2, so the rate is a positive
quadratic in theta and morphing on (P+1)(P+2)/2 benchmarks is exact; each nuisance k shifts the per-event
log rate by size_k u_ik (+1) or -size_k u_ik (1 + asym) (-1). The cross sections are the sample means of
the same events, so the model is self-consistent: an Asimov dataset (`weights="asimov"`, every event
weighted to its expected count at `truth`, nu = 0) has its NLL minimum exactly at (truth, 0).
"""

from __future__ import annotations

import numpy as np

from sbi_core.data.likelihood_arrays import LikelihoodArrays
from sbi_core.physics.morphing import Morphing, quadratic_powers

__all__ = ["synthetic_arrays"]


def _basis(n_pois: int, rng: np.random.Generator) -> np.ndarray:
    if n_pois == 2:  # the benchmark config's pentagon around the SM
        ang = np.pi / 2 - 2 * np.pi * np.arange(5) / 5
        return np.vstack([[0.0, 0.0], np.stack([np.sin(ang), np.cos(ang)], 1)])
    n_b = (n_pois + 1) * (n_pois + 2) // 2
    for _ in range(100):
        pts = np.vstack([np.zeros(n_pois), rng.uniform(-1, 1, (n_b - 1, n_pois))])
        try:
            Morphing(quadratic_powers(n_pois), pts, max_condition=1e4)
            return pts
        except Exception:  # noqa: BLE001, S112 - draw again
            continue
    raise RuntimeError("no well-conditioned basis found")


def synthetic_arrays(
    n: int,
    n_nuisance: int = 0,
    *,
    n_pois: int = 2,
    truth: tuple[float, ...] | None = None,
    luminosity: float = 200.0,
    sigma_ref: float = 5.0,
    weights: str = "asimov",
    size: float = 0.05,
    seed: int = 0,
) -> LikelihoodArrays:
    """n events, n_nuisance shape nuisances; weights "asimov" (expected counts at truth) or "unit"."""
    rng = np.random.default_rng(seed)
    basis = _basis(n_pois, rng)
    powers = quadratic_powers(n_pois)
    morph = Morphing(powers, basis)
    c = rng.normal(0.0, 0.4, (n, n_pois))
    amp_b = 1.0 + c @ basis.T  # (n, B): amplitude at each benchmark, 1 at the reference (theta = 0)
    log_ratio = np.log(amp_b**2)
    u = rng.normal(0.0, 1.0, (n, n_nuisance))
    asym = rng.uniform(-0.2, 0.2, n_nuisance)
    lrv = np.stack([size * u, -size * u * (1.0 + asym)], axis=2)  # (n, K, 2)
    xsec = sigma_ref * np.mean(amp_b**2, axis=0)
    xsec_var = sigma_ref * np.einsum("ib,ikj->kjb", amp_b**2, np.exp(lrv)) / n
    t = np.zeros(n_pois) if truth is None else np.asarray(truth, dtype=np.float64)
    if weights == "asimov":
        w = luminosity * sigma_ref / n * (1.0 + c @ t) ** 2
    elif weights == "unit":
        w = np.ones(n)
    else:
        raise ValueError(f"weights: expected 'asimov' or 'unit', got {weights!r}")
    return LikelihoodArrays(
        source="exact",
        parameters=[f"theta{p}" for p in range(n_pois)],
        benchmarks=[f"b{b}" for b in range(basis.shape[0])],
        benchmark_values=basis,
        reference="b0",
        morphing_components=powers,
        morphing_matrix=morph.matrix,
        nuisance=[f"nu{k}" for k in range(n_nuisance)],
        nuisance_kinds=["shape_weight"] * n_nuisance,
        nuisance_sizes=np.full(n_nuisance, size),
        xsec=xsec,
        xsec_var=xsec_var,
        log_ratio=log_ratio,
        log_ratio_var=lrv,
        weight=w,
        meta={"synthetic": f"n={n} K={n_nuisance} seed={seed}"},
    )
