"""A one-bin counting experiment (cut and count) in closed form: n ~ Poisson(mu s + b), b known.

What to use when: the simplest model whose CLs is known exactly, CLs(mu) = P(n <= n_obs | mu s + b) /
P(n <= n_obs | b) (q~_mu decreases with n, so "q~ at least the observed" is "n at most the observed"); a real
cut-and-count analysis; a cheap model for the toy-limit studies and their tests. `CountingExperiment` is an
`Objective` (the NLL up to a constant: mu s + b - n log(mu s + b), value and gradient); `CountingToyModel` a
`calculators.ToyModel`
(toy i draws n from `toys.toy_rng(seed, i)`).
"""

from __future__ import annotations

import math

import numpy as np

from sbi_core.inference.toys import toy_rng

__all__ = ["CountingExperiment", "CountingToyModel"]


class CountingExperiment:
    """NLL(mu) = lam - n log(lam), lam = mu s + b; n may be fractional (an Asimov count)."""

    names = ("mu",)

    def __init__(self, n: float, signal: float, background: float) -> None:
        if not (signal > 0 and background > 0 and n >= 0):
            raise ValueError(f"counting experiment: needs signal > 0, background > 0, n >= 0; got {signal}, "
                             f"{background}, {n}")
        self.n, self.s, self.b = float(n), float(signal), float(background)

    def _lam(self, p: np.ndarray) -> float:
        lam = float(p[0]) * self.s + self.b
        if not lam > 0:
            raise ValueError(f"counting experiment: mu = {p[0]} gives a rate {lam} <= 0")
        return lam

    def value(self, p: np.ndarray) -> float:
        lam = self._lam(p)
        return lam - self.n * math.log(lam)

    def grad(self, p: np.ndarray) -> np.ndarray:
        return np.array([self.s * (1.0 - self.n / self._lam(p))])

    # No `hessian`: for n = 0 the NLL is linear (Hessian 0), and iminuit 2.33 fails with a TypeError inside
    # migrad when handed a singular Hessian seed; Minuit's own numerical second derivative is fine here.


class CountingToyModel:
    """Observed count n_obs; toys n ~ Poisson(mu s + b); the Asimov count is mu s + b itself."""

    names = ("mu",)

    def __init__(self, observed: int, signal: float, background: float) -> None:
        self.signal, self.background = float(signal), float(background)
        self._observed = CountingExperiment(observed, signal, background)

    @property
    def observed(self) -> CountingExperiment:
        return self._observed

    def rate(self, p: np.ndarray) -> float:
        return float(p[0]) * self.signal + self.background

    def toy(self, p: np.ndarray, seed: int, index: int) -> CountingExperiment:
        n = int(toy_rng(seed, index).poisson(self.rate(p)))
        return CountingExperiment(n, self.signal, self.background)

    def asimov(self, p: np.ndarray) -> CountingExperiment:
        return CountingExperiment(self.rate(p), self.signal, self.background)
