"""Parton densities from an LHAPDF grid (`<set>/<set>.info` + `<set>/<set>_NNNN.dat`, format lhagrid1).

The grid is read by the `parton` package (MIT licence): no LHAPDF C++ library is needed. It interpolates
x f(x, Q) bicubically in (log x, log Q^2) on each subgrid (LHAPDF's own default is a local log-bicubic
interpolation too; values agree to the interpolation error of the grid). Where the grid ends (x below
XMin, Q outside [QMin, QMax]) `parton` gives NaN: this module refuses such points with an `InputError`
naming the set instead of extrapolating. Above XMax (real sets put it at 1; a grid that stops short of it)
the densities, which vanish as x -> 1, are taken as zero. A flavour the set does not list has density zero
(as in LHAPDF); negative interpolated values (possible near x -> 1) are set to zero, so every weight
stays >= 0.

Where sets are found: `path` (a directory holding the set's folder), else each directory of
`LHAPDF_DATA_PATH` (colon-separated), as LHAPDF itself looks. Nothing is downloaded.

What to use when: `LhapdfDensities(name, member, path)` wherever a `parton_densities.DensityModel` is
expected (the Drell-Yan model takes densities at Q = m_ll); `find_set(name, path)` to check a config;
`write_grid` writes a grid of this format from any function (tests build one from the analytic toy).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbi_core.errors import InputError
from sbi_core.physics.parton_densities import FLAVOURS, flavour_luminosities

__all__ = ["LhapdfDensities", "find_set", "write_grid"]

_PDG = {f: i + 1 for i, f in enumerate(FLAVOURS)}  # d=1, u=2, s=3, c=4, b=5; antiquarks negative


def find_set(name: str, path: str | None = None) -> Path:
    """The directory holding `<name>/<name>.info`: `path` or a directory of LHAPDF_DATA_PATH.

    InputError naming the set and the directories searched when it is not there."""
    dirs = [path] if path else [d for d in os.environ.get("LHAPDF_DATA_PATH", "").split(os.pathsep) if d]
    for d in dirs:
        if (Path(d) / name / f"{name}.info").is_file():
            return Path(d)
    where = f"in {dirs}" if dirs else "(no path given and LHAPDF_DATA_PATH is not set)"
    raise InputError(f"LHAPDF set {name!r} not found {where}: install it there or set simulator.options.pdf.path")


@functools.lru_cache(maxsize=4)
def _load(name: str, member: int, directory: str) -> Any:
    import parton  # lazily: only runs with an LHAPDF set import it

    try:
        return parton.PDF(name, member=member, pdfdir=directory)
    except (ValueError, OSError, IndexError) as exc:
        raise InputError(f"LHAPDF set {name!r} member {member} in {directory}: cannot be read ({exc})") from None


class LhapdfDensities:
    """A member of an LHAPDF set as a `parton_densities.DensityModel` (quark densities at scale Q)."""

    def __init__(self, name: str, member: int = 0, path: str | None = None) -> None:
        self.name, self.member = name, int(member)
        self.directory = find_set(name, path)
        self._pdf = _load(name, self.member, str(self.directory))
        self._flavours = {int(f) for f in self._pdf.pdfset.info.get("Flavors", [])}
        self._x_max = max(float(np.max(g.x)) for g in self._pdf.pdfgrids)
        data = self.directory / name / f"{name}_{self.member:04d}.dat"
        self.sha256 = hashlib.sha256(data.read_bytes()).hexdigest()

    def describe(self) -> str:
        return (f"LHAPDF set {self.name} member {self.member} ({self.directory / self.name}, sha256 "
                f"{self.sha256[:12]}), read with the parton package")

    def _xf(self, pid: int, x: np.ndarray, q2: np.ndarray) -> np.ndarray:
        if pid not in self._flavours:
            return np.zeros_like(x)
        if x.size == 1:  # parton turns a one-point answer into a float and fails on numpy 2: ask for two points
            return self._xf(pid, np.repeat(x, 2), np.repeat(q2, 2))[:1]
        above = x > self._x_max
        if np.any(above):  # beyond the grid's XMax (below 1): zero, where the densities vanish anyway
            out = np.zeros_like(x)
            if not np.all(above):
                out[~above] = self._xf(pid, x[~above], q2[~above])
            return out
        out = np.asarray(self._pdf.xfxQ2(pid, x, q2, grid=False), dtype=np.float64)
        if not np.all(np.isfinite(out)):
            bad = ~np.isfinite(out)
            raise InputError(f"LHAPDF set {self.name!r}: x or Q outside its grid (e.g. x={x[bad][0]:.3g}, "
                             f"Q={np.sqrt(q2[bad][0]):.4g} GeV); the grid is not extrapolated")
        return np.maximum(out, 0.0)

    def densities(self, x: np.ndarray, scale: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(quark, antiquark) number densities f(x, Q), each (n, 5) in FLAVOURS order (scale: Q in GeV)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1 or np.any((x <= 0.0) | (x >= 1.0)):
            raise ValueError("x: expected shape (n,) with momentum fractions in (0, 1)")
        if scale is None:
            raise ValueError("scale: an LHAPDF set needs the factorisation scale Q")
        q2 = np.broadcast_to(np.asarray(scale, dtype=np.float64) ** 2, x.shape).copy()
        quarks = np.stack([self._xf(_PDG[f], x, q2) for f in FLAVOURS], axis=1) / x[:, None]
        antiquarks = np.stack([self._xf(-_PDG[f], x, q2) for f in FLAVOURS], axis=1) / x[:, None]
        return quarks, antiquarks

    def luminosities(self, x1: np.ndarray, x2: np.ndarray,
                     scale: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(forward, backward) q qbar products per flavour type at scale Q, each (n, 2) (both beams in one
        evaluation of the grid: half the interpolator calls)."""
        n = np.asarray(x1).shape[0]
        q = np.broadcast_to(np.asarray(scale if scale is not None else np.nan, dtype=np.float64), (n,))
        quarks, antiquarks = self.densities(np.concatenate([x1, x2]), np.concatenate([q, q]) if scale is not None
                                            else None)
        return flavour_luminosities(quarks[:n], antiquarks[:n], quarks[n:], antiquarks[n:])


