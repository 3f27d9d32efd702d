"""Confidence intervals and regions from profile-likelihood curves (Wilks' theorem).

Every function here takes a profile curve Delta NLL (NLL minus the global minimum, NOT twice that) on a grid;
`profile.py` makes the curves. The threshold for a level is `asymptotics.wilks_threshold(level, ndim)`.

What to use when:
- `interval_from_scan(x, dnll, level)`: a 1D interval read off a scan, the crossings interpolated with a
  shape-preserving cubic (PCHIP: no overshoot between grid points). The result says when the region is open
  at an edge of the scan or made of several pieces.
- `Profile1D.interval(level)` (in `profile.py`) refines those crossings by root finding on the profile itself.
- `contours_from_grid(x, y, dnll, level)`: 2D contour lines (closed or open polylines) at a level;
  `region_contains(x, y, dnll, level, point)` says whether a point lies in the region, read from the
  interpolated grid (bilinear), which is what "the contour encloses the truth" means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator, RegularGridInterpolator

from sbi_core.inference.asymptotics import wilks_threshold

__all__ = ["Interval", "contours_from_grid", "interval_from_scan", "region_contains"]


@dataclass(frozen=True)
class Interval:
    """A 1D confidence set at `level`: the pieces [lo, hi] where Delta NLL <= threshold.

    `lo` / `hi` span all pieces. `lo_open` / `hi_open` are True when the region reaches the edge of the scanned
    range there (the true bound lies outside the scan: the value is then the edge, a bound on the bound)."""

    level: float
    threshold: float
    lo: float
    hi: float
    lo_open: bool
    hi_open: bool
    pieces: tuple[tuple[float, float], ...]
    method: str = "scan"

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def to_json(self) -> dict:
        return {
            "level": self.level, "threshold_dnll": self.threshold, "lo": self.lo, "hi": self.hi,
            "lo_open": self.lo_open, "hi_open": self.hi_open, "pieces": [list(p) for p in self.pieces],
            "method": self.method,
        }


def _check_curve(x: np.ndarray, dnll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(dnll, dtype=np.float64)
    if x.ndim != 1 or y.shape != x.shape or x.size < 3:
        raise ValueError(f"x and dnll: expected two 1-D arrays of the same length >= 3, got {x.shape} and {y.shape}")
    if not np.all(np.diff(x) > 0):
        raise ValueError("x: grid values must be strictly increasing")
    if not np.all(np.isfinite(y)):
        raise ValueError("dnll: every scan point must be finite (drop failed points first)")
    return x, y


def interval_from_scan(x: np.ndarray, dnll: np.ndarray, level: float) -> Interval:
    """The set {x : Delta NLL(x) <= wilks_threshold(level, 1)} read off a scan (x increasing, Delta NLL >= ~0)."""
    x, y = _check_curve(x, dnll)
    t = wilks_threshold(level, 1)
    spline = PchipInterpolator(x, y - t, extrapolate=False)
    roots = sorted(float(r) for r in np.atleast_1d(spline.solve(0.0, extrapolate=False)) if np.isfinite(r))
    # Walk the grid: a piece starts where the curve enters the region, ends where it leaves.
    edges = [float(x[0]), *roots, float(x[-1])]
    pieces: list[tuple[float, float]] = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b <= a:
            continue
        mid = spline(0.5 * (a + b))
        if mid is not None and np.isfinite(mid) and float(mid) <= 0.0:
            if pieces and pieces[-1][1] == a:
                pieces[-1] = (pieces[-1][0], b)
            else:
                pieces.append((a, b))
    if not pieces:  # the minimum of the scan is above the threshold: at most the best grid point
        i = int(np.argmin(y))
        return Interval(level, t, float(x[i]), float(x[i]), i == 0, i == x.size - 1, (), "scan")
    lo_open = bool(pieces[0][0] == x[0] and y[0] <= t)
    hi_open = bool(pieces[-1][1] == x[-1] and y[-1] <= t)
    return Interval(level, t, pieces[0][0], pieces[-1][1], lo_open, hi_open, tuple(pieces), "scan")


def _check_grid(x: np.ndarray, y: np.ndarray, dnll: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    z = np.asarray(dnll, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or z.shape != (x.size, y.size):
        raise ValueError(f"dnll: expected shape (len(x), len(y)) = ({x.size}, {y.size}), got {z.shape}")
    if not (np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)):
        raise ValueError("x and y: grid values must be strictly increasing")
    return x, y, z


def contours_from_grid(x: np.ndarray, y: np.ndarray, dnll: np.ndarray, level: float) -> list[np.ndarray]:
    """Contour lines of a 2D profile (dnll[i, j] at (x[i], y[j])) at the Wilks threshold for 2 parameters:
    a list of (n, 2) polylines, closed ones ending where they start. Failed (NaN) points are left out of
    the contour (contourpy masks them)."""
    import contourpy

    x, y, z = _check_grid(x, y, dnll)
    gen = contourpy.contour_generator(x, y, np.ma.masked_invalid(z.T), line_type=contourpy.LineType.Separate)
    return [np.asarray(line, dtype=np.float64) for line in gen.lines(wilks_threshold(level, 2))]


def region_contains(x: np.ndarray, y: np.ndarray, dnll: np.ndarray, level: float, point: tuple[float, float]) -> bool:
    """Whether `point` lies in the 2D region Delta NLL <= threshold, the grid interpolated bilinearly
    (the same surface the contour lines are drawn from). A point outside the grid is outside."""
    x, y, z = _check_grid(x, y, dnll)
    px, py = point
    if not (x[0] <= px <= x[-1] and y[0] <= py <= y[-1]):
        return False
    value = RegularGridInterpolator((x, y), z, method="linear")([[px, py]])[0]
    return bool(np.isfinite(value) and value <= wilks_threshold(level, 2))
