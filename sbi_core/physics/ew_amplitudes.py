"""q qbar -> gamma*/Z -> l- l+ at leading order: helicity amplitudes with four-fermion contact operators.

For massless fermions only four helicity combinations (quark, lepton) survive, LL, LR, RL, RR. Each
amplitude is a number times a fixed angular spinor product:

    A_ij(s) = e^2 [ Q_q Q_l + g_i^q g_j^l / (s_W^2 c_W^2) * s / (s - M_Z^2 + i M_Z Gamma_Z) ]
              + (s / Lambda^2) sum_k theta_k kappa_k(q, i, j)

with g_L = T3 - Q s_W^2, g_R = -Q s_W^2 (fixed-width Breit-Wigner). The contact terms come from
L = sum_k (theta_k / Lambda^2) O_k with O_k a product of a quark and a lepton vector current of fixed
chiralities; kappa_k(q, i, j) is the coefficient O_k puts on that helicity combination (`OPERATORS`),
and with this sign convention a positive kappa adds to the photon term with the sign of Q_q Q_l.
|M_ij|^2 = |A_ij|^2 (1 + cos)^2 for LL and RR and |A_ij|^2 (1 - cos)^2 for LR and RL, cos the angle
between the quark and the l- in the dilepton rest frame, so the partonic cross section is

    dsigma/dcos = [ S_same (1 + cos)^2 + S_opp (1 - cos)^2 ] / (128 pi N_c s),
    S_same = |A_LL|^2 + |A_RR|^2,  S_opp = |A_LR|^2 + |A_RL|^2,

spin and colour averaged; it is a quadratic polynomial in theta (morphing is exact).

Inputs (PDG 2022, Review of Particle Physics, Electroweak model chapter): M_Z = 91.1876 GeV,
Gamma_Z = 2.4952 GeV, MS-bar sin^2 theta_W(M_Z) = 0.23121, alpha(M_Z) = 1 / 127.951.

What to use when: `ElectroweakInputs` for the constants; `DileptonAmplitudes(operators, lambda_tev)` for
amplitudes (`amplitudes`, direct |A|^2 by `squared`, the morphing components by `squared_components`);
`OPERATORS` lists the contact operators a parameter of interest may name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sbi_core.physics.morphing import quadratic_powers

__all__ = [
    "GEV2_TO_PB",
    "HELICITIES",
    "N_COLOURS",
    "OPERATORS",
    "SAME_HELICITY",
    "DileptonAmplitudes",
    "ElectroweakInputs",
]

GEV2_TO_PB = 3.893793721e8  # (hbar c)^2 in pb GeV^2
N_COLOURS = 3
#: Helicity combinations (quark, lepton) in the last axis of every amplitude array.
HELICITIES = ("LL", "LR", "RL", "RR")
#: True where the angular factor is (1 + cos)^2 (equal helicities), else (1 - cos)^2.
SAME_HELICITY = np.array([True, False, False, True])
#: Flavour types in the middle axis: down-type (d, s, b), up-type (u, c). (charge, weak isospin T3).
QUARK_TYPES = ((-1.0 / 3.0, -0.5), (2.0 / 3.0, 0.5))
LEPTON = (-1.0, -0.5)  # the l- (charged lepton)


def _table(entries: dict[tuple[str, str], float]) -> np.ndarray:
    """kappa[(type, helicity)] from {(type, helicity): value}; type 'd', 'u' or '*' for both."""
    out = np.zeros((2, 4))
    for (qtype, hel), value in entries.items():
        for t in ((0, 1) if qtype == "*" else ((0,) if qtype == "d" else (1,))):
            out[t, HELICITIES.index(hel)] += value
    return out


#: Contact operators a parameter of interest may name, as kappa (quark type, helicity) tables (flavour
#: universal). c_LL .. c_RR: one chirality combination (quark, lepton), every quark (Eichten-Lane-Peskin
#: style). The others are Warsaw-basis SMEFT operators for charged leptons: O_lq^(1), O_lq^(3) (the
#: triplet gives -1 on u, +1 on d: the product of the T3 signs), O_eu, O_ed, O_lu, O_ld, O_qe.
OPERATORS: dict[str, np.ndarray] = {
    "c_LL": _table({("*", "LL"): 1.0}),
    "c_LR": _table({("*", "LR"): 1.0}),
    "c_RL": _table({("*", "RL"): 1.0}),
    "c_RR": _table({("*", "RR"): 1.0}),
    "c_lq1": _table({("*", "LL"): 1.0}),
    "c_lq3": _table({("u", "LL"): -1.0, ("d", "LL"): 1.0}),
    "c_eu": _table({("u", "RR"): 1.0}),
    "c_ed": _table({("d", "RR"): 1.0}),
    "c_lu": _table({("u", "RL"): 1.0}),
    "c_ld": _table({("d", "RL"): 1.0}),
    "c_qe": _table({("*", "LR"): 1.0}),
}
for _k in OPERATORS.values():
    _k.setflags(write=False)


@dataclass(frozen=True)
class ElectroweakInputs:
    """Electroweak constants (defaults: PDG 2022, see the module docstring)."""

    m_z: float = 91.1876
    gamma_z: float = 2.4952
    sin2_theta_w: float = 0.23121
    alpha: float = 1.0 / 127.951

    @property
    def e2(self) -> float:
        """e^2 = 4 pi alpha."""
        return 4.0 * math.pi * self.alpha

    def chiral_coupling(self, charge: float, t3: float, helicity: str) -> float:
        """g_L = T3 - Q sin^2 theta_W, g_R = -Q sin^2 theta_W."""
        return (t3 if helicity == "L" else 0.0) - charge * self.sin2_theta_w

    def sm_amplitudes(self, shat: np.ndarray) -> np.ndarray:
        """A_ij^SM(s): (n, 2, 4) complex, quark types x helicities."""
        s = np.asarray(shat, dtype=np.float64)
        sw2 = self.sin2_theta_w
        prop = s / (s - self.m_z**2 + 1j * self.m_z * self.gamma_z) / (sw2 * (1.0 - sw2))
        out = np.empty((s.shape[0], 2, 4), dtype=np.complex128)
        for t, (q, t3) in enumerate(QUARK_TYPES):
            for h, (hq, hl) in enumerate(HELICITIES):
                gq = self.chiral_coupling(q, t3, hq)
                gl = self.chiral_coupling(*LEPTON, hl)
                out[:, t, h] = self.e2 * (q * LEPTON[0] + gq * gl * prop)
        return out


class DileptonAmplitudes:
    """Helicity amplitudes of q qbar -> l- l+ for given contact operators (one per parameter of interest)."""

    def __init__(self, operators: list[str], lambda_tev: float, ew: ElectroweakInputs | None = None) -> None:
        unknown = [o for o in operators if o not in OPERATORS]
        if unknown:
            raise ValueError(f"unknown contact operators {unknown}; known: {sorted(OPERATORS)}")
        if not (math.isfinite(lambda_tev) and lambda_tev > 0):
            raise ValueError(f"lambda_tev must be finite and > 0, got {lambda_tev}")
        self.operators = list(operators)
        self.ew = ew or ElectroweakInputs()
        self.inv_lambda2 = 1.0 / (1000.0 * lambda_tev) ** 2  # GeV^-2
        self.kappa = np.stack([OPERATORS[o] for o in operators])  # (K, 2, 4)
        self.powers = quadratic_powers(len(operators))

    @property
    def n_params(self) -> int:
        return len(self.operators)

    def _shat(self, shat: np.ndarray) -> np.ndarray:
        s = np.asarray(shat, dtype=np.float64)
        if s.ndim != 1:
            raise ValueError(f"shat: expected shape (n,), got {s.shape}")
        return s

    def _theta(self, theta: np.ndarray) -> np.ndarray:
        t = np.asarray(theta, dtype=np.float64)
        if t.ndim not in (1, 2) or t.shape[-1] != self.n_params:
            raise ValueError(f"theta: expected shape ({self.n_params},) or (m, {self.n_params}), got {t.shape}")
        return t

    def amplitudes(self, shat: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """A_ij(s; theta): (n, 2, 4) complex for theta (P,), (n, m, 2, 4) for a batch of thetas (m, P)."""
        s = self._shat(shat)
        t = self._theta(theta)
        contact = np.einsum("...k,kth->...th", t, self.kappa)  # (2, 4) or (m, 2, 4)
        sm = self.ew.sm_amplitudes(s)
        scale = s * self.inv_lambda2
        if t.ndim == 1:
            return sm + scale[:, None, None] * contact
        return sm[:, None] + scale[:, None, None, None] * contact[None]

    def squared(self, shat: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """|A_ij(s; theta)|^2 evaluated directly: (n, 2, 4), or (n, m, 2, 4) for thetas (m, P)."""
        a = self.amplitudes(shat, theta)
        return a.real**2 + a.imag**2

    def squared_components(self, shat: np.ndarray) -> np.ndarray:
        """(n, C, 2, 4) with |A_ij(theta)|^2 = sum_c theta^powers[c] components[:, c] (`quadratic_powers` order).

        Constant |A_SM|^2; linear in theta_k: 2 Re(A_SM) kappa_k s / Lambda^2; quadratic theta_k theta_l:
        (2 - delta_kl) kappa_k kappa_l (s / Lambda^2)^2."""
        s = self._shat(shat)
        sm = self.ew.sm_amplitudes(s)
        a = s * self.inv_lambda2
        n_k = self.n_params
        out = np.empty((s.shape[0], self.powers.shape[0], 2, 4))
        out[:, 0] = sm.real**2 + sm.imag**2
        for k in range(n_k):
            out[:, 1 + k] = 2.0 * sm.real * (a[:, None, None] * self.kappa[k])
        c = 1 + n_k
        for k in range(n_k):
            for m in range(k, n_k):
                factor = 1.0 if k == m else 2.0
                out[:, c] = factor * (a**2)[:, None, None] * (self.kappa[k] * self.kappa[m])
                c += 1
        return out


def angular_sums(squared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S_same, S_opp) over the helicity axis (last) of |A|^2 arrays: LL + RR and LR + RL."""
    return squared[..., SAME_HELICITY].sum(-1), squared[..., ~SAME_HELICITY].sum(-1)
