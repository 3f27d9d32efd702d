"""Interpolation of a variation between nu = -1, 0, +1, per nuisance parameter (HistFactory's codes).

u and d are the log ratios at nu = +1 and nu = -1 (the contract's `log_ratio_var[..., 0, s]` and `[..., 1, s]`).
Every scheme is written with two basis functions (f_up(nu), f_down(nu)):

- `exponential` (HistFactory / pyhf code 1, pyhf's default for normsys): log G = u f_up + d f_down with
  f_up = max(nu, 0), f_down = max(-nu, 0): G = exp(u)^nu above 0, exp(d)^(-nu) below. Continuous, a kink at 0
  when the variation is asymmetric (u != -d).
- `polyexp` (the pipeline's default): log G = u f_up + d f_down with, inside [-1, 1], the 6th-order polynomials
  with f(0) = 0 that match the exponential branches' value, slope and curvature at +-1; outside, the exponential
  extrapolation. Smooth (C2). HistFactory's code 4 puts the same matching conditions on G itself rather than on
  log G; on log G the result never turns negative, and a symmetric variation (d = -u, e.g. a normalisation
  (1 + size)^nu) is exactly log-linear, as in the exponential scheme.
- `linear` (HistFactory / pyhf code 0, pyhf's default for histosys): additive, G = 1 + (e^u - 1) f_up +
  (e^d - 1) f_down with the exponential scheme's f: the rate moves linearly towards the +-1 variation. Several
  additive nuisances on one sample add their changes (1 + sum_k ...), as HistFactory adds histosys deltas; the
  multiplicative schemes multiply. G can reach 0 or below for large |nu| (as in HistFactory): the NLL then
  floors the event's rate (`sbi_core.inference.nll`).

The two multiplicative schemes make log G linear in (u, d), which the NLL uses to sum the per-event shape
terms once per dataset; an additive scheme or a nuisance acting on some samples only is evaluated per event.
`basis_functions` is the JAX form (used inside the NLL), `basis_numpy` the NumPy form (toys, references).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ADDITIVE", "INTERPOLATIONS", "basis_functions", "basis_numpy", "polyexp_coefficients", "schemes_for"]

INTERPOLATIONS = ("exponential", "polyexp", "linear")
#: Schemes that add to the rate (1 + delta) instead of multiplying it (exp(log ratio . f)).
ADDITIVE = ("linear",)


def polyexp_coefficients() -> tuple[np.ndarray, np.ndarray]:
    """Coefficients a_1..a_6 of f_up and f_down inside [-1, 1] (f = sum_j a_j nu^j)."""
    rows = []
    for x in (1.0, -1.0):
        rows.append([x**j for j in range(1, 7)])  # value
        rows.append([j * x ** (j - 1) for j in range(1, 7)])  # slope
        rows.append([j * (j - 1) * x ** (j - 2) for j in range(1, 7)])  # curvature
    a = np.array(rows)
    # f_up: value 1, slope 1, curvature 0 at +1 (the branch nu); 0, 0, 0 at -1.
    # f_down: 0, 0, 0 at +1; value 1, slope -1, curvature 0 at -1 (the branch -nu).
    up = np.linalg.solve(a, np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    down = np.linalg.solve(a, np.array([0.0, 0.0, 0.0, 1.0, -1.0, 0.0]))
    return up, down


def _check(kind: str) -> None:
    if kind not in INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {kind!r}")


def schemes_for(nuisance: Sequence[str], default: str, overrides: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The scheme of every nuisance parameter: `default`, or its entry in `overrides` (name -> scheme)."""
    _check(default)
    over = dict(overrides or {})
    unknown = sorted(set(over) - set(nuisance))
    if unknown:
        raise ValueError(f"interpolation overrides: unknown nuisance parameters {unknown} (known: {list(nuisance)})")
    for kind in over.values():
        _check(kind)
    return tuple(over.get(n, default) for n in nuisance)


def basis_functions(kind: str) -> Callable[[Any], tuple[Any, Any]]:
    """(f_up(nu), f_down(nu)) as a function of a JAX array nu (any shape), for scheme `kind`."""
    import jax.numpy as jnp

    _check(kind)
    if kind != "polyexp":  # exponential and linear share the piecewise-linear basis
        return lambda nu: (jnp.maximum(nu, 0.0), jnp.maximum(-nu, 0.0))
    up, down = polyexp_coefficients()

    def poly(coef: np.ndarray, nu: Any) -> Any:
        acc = jnp.zeros_like(nu)
        for a in coef[::-1]:  # Horner, a_6 first; a_0 = 0
            acc = (acc + a) * nu
        return acc

    def fns(nu: Any) -> tuple[Any, Any]:
        inside = jnp.abs(nu) <= 1.0
        nu_in = jnp.clip(nu, -1.0, 1.0)  # keeps the unused branch finite under differentiation
        f_up = jnp.where(inside, poly(up, nu_in), jnp.maximum(nu, 0.0))
        f_down = jnp.where(inside, poly(down, nu_in), jnp.maximum(-nu, 0.0))
        return f_up, f_down

    return fns


def basis_numpy(kind: str | Sequence[str], nu: np.ndarray) -> np.ndarray:
    """F(nu) = (f_up(nu_k), f_down(nu_k))_k, shape (K, 2), in NumPy float64; `kind` one scheme or one per nuisance."""
    nu = np.asarray(nu, dtype=np.float64)
    kinds = [kind] * nu.size if isinstance(kind, str) else list(kind)
    if len(kinds) != nu.size:
        raise ValueError(f"interpolation: {len(kinds)} schemes for {nu.size} nuisance parameters")
    up, down = np.maximum(nu, 0.0), np.maximum(-nu, 0.0)
    poly = np.array([k == "polyexp" for k in kinds], dtype=bool)
    for k in set(kinds):
        _check(k)
    if np.any(poly):
        inside = (np.abs(nu) <= 1.0) & poly
        c_up, c_down = polyexp_coefficients()
        powers = np.stack([nu**j for j in range(1, 7)], axis=-1)
        up = np.where(inside, powers @ c_up, up)
        down = np.where(inside, powers @ c_down, down)
    return np.stack([up, down], axis=-1)
