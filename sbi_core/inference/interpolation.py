"""Interpolation of a variation between nu = -1, 0, +1: log G(nu) = u f_up(nu) + d f_down(nu).

u and d are the log ratios at nu = +1 and nu = -1 (the contract's `log_ratio_var[..., 0]` and `[..., 1]`).
Both schemes interpolate the *logarithm* of the ratio, so G > 0 always and log G is linear in (u, d): the
NLL uses that to sum the per-event shape terms once per dataset (see `sbi_core.inference.nll`).

- `exponential`: f_up = max(nu, 0), f_down = max(-nu, 0): G = exp(u)^nu for nu >= 0 and exp(d)^(-nu)
  below (HistFactory's piecewise exponential, interpolation code 1). Continuous, with a kink at 0 when
  the variation is asymmetric (u != -d).
- `polyexp`: inside [-1, 1] log G is the 6th-order polynomial with log G(0) = 0 that matches the
  exponential branches' value, slope and curvature at +-1; outside it is the exponential extrapolation.
  Smooth (C2) everywhere. HistFactory's code 4 uses the same matching conditions on G itself rather than
  on log G; on log G the result never turns negative, and a symmetric variation (d = -u, e.g. a
  normalisation (1 + size)^nu) is exactly log-linear, as in the exponential scheme.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["INTERPOLATIONS", "basis_functions", "polyexp_coefficients"]

INTERPOLATIONS = ("exponential", "polyexp")


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


def basis_functions(kind: str) -> Callable[[Any], tuple[Any, Any]]:
    """(f_up(nu), f_down(nu)) as a function of a JAX array nu (any shape), for scheme `kind`."""
    import jax.numpy as jnp

    if kind == "exponential":
        return lambda nu: (jnp.maximum(nu, 0.0), jnp.maximum(-nu, 0.0))
    if kind == "polyexp":
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
    raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {kind!r}")
