"""A damped Newton minimiser and central finite differences: a refit needs nothing but numpy.

`newton(fun, grad, hess, x0)` takes Newton steps with a Levenberg shift when the Hessian is not positive
definite and a backtracking (Armijo) line search; it stops when a step moves no parameter by more than
`xtol` (relative to max(1, |x|)) and the gradient is small, which on a smooth NLL is within a few
iterations of quadratic convergence. `fd_grad` / `fd_hessian` are central differences for the numpy
backend (exact derivatives come from JAX when it is installed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["FitResult", "fd_grad", "fd_hessian", "newton"]


@dataclass(frozen=True)
class FitResult:
    x: np.ndarray
    fun: float
    iterations: int
    converged: bool
    message: str


def fd_grad(fun: Callable[[np.ndarray], float], x: np.ndarray, rel: float = 1e-5) -> np.ndarray:
    """Central-difference gradient (error ~ eps |f| / h + h^2 |f'''|)."""
    g = np.empty_like(x)
    for i in range(x.size):
        h = rel * max(1.0, abs(x[i]))
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (fun(x + e) - fun(x - e)) / (2 * h)
    return g


def fd_hessian(fun: Callable[[np.ndarray], float], x: np.ndarray, rel: float = 1e-4) -> np.ndarray:
    """Central second differences, symmetrised."""
    n = x.size
    h = rel * np.maximum(1.0, np.abs(x))
    f0 = fun(x)
    hess = np.empty((n, n))
    for i in range(n):
        ei = np.zeros(n)
        ei[i] = h[i]
        hess[i, i] = (fun(x + ei) - 2 * f0 + fun(x - ei)) / h[i] ** 2
        for j in range(i):
            ej = np.zeros(n)
            ej[j] = h[j]
            hess[i, j] = hess[j, i] = (fun(x + ei + ej) - fun(x + ei - ej) - fun(x - ei + ej)
                                       + fun(x - ei - ej)) / (4 * h[i] * h[j])
    return hess


def _step(g: np.ndarray, hess: np.ndarray) -> np.ndarray:
    """-H^-1 g, with H shifted by lambda I until it is positive definite."""
    lam = 0.0
    scale = max(1e-12, float(np.abs(np.diag(hess)).max()))
    for _ in range(60):
        try:
            chol = np.linalg.cholesky(hess + lam * np.eye(g.size))
            return -np.linalg.solve(chol.T, np.linalg.solve(chol, g))
        except np.linalg.LinAlgError:
            lam = max(2 * lam, 1e-8 * scale)
    return -g / scale


def newton(fun: Callable[[np.ndarray], float], grad: Callable[[np.ndarray], np.ndarray],
           hess: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, *, xtol: float = 1e-10,
           max_iter: int = 100) -> FitResult:
    """Minimise fun from x0 (see the module doc)."""
    x = np.asarray(x0, dtype=np.float64).copy()
    fx = float(fun(x))
    for it in range(1, max_iter + 1):
        g = grad(x)
        step = _step(g, hess(x))
        t, slope = 1.0, float(g @ step)
        while t > 1e-10:
            x_new = x + t * step
            f_new = float(fun(x_new))
            if np.isfinite(f_new) and f_new <= fx + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            return FitResult(x, fx, it, bool(np.abs(step).max() <= 1e3 * xtol * max(1.0, np.abs(x).max())),
                             "line search found no decrease (at the minimum to rounding?)")
        moved = np.abs(x_new - x).max() / max(1.0, float(np.abs(x).max()))
        x, fx = x_new, f_new
        if moved <= xtol:
            return FitResult(x, fx, it, True, "converged")
    return FitResult(x, fx, max_iter, False, f"no convergence in {max_iter} iterations")
