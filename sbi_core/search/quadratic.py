"""Local polish after a search: a stencil of points around a centre and the peak of a quadratic through them.

A Gaussian process locates a smooth maximum only to about its length scale; near a likelihood peak the
objective is (close to) a quadratic in the parameters, so a least-squares quadratic through a small stencil
around the best point puts the maximum far more precisely: a trust-region step. `stencil(centre, h, space)` is
the design (the centre, +-h along each axis, +h along each pair of axes: exactly as many points as a quadratic
has coefficients); `quadratic_peak(points, values, centre, max_step)` the fitted maximum, or None when the
points are too few or the quadratic has no maximum (not negative definite).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["quadratic_peak", "stencil"]


def _coefficients(d: int) -> int:
    return 1 + d + d * (d + 1) // 2


def _features(u: np.ndarray) -> np.ndarray:
    """[1, u_i, u_i u_j (i <= j)] for each row of u (n, d)."""
    n, d = u.shape
    cols = [np.ones(n), *(u[:, i] for i in range(d))]
    cols += [u[:, i] * u[:, j] for i in range(d) for j in range(i, d)]
    return np.stack(cols, axis=1)


def stencil(centre: Mapping[str, float], h: float, space: Mapping[str, tuple[float, float]]) -> list[dict[str, float]]:
    """The centre, centre +- h e_i and centre + h (e_i + e_j) for i < j, clipped to the space, without repeats."""
    names = list(space)
    c = np.array([centre[n] for n in names], dtype=float)
    d = len(names)
    eye = np.eye(d)
    steps = [np.zeros(d)] + [s * eye[i] for i in range(d) for s in (h, -h)]
    steps += [h * (eye[i] + eye[j]) for i in range(d) for j in range(i + 1, d)]
    lo = np.array([space[n][0] for n in names])
    hi = np.array([space[n][1] for n in names])
    out: list[dict[str, float]] = []
    for step in steps:
        p = {n: float(v) for n, v in zip(names, np.clip(c + step, lo, hi), strict=True)}
        if p not in out:
            out.append(p)
    return out


def quadratic_peak(points: Sequence[Mapping[str, float]], values: Sequence[float], centre: Mapping[str, float],
                   *, max_step: float) -> dict[str, float] | None:
    """The maximum of the least-squares quadratic through (points, values), taken as a step from `centre` of at
    most `max_step` (parameter units; the names are the centre's). None when under-determined or no maximum."""
    names = list(centre)
    d = len(names)
    c = np.array([centre[n] for n in names], dtype=float)
    u = np.array([[p[n] for n in names] for p in points], dtype=float).reshape(-1, d) - c
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(y)
    u, y = u[ok], y[ok]
    if len(y) < _coefficients(d):
        return None
    x = _features(u)
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return None
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    g, quad = coef[1:1 + d], coef[1 + d:]
    hess = np.zeros((d, d))
    idx = 0
    for i in range(d):
        for j in range(i, d):
            hess[i, j] = hess[j, i] = quad[idx] * (2.0 if i == j else 1.0)
            idx += 1
    if not np.all(np.isfinite(hess)) or np.max(np.linalg.eigvalsh(hess)) >= 0:
        return None
    step = -np.linalg.solve(hess, g)
    size = float(np.linalg.norm(step))
    if size > max_step:
        step *= max_step / size
    return {n: float(v) for n, v in zip(names, c + step, strict=True)}
