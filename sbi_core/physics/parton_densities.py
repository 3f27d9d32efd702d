"""Analytic quark densities of the proton and the q qbar luminosities of Drell-Yan at leading order.

This is NOT a fit to data and carries no scale dependence: it is a documented, self-contained
parametrisation that gives Drell-Yan rates and rapidity shapes of the right order without a PDF
download. Use a real PDF set (LHAPDF) for physics results.

Number densities f(x) at one fixed scale, written as x f(x) = N x^a (1 - x)^b:
- valence (Les Houches 2001 toy densities, Giele et al., hep-ph/0204316, section 1.3):
  x u_v = 5.1072 x^0.8 (1-x)^3 and x d_v = 3.06432 x^0.8 (1-x)^4, whose normalisations are the
  number sum rules int u_v = 2, int d_v = 1 (`valence_normalisations` recomputes them);
- light sea: x dbar = A x^-0.3 (1-x)^9 and x ubar = (1-x) x dbar (the toy's dbar > ubar), with a
  small-x power steeper than the toy's x^-0.1 to mimic evolution up to Q ~ M_Z; A = 0.15 puts the
  leading-order sigma(pp -> Z/gamma* -> l l, 66 < m_ll < 116 GeV) at 13 TeV at 1.47 nb, the size
  of the measured ~1.9 nb less the usual higher-order correction;
- heavier sea, as fractions of the light-sea average (ubar + dbar)/2: s = sbar (0.8), c = cbar (0.5),
  b = bbar (0.3); u = u_v + ubar, d = d_v + dbar.
`momentum_fraction()` gives the share of the proton momentum the quarks carry: 0.745, more than a real
fit gives at Q ~ M_Z (~0.55), because the valence shapes are the toy's at its low input scale.

What to use when: `PartonDensities().densities(x)` for f_q(x) of every flavour; `luminosities(x1, x2)`
for the per-flavour-type products that enter pp -> gamma*/Z -> l l; `tilt_weight` for the PDF-like
shape systematic (a change of the small-x power of every density, see there). `DensityModel` is what the
Drell-Yan model needs of any densities: this toy (it takes the scale and ignores it) or an LHAPDF grid
(`lhapdf_densities.LhapdfDensities`, with the scale dependence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.special import beta as _beta

__all__ = ["FLAVOURS", "UP_TYPE", "DensityModel", "PartonDensities", "flavour_luminosities", "tilt_weight"]

#: Quark flavours in column order of `densities` (quark columns first, then antiquark columns).
FLAVOURS = ("d", "u", "s", "c", "b")
#: True for up-type flavours (charge +2/3), column by column of FLAVOURS.
UP_TYPE = np.array([False, True, False, True, False])

_UV = (0.8, 3.0)  # (a + 1, b) of x u_v = N x^0.8 (1-x)^3, i.e. u_v = N x^-0.2 (1-x)^3
_DV = (0.8, 4.0)
_SEA_POWER, _SEA_LARGE_X = -0.3, 9.0
_HEAVY_FRACTIONS = {"s": 0.8, "c": 0.5, "b": 0.3}


class DensityModel(Protocol):
    """Quark densities at a factorisation scale, as the Drell-Yan model uses them."""

    def densities(self, x: np.ndarray, scale: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(quark, antiquark) number densities f(x, Q), each (n, 5) in FLAVOURS order; scale Q in GeV, (n,) or
        one value (None: the model's own choice)."""
        ...

    def luminosities(self, x1: np.ndarray, x2: np.ndarray,
                     scale: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(forward, backward) q qbar products per flavour type, each (n, 2) (see `flavour_luminosities`)."""
        ...

    def describe(self) -> str:
        """One line for summaries and logs: which densities, and whether they are a fit."""
        ...


def flavour_luminosities(q1: np.ndarray, a1: np.ndarray, q2: np.ndarray,
                         a2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward), each (n, 2) with columns (down-type, up-type), from the densities of beams 1 and 2.

    forward: sum over flavours of f_q(x1) f_qbar(x2) (the quark comes from beam 1, moving along +z);
    backward: f_qbar(x1) f_q(x2) (the quark moves along -z)."""
    fwd, bwd = q1 * a2, a1 * q2
    return (np.stack([fwd[:, ~UP_TYPE].sum(1), fwd[:, UP_TYPE].sum(1)], axis=1),
            np.stack([bwd[:, ~UP_TYPE].sum(1), bwd[:, UP_TYPE].sum(1)], axis=1))


def valence_normalisations() -> tuple[float, float]:
    """(N_u, N_d) fixed by int u_v dx = 2 and int d_v dx = 1: 5.1072 and 3.06432."""
    return 2.0 / float(_beta(_UV[0], _UV[1] + 1)), 1.0 / float(_beta(_DV[0], _DV[1] + 1))


@dataclass(frozen=True)
class PartonDensities:
    """The parametrisation of the module docstring; `sea_normalisation` is A of x dbar = A x^-0.3 (1-x)^9."""

    sea_normalisation: float = 0.15

    def describe(self) -> str:
        return ("analytic toy densities (sbi_core/physics/parton_densities.py): not a fit, no scale dependence; "
                "the offline default")

    def densities(self, x: np.ndarray, scale: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(quark, antiquark) number densities f(x), each (n, 5) in FLAVOURS order, for x (n,) in (0, 1); the
        scale is ignored (these densities have none)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"x: expected shape (n,), got {x.shape}")
        if np.any((x <= 0.0) | (x >= 1.0)):
            raise ValueError("x: momentum fractions must lie in (0, 1)")
        nu, nd = valence_normalisations()
        lx, l1x = np.log(x), np.log1p(-x)
        inv_x = 1.0 / x
        uv = nu * np.exp((_UV[0] - 1.0) * lx + _UV[1] * l1x)  # u_v = (x u_v) / x
        dv = nd * np.exp((_DV[0] - 1.0) * lx + _DV[1] * l1x)
        dbar = self.sea_normalisation * np.exp(_SEA_POWER * lx + _SEA_LARGE_X * l1x) * inv_x
        ubar = dbar * (1.0 - x)
        light = 0.5 * (ubar + dbar)
        s, c, b = (_HEAVY_FRACTIONS[f] * light for f in ("s", "c", "b"))
        quarks = np.stack([dv + dbar, uv + ubar, s, c, b], axis=1)
        antiquarks = np.stack([dbar, ubar, s, c, b], axis=1)
        return quarks, antiquarks

    def luminosities(self, x1: np.ndarray, x2: np.ndarray,
                     scale: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(forward, backward), each (n, 2) with columns (down-type, up-type): `flavour_luminosities`."""
        return flavour_luminosities(*self.densities(x1), *self.densities(x2))

    def momentum_fraction(self) -> float:
        """int x (sum of quark and antiquark densities) dx: the share of the proton momentum the quarks carry."""
        nu, nd = valence_normalisations()
        valence = nu * _beta(_UV[0] + 1, _UV[1] + 1) + nd * _beta(_DV[0] + 1, _DV[1] + 1)
        dbar = self.sea_normalisation * _beta(_SEA_POWER + 1, _SEA_LARGE_X + 1)
        ubar = self.sea_normalisation * _beta(_SEA_POWER + 1, _SEA_LARGE_X + 2)
        light = 0.5 * (ubar + dbar)
        sea = 2.0 * (ubar + dbar) + 2.0 * light * sum(_HEAVY_FRACTIONS.values())
        return float(valence + sea)


def tilt_weight(x1: np.ndarray, x2: np.ndarray, nu: float, size: float, pivot: float) -> np.ndarray:
    """PDF-like shape variation: every density f(x) becomes f(x) (x / pivot)^(nu * size).

    A one-sigma change of the small-x power of all densities by `size`, the same for every flavour, so
    the event weight changes by ((x1 x2) / pivot^2)^(nu * size) = (tau / pivot^2)^(nu * size): the same
    factor for every flavour and helicity, hence independent of the parameters of interest. It tilts
    the m_ll spectrum (harder for nu > 0 when tau > pivot^2) and changes the rate."""
    return np.exp(nu * size * (np.log(x1) + np.log(x2) - 2.0 * np.log(pivot)))
