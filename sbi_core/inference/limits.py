"""Asymptotic CLs upper limits with the q~_mu test statistic, for ANY objective (pyhf's conventions).

The parameter of interest mu is bounded below at its `null` value (0 for a signal strength, the SM value 0
for an EFT coefficient taken as >= 0). For a tested value mu (Cowan, Cranmer, Gross, Vitells 2011, eq. 16):

    q~_mu = 2 (NLL(mu, nu^^(mu)) - NLL(mu^, nu^))   with mu^ fitted in [null, upper)   if mu^ <= mu,   else 0

(mu^ below null is replaced by null through the bound, which is the definition's second branch).
Its distributions come from the same statistic on the background-only Asimov dataset, qA
(`asymptotics.qtilde_tail_probabilities`): CLs = CLs+b / CLb, expected CLs bands from qA alone.
These are pyhf's `infer.hypotest(..., test_stat="qtilde")` and `infer.intervals.upper_limits` conventions;
tests/inference/test_limits.py reproduces pyhf's published numbers for its two-bin example.

What to use when:
- `upper_limit(objective, poi, asimov, level=0.95)`: the observed and expected (-2..+2 sigma) upper limits.
- `hypotest(objective, poi, mu, asimov)`: CLs, CLs+b, CLb and the expected band at one tested mu.
- `AsymptoticCLs(...)`: both, sharing the fits (a tested mu is fitted once, whatever asks for it).

`objective` is any `Objective` (`names`, `value(p)`, `grad(p)`: an NLL, not 2 NLL) - the pipeline's
`NLLModel` or a model of your own. `asimov` is the Objective of the background-only Asimov dataset, or a
callable that builds it from the observed data's fit with mu held at null (pyhf generates its Asimov data
from exactly that fit: nuisances at their conditional best values, and the auxiliary data - the global
observables - moved to those values too). `pool_asimov(generator, build)` is that callable for the pipeline's
likelihood arrays: the `ToyGenerator`'s Asimov dataset at the conditional fit (its aux at the fitted nuisance
values), its NLL built by `build`; the `limits` step uses it, tests/inference/test_pyhf_limits.py checks it
against pyhf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scipy.optimize import brentq

from sbi_core.errors import InputError
from sbi_core.inference.asymptotics import EXPECTED_BANDS, expected_cls, qtilde_tail_probabilities
from sbi_core.inference.fit import FitResult, minimize
from sbi_core.inference.objective import Objective, check_objective
from sbi_core.inference.profile import Profiler

__all__ = ["AsymptoticCLs", "HypoTest", "UpperLimit", "hypotest", "pool_asimov", "upper_limit"]

AsimovSource = Objective | Callable[[FitResult], Objective]


def pool_asimov(generator: Any, build: Callable[[Any], Objective]) -> Callable[[FitResult], Objective]:
    """The background-only Asimov objective from the conditional fit, pyhf's and RooStats' convention: the
    generator's (`toys.ToyGenerator`) Asimov dataset at the fit's parameters - expected counts, and auxiliary data
    at the fitted nuisance values - and `build(arrays)` its NLL."""
    return lambda fit: build(generator.asimov(fit.x))


@dataclass(frozen=True)
class HypoTest:
    """The CLs test of one value mu: observed q~ and its Asimov qA, tail probabilities, the expected band."""

    poi: str
    mu: float
    qtilde: float
    qtilde_asimov: float
    cls: float
    clsb: float
    clb: float
    expected: dict[str, float]  # band ("-2".."+2") -> expected CLs
    valid: bool

    def to_json(self) -> dict[str, Any]:
        return {"poi": self.poi, "mu": self.mu, "qtilde": self.qtilde, "qtilde_asimov": self.qtilde_asimov,
                "cls": self.cls, "clsb": self.clsb, "clb": self.clb, "expected": self.expected, "valid": self.valid}


@dataclass(frozen=True)
class UpperLimit:
    """Observed and expected CLs upper limits on `poi` at `level`.

    `observed_open` (or an expected band listed in `expected_open`) means CLs stayed above 1 - level up to
    `upper`, the end of the allowed range: the limit is then that end (no exclusion inside the range)."""

    poi: str
    level: float
    null: float
    observed: float
    expected: dict[str, float]
    observed_open: bool
    expected_open: list[str]
    mu_hat: float
    upper: float
    valid: bool
    tested: list[HypoTest] = field(repr=False, default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"poi": self.poi, "level": self.level, "null": self.null, "observed": self.observed,
                "expected": self.expected, "observed_open": self.observed_open, "expected_open": self.expected_open,
                "mu_hat": self.mu_hat, "upper": self.upper, "valid": self.valid,
                "tested": [t.to_json() for t in self.tested]}


class AsymptoticCLs:
    """q~_mu tests of one parameter of interest on one objective, fits cached per tested value."""

    def __init__(
        self,
        objective: Objective,
        poi: str,
        asimov: AsimovSource,
        *,
        null: float = 0.0,
        upper: float | None = None,
        fixed: Mapping[str, float] | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        start: Mapping[str, float] | None = None,
        ncall: int | None = None,
    ) -> None:
        names = check_objective(objective)
        if poi not in names:
            raise InputError(f"limit: {poi!r} is not a parameter of the objective ({names})")
        if fixed and poi in fixed:
            raise InputError(f"limit: {poi!r} is fixed; a limit needs it free")
        self.poi, self.null = poi, float(null)
        hi = upper if upper is not None else (bounds or {}).get(poi, (null, math.inf))[1]
        if not hi > self.null:
            raise InputError(f"limit on {poi}: the upper end {hi} must lie above the null value {self.null}")
        self.upper = float(hi)
        b = {**(bounds or {}), poi: (self.null, self.upper)}
        st = {**(start or {}), poi: max(self.null, min(self.upper, (start or {}).get(poi, self.null)))}
        self.observed = Profiler(objective, fixed=fixed, bounds=b, start=st, ncall=ncall)
        if not hasattr(asimov, "value"):  # a factory: Asimov data from the observed fit with mu held at null
            conditional = minimize(objective, start=st, fixed={**(fixed or {}), poi: self.null}, bounds=b, ncall=ncall)
            asimov = asimov(conditional)  # type: ignore[operator]
        check_objective(asimov)
        self.asimov = Profiler(asimov, fixed=fixed, bounds=b, start={**st, poi: self.null}, ncall=ncall)
        self._tests: dict[float, HypoTest] = {}

    @property
    def mu_hat(self) -> float:
        return self.observed.best.values[self.poi]

    def _qtilde(self, prof: Profiler, mu: float) -> tuple[float, bool]:
        best = prof.best
        if best.values[self.poi] > mu:
            return 0.0, best.valid
        p = prof.point({self.poi: mu})
        return max(0.0, 2.0 * (p.nll - prof.nll_min)), best.valid and p.valid

    def q_asimov(self, mu: float) -> float:
        """q~_mu on the background-only Asimov dataset."""
        return self._qtilde(self.asimov, mu)[0]

    def hypotest(self, mu: float) -> HypoTest:
        """CLs of the value mu (cached)."""
        mu = float(mu)
        if mu in self._tests:
            return self._tests[mu]
        if not self.null <= mu <= self.upper:
            raise ValueError(f"mu {mu} is outside [{self.null}, {self.upper}]")
        q, ok_obs = self._qtilde(self.observed, mu)
        qa, ok_a = self._qtilde(self.asimov, mu)
        clsb, clb, cls = qtilde_tail_probabilities(q, qa)
        band = {k: float(expected_cls(qa, n)) for k, n in EXPECTED_BANDS.items()}
        test = HypoTest(self.poi, mu, q, qa, cls, clsb, clb, band, ok_obs and ok_a)
        self._tests[mu] = test
        return test

    def _bracket(self, f: Callable[[float], float], scale: float) -> tuple[float, float] | None:
        """(a, b) with f(a) > 0 >= f(b), walking up from null in growing steps; None if f > 0 up to `upper`."""
        a, step = self.null, scale
        while True:
            b = min(self.upper, a + step)
            if f(b) <= 0:
                return a, b
            if b >= self.upper:
                return None
            a, step = b, step * 2.0

    def upper_limit(self, level: float = 0.95, *, rtol: float = 1e-6) -> UpperLimit:
        """The mu where CLs = 1 - level, observed and for each expected band (Brent's method on log CLs)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        alpha = 1.0 - level
        err = self.asimov.best.errors.get(self.poi, math.nan)
        scale = err if math.isfinite(err) and err > 0 else 0.1 * max(1.0, abs(self.upper - self.null))
        if math.isfinite(self.upper):
            scale = min(scale, self.upper - self.null)

        def solve(f: Callable[[float], float]) -> tuple[float, bool]:
            br = self._bracket(f, scale)
            if br is None:
                return self.upper, True
            return float(brentq(f, br[0], br[1], rtol=rtol, xtol=rtol * scale)), False

        def log_ratio(value: float) -> float:
            return math.log(max(value, 1e-300)) - math.log(alpha)

        observed, obs_open = solve(lambda mu: log_ratio(self.hypotest(mu).cls))
        expected: dict[str, float] = {}
        opens: list[str] = []
        for band, n in EXPECTED_BANDS.items():
            expected[band], is_open = solve(lambda mu, n=n: log_ratio(float(expected_cls(self.q_asimov(mu), n))))
            if is_open:
                opens.append(band)
        tested = [self._tests[m] for m in sorted(self._tests)]
        valid = self.observed.best.valid and self.asimov.best.valid and all(t.valid for t in tested)
        return UpperLimit(self.poi, level, self.null, observed, expected, obs_open, opens, self.mu_hat, self.upper,
                          valid, tested)


def hypotest(objective: Objective, poi: str, mu: float, asimov: AsimovSource, **kwargs: Any) -> HypoTest:
    """CLs test of poi = mu (keyword arguments as `AsymptoticCLs`)."""
    return AsymptoticCLs(objective, poi, asimov, **kwargs).hypotest(mu)


def upper_limit(objective: Objective, poi: str, asimov: AsimovSource, level: float = 0.95,
                **kwargs: Any) -> UpperLimit:
    """Observed and expected CLs upper limits on poi at `level` (keyword arguments as `AsymptoticCLs`)."""
    return AsymptoticCLs(objective, poi, asimov, **kwargs).upper_limit(level)
