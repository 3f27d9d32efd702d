"""pp -> gamma*/Z -> l- l+ at leading order: the hadronic differential cross section and its integrals.

Parton-level event z = (m_ll, y_ll, cos_theta, phi): dilepton mass and rapidity, and the l- direction in
the dilepton rest frame relative to the +z beam (at leading order the pair has no transverse momentum,
so this is the Collins-Soper frame). With x1,2 = m_ll / sqrt(s) exp(+-y_ll),

    dsigma / (dm dy dcos) = (2 m / s) sum_{types t} [ F_t(x1, x2) D_t(m, cos) + B_t(x1, x2) D_t(m, -cos) ]

in pb / GeV, where F_t = sum_q f_q(x1) f_qbar(x2) (quark along +z), B_t = f_qbar(x1) f_q(x2) and
D_t = dsigma_hat / dcos of `ew_amplitudes` (in pb); phi is uniform (density 1 / 2 pi). The parton
densities f(x, Q) are taken at the factorisation scale Q = m_ll (or a fixed `scale_gev`): any
`parton_densities.DensityModel` (the analytic toy ignores Q; an LHAPDF grid does not).

What to use when: `dsigma` (direct |A|^2, any theta), `dsigma_components` (the morphing components),
`cross_section_components` (sigma_c by deterministic quadrature: Gauss-Legendre in y, adaptive in m),
`lepton_momenta` (the two leptons' four-momenta from z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import quad_vec

from sbi_core.physics.ew_amplitudes import GEV2_TO_PB, N_COLOURS, DileptonAmplitudes, angular_sums
from sbi_core.physics.parton_densities import DensityModel, PartonDensities

__all__ = ["DrellYanModel"]

_Y_NODES, _Y_WEIGHTS = np.polynomial.legendre.leggauss(96)


@dataclass(frozen=True)
class DrellYanModel:
    """Leading-order Drell-Yan at a pp collider for given contact operators and a dilepton mass window."""

    amplitudes: DileptonAmplitudes
    sqrt_s: float = 13_000.0
    m_range: tuple[float, float] = (60.0, 400.0)
    pdf: DensityModel = field(default_factory=PartonDensities)
    scale_gev: float | None = None  # factorisation scale; None: m_ll event by event

    def __post_init__(self) -> None:
        lo, hi = self.m_range
        if not (0 < lo < hi < self.sqrt_s):
            raise ValueError(f"m_range must satisfy 0 < low < high < sqrt_s, got {self.m_range}")

    @property
    def s(self) -> float:
        return self.sqrt_s**2

    @property
    def n_params(self) -> int:
        return self.amplitudes.n_params

    def rapidity_limit(self, m: np.ndarray) -> np.ndarray:
        """Largest |y_ll| at mass m (both x below 1): ln(sqrt_s / m)."""
        return np.log(self.sqrt_s / np.asarray(m, dtype=np.float64))

    def _scale(self, m: np.ndarray) -> np.ndarray | float:
        """The factorisation scale of each point: the fixed one, or m_ll."""
        return m if self.scale_gev is None else self.scale_gev

    def momentum_fractions(self, m: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = np.asarray(m) / self.sqrt_s
        return r * np.exp(y), r * np.exp(-y)

    def _prefactor(self, m: np.ndarray) -> np.ndarray:
        """(2 m / s) (hbar c)^2 / (128 pi N_c m^2): pb / GeV per unit of |A|^2 x luminosity x angular factor."""
        return 2.0 * m / self.s * GEV2_TO_PB / (128.0 * math.pi * N_COLOURS * m**2)

    def _check(self, m: np.ndarray, y: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arrays = [np.asarray(a, dtype=np.float64) for a in (m, y, c)]
        n = arrays[0].shape
        if len(n) != 1 or any(a.shape != n for a in arrays):
            raise ValueError(f"m, y, cos: expected three (n,) arrays, got {[a.shape for a in arrays]}")
        return arrays[0], arrays[1], arrays[2]

    def _contract(self, squared: np.ndarray, m: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
        """sum over types and helicities of luminosity x angular factor x |A|^2 (squared: (n, ..., 2, 4))."""
        fwd, bwd = self.pdf.luminosities(*self.momentum_fractions(m, y), self._scale(m))  # (n, 2) each
        same, opp = angular_sums(squared)  # (n, ..., 2)
        extra = squared.ndim - 3
        shape = (m.shape[0],) + (1,) * extra
        plus, minus = ((1.0 + c) ** 2).reshape(shape + (1,)), ((1.0 - c) ** 2).reshape(shape + (1,))
        f, b = fwd.reshape(shape + (2,)), bwd.reshape(shape + (2,))
        total = f * (same * plus + opp * minus) + b * (same * minus + opp * plus)
        return total.sum(-1) * self._prefactor(m).reshape(shape)

    def dsigma(self, m: np.ndarray, y: np.ndarray, c: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """dsigma / (dm dy dcos) at theta from |A(theta)|^2 evaluated directly, in pb / GeV: (n,) for theta
        (P,), (n, m) for a batch of thetas (m, P)."""
        m, y, c = self._check(m, y, c)
        return self._contract(self.amplitudes.squared(m**2, theta), m, y, c)

    def dsigma_components(self, m: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
        """(n, C): dsigma(theta) = sum_c theta^powers[c] components[:, c] (`quadratic_powers` order)."""
        m, y, c = self._check(m, y, c)
        return self._contract(self.amplitudes.squared_components(m**2), m, y, c)

    # ---------------------------------------------------------------- integrals
    def _mass_density_components(self, m: float) -> np.ndarray:
        """(C,) dsigma_c / dm: the cos integral in closed form (int (1 +- cos)^2 = 8/3), y by Gauss-Legendre."""
        ymax = float(self.rapidity_limit(m))
        y = ymax * _Y_NODES
        mm = np.full(y.shape, m)
        fwd, bwd = self.pdf.luminosities(*self.momentum_fractions(mm, y), self._scale(mm))
        lum = ymax * (_Y_WEIGHTS @ (fwd + bwd))  # (2,) int dy (F_t + B_t)
        same, opp = angular_sums(self.amplitudes.squared_components(np.array([m * m]))[0])  # (C, 2)
        return (8.0 / 3.0) * ((same + opp) @ lum) * float(self._prefactor(np.array([m]))[0])

    def cross_section_components(self, mass_weight_power: float = 0.0, pivot: float = 91.1876) -> np.ndarray:
        """(C,) sigma_c in pb over the mass window, all y and cos; each m weighted by (m / pivot)^power.

        The weight is how the PDF-like tilt enters (see `parton_densities.tilt_weight`); 0 gives the plain
        cross sections. Relative accuracy ~1e-9 (adaptive in m with a break at M_Z)."""
        lo, hi = self.m_range
        m_z = self.amplitudes.ew.m_z
        breaks = [p for p in (m_z - 5 * self.amplitudes.ew.gamma_z, m_z, m_z + 5 * self.amplitudes.ew.gamma_z)
                  if lo < p < hi]
        edges = [lo, *breaks, hi]
        total = np.zeros(self.amplitudes.powers.shape[0])
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            val, _ = quad_vec(lambda m: self._mass_density_components(m) * (m / pivot) ** mass_weight_power,
                              a, b, epsrel=1e-10, epsabs=0.0, limit=500)
            total += val
        return total

    # ---------------------------------------------------------------- kinematics
    @staticmethod
    def lepton_momenta(m: np.ndarray, y: np.ndarray, c: np.ndarray, phi: np.ndarray,
                       kt: np.ndarray | None = None) -> np.ndarray:
        """(n, 2, 4) four-momenta (E, px, py, pz) in GeV of the l- (index 0) and the l+ (index 1).

        In the dilepton rest frame the l- flies along (sin cos phi, sin sin phi, cos) and the l+ opposite;
        the pair then gets its transverse momentum kt (n, 2) (a boost along kt, default none) and its
        rapidity y (a boost along z)."""
        m = np.asarray(m, dtype=np.float64)
        half = 0.5 * m
        sin = np.sqrt(np.clip(1.0 - c * c, 0.0, None))
        p = np.empty((m.shape[0], 2, 4))
        for i, sign in enumerate((1.0, -1.0)):  # the l+ flies back to back in the rest frame
            p[:, i, 0] = half
            p[:, i, 1] = sign * half * sin * np.cos(phi)
            p[:, i, 2] = sign * half * sin * np.sin(phi)
            p[:, i, 3] = sign * half * c
        if kt is not None:
            k = np.asarray(kt, dtype=np.float64)
            kt_abs = np.hypot(k[:, 0], k[:, 1])
            mt = np.sqrt(m * m + kt_abs**2)
            gamma, gamma_beta = mt / m, kt_abs / m
            with np.errstate(invalid="ignore", divide="ignore"):
                n = np.where(kt_abs[:, None] > 0, k / kt_abs[:, None], 0.0)  # (n, 2) unit vector along kt
            par = np.einsum("nij,nj->ni", p[:, :, 1:3], n)  # momentum along kt
            e = p[:, :, 0].copy()
            p[:, :, 0] = gamma[:, None] * e + gamma_beta[:, None] * par
            p[:, :, 1:3] += ((gamma[:, None] - 1.0) * par + gamma_beta[:, None] * e)[:, :, None] * n[:, None, :]
        ch, sh = np.cosh(y)[:, None], np.sinh(y)[:, None]
        e, pz = p[:, :, 0].copy(), p[:, :, 3].copy()
        p[:, :, 0] = e * ch + pz * sh
        p[:, :, 3] = pz * ch + e * sh
        return p
