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
from sbi_core.physics.morphing import Morphing, monomials, quadratic_powers

__all__ = ["synthetic_arrays", "two_sample_arrays"]


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


def two_sample_arrays(
    n: int,
    *,
    truth: tuple[float, float] = (0.0, 0.0),
    luminosity: float = 200.0,
    sigma_ref: float = 5.0,
    background: float = 0.4,
    weights: str = "asimov",
    seed: int = 0,
) -> LikelihoodArrays:
    """A version-2 model of two samples: the squared-amplitude signal of `synthetic_arrays` (2 POIs, 6 columns)
    and a theta-independent background (one column, `background` x sigma_ref on average), with three nuisances:
    `lumi` (5%, on both samples alike), `bkg_norm` (10%, on the background only) and `sig_shape` (a per-event
    shape of about 5% on the signal only). Events are an MC sample of the signal at theta = 0 (weight sigma_ref
    / n each at the reference), so the cross sections are the sample means and the model is self-consistent:
    the Asimov dataset (`weights="asimov"`) has its NLL minimum at (truth, 0) with the MC normalisation."""
    rng = np.random.default_rng(seed)
    base = synthetic_arrays(n, 0, n_pois=2, seed=seed)
    g = np.exp(rng.normal(np.log(background), 0.5, n))  # background rate over the reference rate, per event
    g *= background / g.mean()
    u = rng.normal(0.0, 1.0, n)
    log_ratio = np.concatenate([base.log_ratio, np.log(g)[:, None]], axis=1)  # (n, 7)
    lrv = np.zeros((n, 3, 2, 2))
    lrv[:, 0, 0, :], lrv[:, 0, 1, :] = np.log1p(0.05), -np.log1p(0.05)
    lrv[:, 1, 0, 1], lrv[:, 1, 1, 1] = np.log1p(0.10), -np.log1p(0.10)
    lrv[:, 2, 0, 0], lrv[:, 2, 1, 0] = 0.05 * u, -0.04 * u
    owner = np.array([0] * 6 + [1])
    rates = np.exp(log_ratio)  # (n, 7) per column
    xsec = sigma_ref * rates.mean(axis=0)
    xsec_var = sigma_ref * np.einsum("ib,ikjb->kjb", rates, np.exp(lrv[:, :, :, owner])) / n
    xsec_var[1][:, owner == 0] = xsec[owner == 0]  # exactly unchanged where the nuisance does not act
    xsec_var[2][:, owner == 1] = xsec[owner == 1]
    components = base.morphing_components
    const = int(np.flatnonzero(~components.any(axis=1))[0])
    matrix = np.concatenate([base.morphing_matrix, np.eye(components.shape[0])[:, [const]]], axis=1)
    t = np.asarray(truth, dtype=np.float64)
    alpha = monomials(t, components) @ matrix
    if weights == "asimov":
        w = luminosity * sigma_ref / n * (rates @ alpha)
    elif weights == "unit":
        w = np.ones(n)
    else:
        raise ValueError(f"weights: expected 'asimov' or 'unit', got {weights!r}")
    return LikelihoodArrays(
        source="exact", parameters=list(base.parameters), benchmarks=[*base.benchmarks, "background"],
        benchmark_values=np.vstack([base.benchmark_values, np.full((1, 2), np.nan)]), reference="b0",
        morphing_components=components, morphing_matrix=matrix, nuisance=["lumi", "bkg_norm", "sig_shape"],
        nuisance_kinds=["normalization", "normalization", "shape_weight"], nuisance_sizes=np.array([0.05, 0.1, 0.05]),
        xsec=xsec, xsec_var=xsec_var, log_ratio=log_ratio, log_ratio_var=lrv, weight=w,
        samples=["signal", "background"], benchmark_sample=owner,
        modifier_mask=np.array([[True, True], [False, True], [True, False]]),
        meta={"synthetic": f"two samples n={n} seed={seed}"},
    )
