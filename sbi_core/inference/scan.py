"""The configured profile-likelihood scan grid, one global point index over all scans.

`inference.scan.parameters` lists 1D scans and 2D grids; each axis has `scan.points` values spanning the best
fit +- `scan.width` errors (the global fit's, from the Hessian), clipped to the parameter's `range`, or the whole
range when `scan.width` is null. The axes depend on the fit, the numbering only on the config. The grids are concatenated in config order and numbered 0..n-1: the mapped scan tasks
take contiguous blocks "A:B" of that numbering (`blocks.scan_blocks`). Inside a 2D grid the numbering
snakes (`profile.snake_order`), so a block is a connected path of neighbouring cells and every fit in a task
starts next to the previous one.

What to use when:
- `ScanGrid.from_config(cfg, values, errors)`: the scans, their axes and the global numbering; `.points(a, b)` the points of
  a block as (global index, scan index, {name: value}); `.curves(results)` turns joined block results back
  into one NLL array per scan (1D: (points,), 2D: (points, points) indexed [i, j] = (x[i], y[j])).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sbi_core.errors import InputError
from sbi_core.inference.profile import snake_order

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig

__all__ = ["Scan", "ScanGrid", "parse_range"]


def parse_range(text: str, total: int, what: str = "points") -> tuple[int, int]:
    """'A:B' -> (A, B) with 0 <= A < B <= total; InputError naming the argument otherwise."""
    try:
        a_s, b_s = text.split(":")
        a, b = int(a_s), int(b_s)
    except ValueError:
        raise InputError(f"--{what} {text!r}: expected A:B (two integers)") from None
    if not 0 <= a < b <= total:
        raise InputError(f"--{what} {text}: expected 0 <= A < B <= {total}")
    return a, b


@dataclass(frozen=True)
class Scan:
    """One scan: its parameters (1 or 2), the axis values of each, and its first global point index."""

    names: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    offset: int

    @property
    def key(self) -> str:
        return ",".join(self.names)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def cell(self, local: int) -> tuple[int, ...]:
        """Grid cell (i,) or (i, j) of the scan's local point number (snaking through 2D grids)."""
        flat = int(snake_order(self.shape)[local])
        return tuple(int(v) for v in np.unravel_index(flat, self.shape))

    def at(self, local: int) -> dict[str, float]:
        return {n: float(ax[i]) for n, ax, i in zip(self.names, self.axes, self.cell(local), strict=True)}


class ScanGrid:
    """Every configured scan, numbered globally (see the module doc)."""

    def __init__(self, scans: list[Scan]) -> None:
        self.scans = scans
        self.total = sum(s.size for s in scans)

    @classmethod
    def from_config(cls, cfg: AnalysisConfig, values: Mapping[str, float] | None = None,
                    errors: Mapping[str, float] | None = None) -> ScanGrid:
        """The configured grid; values / errors: the global fit (needed unless scan.width is null)."""
        from sbi_core.inference.blocks import scan_parameters

        opts = cfg.inference.scan
        n = opts.points
        lims: dict[str, tuple[float, float]] = {}
        for p in cfg.parameters:
            lo, hi = p.range
            if opts.width is not None:
                if values is None or errors is None:
                    raise ValueError("scan.width needs the global fit's values and errors")
                err = errors.get(p.name, math.nan)
                if not (math.isfinite(err) and err > 0):
                    raise InputError(f"scan of {p.name}: its error at the best fit is {err}, so the axis of "
                                     f"inference.scan.width = {opts.width} errors is undefined; set scan.width: null")
                c = values[p.name]
                lo, hi = max(lo, c - opts.width * err), min(hi, c + opts.width * err)
                if not lo < hi:
                    raise InputError(f"scan of {p.name}: the best fit {c} lies outside its range {list(p.range)}; "
                                     "set inference.scan.width: null or widen the range")
            lims[p.name] = (lo, hi)
        scans, offset = [], 0
        for entry in scan_parameters(cfg):
            axes = tuple(np.linspace(lims[name][0], lims[name][1], n) for name in entry)
            scan = Scan(tuple(entry), axes, offset)
            scans.append(scan)
            offset += scan.size
        return cls(scans)

    def points(self, a: int, b: int) -> Iterator[tuple[int, int, dict[str, float]]]:
        """(global index, scan index, held values) of the points a..b-1."""
        if not 0 <= a <= b <= self.total:
            raise InputError(f"scan points {a}:{b} outside 0:{self.total}")
        for k in range(a, b):
            for s_idx, scan in enumerate(self.scans):
                if scan.offset <= k < scan.offset + scan.size:
                    yield k, s_idx, scan.at(k - scan.offset)
                    break

    def curves(self, nll: Mapping[int, float]) -> list[np.ndarray]:
        """One array per scan of the NLL at each grid cell, from {global index: NLL}; NaN where a point is
        missing or failed."""
        out = []
        for scan in self.scans:
            arr = np.full(scan.shape, np.nan)
            for local in range(scan.size):
                value = nll.get(scan.offset + local)
                if value is not None:
                    arr[scan.cell(local)] = value
            out.append(arr)
        return out