def write_grid(directory: Path, name: str, xf: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
               x: np.ndarray, q_subgrids: Sequence[np.ndarray], flavours: Sequence[int]) -> Path:
    """Write a one-member LHAPDF set `<directory>/<name>/` in the lhagrid1 format; return its folder.

    xf(pid, x, Q) gives x f(x, Q) on a grid (x outer, Q inner, as the format orders its rows); each array of
    q_subgrids is one subgrid's Q nodes (neighbouring subgrids share their boundary node)."""
    folder = Path(directory) / name
    folder.mkdir(parents=True, exist_ok=True)
    qs = np.concatenate(list(q_subgrids))
    info = (f"SetDesc: 'written by sbi_core.physics.lhapdf_densities.write_grid'\nFormat: lhagrid1\n"
            f"NumMembers: 1\nFlavors: [{', '.join(str(f) for f in flavours)}]\nOrderQCD: 0\n"
            f"XMin: {x.min():.10g}\nXMax: {x.max():.10g}\nQMin: {qs.min():.10g}\nQMax: {qs.max():.10g}\n")
    (folder / f"{name}.info").write_text(info)
    blocks = ["PdfType: central\nFormat: lhagrid1\n"]
    for q in q_subgrids:
        xx, qq = np.meshgrid(x, q, indexing="ij")
        cols = np.stack([xf(f, xx.ravel(), qq.ravel()) for f in flavours], axis=1)
        rows = "\n".join(" ".join(f"{v:.12e}" for v in row) for row in cols)
        blocks.append(" ".join(f"{v:.12e}" for v in x) + "\n" + " ".join(f"{v:.12e}" for v in q) + "\n"
                      + " ".join(str(f) for f in flavours) + "\n" + rows + "\n")
    (folder / f"{name}_0000.dat").write_text("---\n".join(blocks) + "---\n")
    return folder
