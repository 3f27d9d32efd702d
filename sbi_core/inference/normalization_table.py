"""log Z(theta) of a parametrised learned ratio as a Chebyshev series: the normalisation sample's network passes
done once, so every later fit of the same model (toys, scans, profile points) evaluates the network on its own
events only.

Z(theta) = sum_j m_j rhat(x_j | theta) / sum_j m_j over the run's events (`ParametrisedNLL`, normalisation mc) is
the same for every dataset fitted with one network; with a thousand toys it is also the whole cost (the run's
events outnumber a toy's by a hundred or more). `build_table` evaluates log Z exactly at the (degree + 1)^P
Chebyshev nodes of a box in theta, keeps the series' coefficients, and measures its largest error against the
exact log Z at `checks` random points of the box (`NormalizationTable.max_error`: the NLL of a dataset of N
events moves by at most N times it). Valid where every event has the same variation factors T(nu) (no
shape-systematic networks): there sum_j m_j rhat_j T_j = T(nu) sum_j m_j rhat_j, so theta enters the rate
through Z alone. Outside the box the series is not the model: `inside` says whether a point is in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.errors import InputError

__all__ = ["NormalizationTable", "build_table", "chebyshev_log_z"]


@dataclass(frozen=True)
class NormalizationTable:
    """A Chebyshev series of log Z(theta) on the box [lo, hi] (P parameters, degree d per axis)."""

    lo: np.ndarray  # (P,)
    hi: np.ndarray  # (P,)
    coefficients: np.ndarray  # (d + 1,) * P
    max_error: float  # largest |series - exact log Z| at the check points
    evaluations: int  # exact log Z evaluations it took (nodes and checks)

    def inside(self, theta: Any) -> bool:
        t = np.asarray(theta, dtype=np.float64)
        return bool(np.all(t >= self.lo) and np.all(t <= self.hi))

    def log_z(self, theta: Any) -> float:
        return float(chebyshev_log_z(jnp.asarray(theta, dtype=jnp.float64), self.arrays()))

    def arrays(self) -> dict[str, Any]:
        """What the jitted NLL takes (`chebyshev_log_z`'s table)."""
        return {"lo": jnp.asarray(self.lo), "hi": jnp.asarray(self.hi), "c": jnp.asarray(self.coefficients)}


def _basis(u: Any, n: int) -> Any:
    """T_0(u) .. T_{n-1}(u) by the recurrence (differentiable at the box's edges, unlike cos(k arccos u))."""
    out = [jnp.ones_like(u), u]
    for _ in range(2, n):
        out.append(2.0 * u * out[-1] - out[-2])
    return jnp.stack(out[:n])


def chebyshev_log_z(theta: Any, table: dict[str, Any]) -> Any:
    """The series at theta (P,), in JAX (its gradient and Hessian by autodiff)."""
    u = (2.0 * theta - table["lo"] - table["hi"]) / (table["hi"] - table["lo"])
    c = table["c"]
    for axis in range(theta.shape[0]):  # contract one axis at a time: c (n,) * P -> scalar
        c = jnp.tensordot(_basis(u[axis], c.shape[0]), c, axes=(0, 0))
    return c


def _nodes(n: int) -> np.ndarray:
    return np.cos(np.pi * (np.arange(n) + 0.5) / n)  # first kind: u_i in (-1, 1), i = 0 .. n-1


def build_table(log_ratio: Any, params: Any, x: np.ndarray, weight: np.ndarray, lo: Any, hi: Any, *,
                degree: int = 16, checks: int = 32, seed: int = 0, chunk_rows: int = 65536,
                where: str = "normalisation table") -> NormalizationTable:
    """The series of log(sum_j w_j exp(log_ratio(params, x_j, theta)) / sum_j w_j) on the box [lo, hi].

    InputError naming the bound when the box is empty, or the degree when it is below 2."""
    lo_a, hi_a = np.atleast_1d(np.asarray(lo, dtype=np.float64)), np.atleast_1d(np.asarray(hi, dtype=np.float64))
    if lo_a.shape != hi_a.shape or not np.all(hi_a > lo_a):
        raise InputError(f"{where}: the box needs lo < hi for every parameter, got lo {lo_a}, hi {hi_a}")
    if degree < 2:
        raise InputError(f"{where}: degree {degree} must be at least 2")
    log_z = _exact_log_z(log_ratio, params, x, weight, chunk_rows)
    n, dims = degree + 1, lo_a.shape[0]
    u = _nodes(n)
    grid = np.stack(np.meshgrid(*([u] * dims), indexing="ij"), axis=-1).reshape(-1, dims)
    values = np.array([log_z(lo_a + (g + 1.0) * (hi_a - lo_a) / 2.0) for g in grid]).reshape((n,) * dims)
    # discrete Chebyshev transform along each axis: c_k = 2/n sum_i f(u_i) T_k(u_i), c_0 halved
    transform = 2.0 / n * np.cos(np.outer(np.arange(n), np.arccos(u)))
    transform[0] /= 2.0
    coefficients = values
    for axis in range(dims):
        coefficients = np.moveaxis(np.tensordot(transform, coefficients, axes=(1, axis)), 0, axis)
    table = NormalizationTable(lo_a, hi_a, coefficients, math.nan, grid.shape[0])
    rng = np.random.default_rng(seed)
    points = lo_a + rng.random((checks, dims)) * (hi_a - lo_a)
    error = max((abs(table.log_z(t) - log_z(t)) for t in points), default=0.0)
    return NormalizationTable(lo_a, hi_a, coefficients, float(error), grid.shape[0] + checks)


def _exact_log_z(log_ratio: Any, params: Any, x: np.ndarray, weight: np.ndarray, chunk_rows: int) -> Any:
    """theta -> log Z(theta) over the events, chunk by chunk (memory: one chunk)."""
    from sbi_core.inference.parametrised import _chunked, _layout

    x = np.asarray(x, dtype=np.float64)
    w_in = np.asarray(weight, dtype=np.float64)
    if x.ndim != 2 or w_in.shape != (x.shape[0],):
        raise InputError(f"normalisation table: events {x.shape} and weights {w_in.shape} do not match")
    rows, chunks = _layout(x.shape[0], chunk_rows)
    w = np.zeros(chunks * rows)
    w[: x.shape[0]] = w_in
    xc, wc = jnp.asarray(_chunked(x, rows, chunks)), jnp.asarray(w.reshape(chunks, rows))
    total = float(np.sum(w_in))

    @jax.jit
    def fn(theta: Any, p: Any, xc: Any, wc: Any) -> Any:  # the arrays as arguments: not folded into the program
        def body(acc: Any, xs: Any) -> tuple[Any, None]:
            return acc + xs[1] @ jnp.exp(log_ratio(p, xs[0], theta)), None

        s, _ = jax.lax.scan(body, jnp.zeros((), dtype=jnp.float64), (xc, wc))
        return jnp.log(s / total)

    return lambda theta: float(fn(jnp.asarray(theta, dtype=jnp.float64), params, xc, wc))
