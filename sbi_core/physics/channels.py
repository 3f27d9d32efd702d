"""Mappings of the unit interval onto an invariant mass window: the channels of multi-channel sampling.

Each mapping is what an s-channel propagator suggests for the mass m of a pair: a power law m^-a for a
massless one (the photon: dsigma/dm falls roughly as m^-3 once the luminosity is folded in), a
Breit-Wigner in s = m^2 for a massive one (the Z). `to_mass(u)` maps uniform u in [0, 1] to m with the
density `density(m)` (normalised on the window), so a point drawn in channel c has the Jacobian
dm/du = 1 / density_c(m). The prior channel weights of MadGraph's multi-channel method follow:
alpha_c(m) = density_c(m) / sum_j density_j(m) (`prior_weights`), which sum to one at every point, so
every channel covers the whole window and the weighted sum over channels is exact.

What to use when: `PowerLawMap(low, high, power)` and `BreitWignerMap(low, high, mass, width)`, then
`to_mass` to sample, `density` for Jacobians and prior weights, `to_unit` to go back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["BreitWignerMap", "MassMap", "PowerLawMap", "prior_weights"]


class MassMap(Protocol):
    """A monotonic map of [0, 1] onto [low, high] with a normalised density in m."""

    low: float
    high: float

    def to_mass(self, u: np.ndarray) -> np.ndarray: ...

    def to_unit(self, m: np.ndarray) -> np.ndarray: ...

    def density(self, m: np.ndarray) -> np.ndarray: ...


def _check_window(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 < low < high):
        raise ValueError(f"mass window: need 0 < low < high, got [{low}, {high}]")


@dataclass(frozen=True)
class PowerLawMap:
    """density(m) proportional to m^-power on [low, high] (power 1: logarithmic)."""

    low: float
    high: float
    power: float = 3.0

    def __post_init__(self) -> None:
        _check_window(self.low, self.high)
        if not (math.isfinite(self.power) and self.power >= 0):
            raise ValueError(f"power must be finite and >= 0, got {self.power}")

    @property
    def _log(self) -> bool:
        return abs(self.power - 1.0) < 1e-12

    def _ends(self) -> tuple[float, float]:
        e = 1.0 - self.power
        return self.low**e, self.high**e

    def to_mass(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        if self._log:
            return self.low * (self.high / self.low) ** u
        a, b = self._ends()
        return np.clip((a + u * (b - a)) ** (1.0 / (1.0 - self.power)), self.low, self.high)

    def to_unit(self, m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        if self._log:
            return np.log(m / self.low) / math.log(self.high / self.low)
        a, b = self._ends()
        return (m ** (1.0 - self.power) - a) / (b - a)

    def density(self, m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        if self._log:
            return 1.0 / (m * math.log(self.high / self.low))
        a, b = self._ends()
        return (1.0 - self.power) / (b - a) * m ** (-self.power)


@dataclass(frozen=True)
class BreitWignerMap:
    """density in s = m^2 proportional to 1 / ((s - M^2)^2 + M^2 Gamma^2) on the window: s = M^2 + M Gamma tan(phi)
    with phi uniform; in m the density gains the factor ds/dm = 2 m."""

    low: float
    high: float
    mass: float
    width: float

    def __post_init__(self) -> None:
        _check_window(self.low, self.high)
        if not (self.mass > 0 and self.width > 0):
            raise ValueError(f"mass and width must be > 0, got {self.mass}, {self.width}")

    def _phi(self, s: np.ndarray | float) -> np.ndarray:
        return np.arctan((np.asarray(s) - self.mass**2) / (self.mass * self.width))

    def _range(self) -> tuple[float, float]:
        return float(self._phi(self.low**2)), float(self._phi(self.high**2))

    def to_mass(self, u: np.ndarray) -> np.ndarray:
        lo, hi = self._range()
        s = self.mass**2 + self.mass * self.width * np.tan(lo + np.asarray(u, dtype=np.float64) * (hi - lo))
        return np.clip(np.sqrt(np.maximum(s, 0.0)), self.low, self.high)

    def to_unit(self, m: np.ndarray) -> np.ndarray:
        lo, hi = self._range()
        return (self._phi(np.asarray(m, dtype=np.float64) ** 2) - lo) / (hi - lo)

    def density(self, m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        lo, hi = self._range()
        mg = self.mass * self.width
        s = m * m
        return 2.0 * m * mg / ((hi - lo) * ((s - self.mass**2) ** 2 + mg**2))


def prior_weights(maps: list[MassMap], m: np.ndarray) -> np.ndarray:
    """(n, channels) alpha_c(m) = density_c(m) / sum_j density_j(m): MadGraph's multi-channel weights."""
    d = np.stack([mp.density(m) for mp in maps], axis=1)
    return d / d.sum(axis=1, keepdims=True)
