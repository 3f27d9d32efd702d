"""CLs hypothesis tests of one parameter of interest, asymptotic or from toys, behind ONE interface (pyhf's
`AsymptoticCalculator` / `ToyCalculator`).

A calculator tests values mu of a parameter of interest bounded below at its null value with the q~_mu test
statistic (`limits.py` gives the definition and the conventions):
- `teststatistic(mu)`: q~_mu of the observed data;
- `distributions(mu)`: (signal+background, background-only) distributions of q~_mu, each with
  `pvalue(q) -> (p, MC error)` (the fraction at or above q) and `expected_value(n_sigma)`;
- `expected_cls(mu)`: the expected CLs band ("-2".."+2", `asymptotics.EXPECTED_BANDS`);
- `hypotest(calc, mu)` -> `CLsResult`: CLs+b, CLb and CLs = CLs+b / CLb with their Monte Carlo errors (0 for the
  asymptotic formulae), and the expected CLs band.

What to use when:
- `AsymptoticCalculator(objective, poi, asimov, ...)`: the asymptotic formulae (CCGV), from `limits.AsymptoticCLs`.
- `ToyCalculator(model, poi, ...)`: the distributions from toys. `model` is a `ToyModel`: the observed data's
  `Objective` plus a way to draw a toy dataset at given parameters (`toy(p, seed, index)` -> the toy's Objective)
  and the Asimov dataset (`asimov(p)`). The pipeline's is `PoolToyModel` (toys resampled from a run's events,
  `toys.ToyGenerator`); `counting.CountingToyModel` is a one-bin counting experiment in closed form.
  As RooStats and pyhf do, the signal+background toys at mu are generated at the conditional fit of the
  observed data with the parameter held at mu (the nuisances at their conditional best values), the
  background-only toys at the conditional fit with it held at the null value (`generating_point`).
  `toy_statistics(mu, hypothesis, indices, seed)` computes a batch of toys on its own (a mapped task does
  one batch; a study's aggregate adds the counts up with `cls_from_counts`).
- `cls_from_counts(k_sb, n_sb, k_b, n_b)`: CLs and its Monte Carlo error from the number of toys at or above
  the observed q~ among n of each hypothesis.

Ties: a toy whose q~ equals the observed one within `TIE` counts as at or above it, so a discrete model (a
counting experiment) gives the exact P(n <= n_obs). TIE covers the fits' precision: Migrad stops at an EDM up
to 1e-4 in NLL units, and the same count fitted from two starts was seen to give q~ 1.05e-4 apart. For a
continuous q~ it moves a p-value by the density of q~ times TIE (~5e-5 at CLs+b = 0.05), far below the
toys' Monte Carlo error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from sbi_core.errors import InputError
from sbi_core.inference.objective import Objective, check_objective

if TYPE_CHECKING:
    from sbi_core.inference.profile import Profiler

__all__ = ["TIE", "AsymptoticCalculator", "CLsResult", "EmpiricalDistribution", "PoolToyModel", "ToyCalculator",
           "ToyModel", "ToyStatistic", "cls_from_counts", "expected_from", "hypotest", "qtilde", "toy_seed"]

TIE = 1e-3
Hypothesis = Literal["sb", "b"]


@runtime_checkable
class ToyModel(Protocol):
    """The observed data's objective, and toy and Asimov datasets at any parameter vector (in `names` order)."""

    @property
    def names(self) -> Sequence[str]: ...

    @property
    def observed(self) -> Objective: ...

    def toy(self, p: np.ndarray, seed: int, index: int) -> Objective: ...

    def asimov(self, p: np.ndarray) -> Objective: ...


class Distribution(Protocol):
    def pvalue(self, q: float) -> tuple[float, float]: ...

    def expected_value(self, n_sigma: float) -> float: ...


def qtilde(prof: Profiler, poi: str, mu: float) -> tuple[float, bool, str]:
    """(q~_mu, valid, message) of a profiler whose fits bound `poi` below at its null value (see limits.py):
    0 when the best fit lies above mu, else 2 (NLL(mu, nu^^) - NLL(mu^, nu^))."""
    best = prof.best
    if best.values[poi] > mu:
        return 0.0, best.valid, best.message
    p = prof.point({poi: mu})
    msg = best.message if not best.valid else p.message
    return max(0.0, 2.0 * (p.nll - prof.nll_min)), best.valid and p.valid, msg


def _binomial(k: float, n: float) -> tuple[float, float]:
    """(k / n, its standard error); the error uses (k + 1/2) / (n + 1), so it is not 0 when k is 0 or n."""
    if n <= 0:
        return math.nan, math.nan
    q = (k + 0.5) / (n + 1.0)
    return k / n, math.sqrt(q * (1.0 - q) / n)


@dataclass(frozen=True)
class CLsResult:
    """CLs+b, CLb, CLs (and their MC errors) at one tested mu, the observed q~, the expected CLs band."""

    mu: float
    qtilde: float
    clsb: float
    clb: float
    cls: float
    clsb_error: float = 0.0
    clb_error: float = 0.0
    cls_error: float = 0.0
    expected: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"mu": self.mu, "qtilde": self.qtilde, "clsb": self.clsb, "clb": self.clb, "cls": self.cls,
                "clsb_error": self.clsb_error, "clb_error": self.clb_error, "cls_error": self.cls_error,
                "expected": self.expected}


def cls_from_counts(k_sb: float, n_sb: float, k_b: float, n_b: float, *, mu: float = math.nan,
                    q: float = math.nan) -> CLsResult:
    """CLs from toy counts: k of n toys of each hypothesis with q~ at or above the observed one. Errors are
    binomial, propagated to the ratio (the two hypotheses' toys are independent)."""
    clsb, e_sb = _binomial(k_sb, n_sb)
    clb, e_b = _binomial(k_b, n_b)
    if not clb > 0:
        return CLsResult(mu, q, clsb, clb, 1.0 if clsb == 0 else math.inf, e_sb, e_b, math.nan)
    cls = clsb / clb
    err = math.hypot(e_sb / clb, cls * e_b / clb)
    return CLsResult(mu, q, clsb, clb, cls, e_sb, e_b, err)


class EmpiricalDistribution:
    """The test statistic's distribution from toys: `pvalue(q)` is the fraction of samples >= q - TIE."""

    def __init__(self, samples: Sequence[float] | np.ndarray) -> None:
        self.samples = np.sort(np.asarray(samples, dtype=np.float64))
        if self.samples.ndim != 1 or not np.all(np.isfinite(self.samples)):
            raise ValueError("samples: expected a 1-D array of finite test statistics")

    def pvalue(self, q: float) -> tuple[float, float]:
        n = self.samples.size
        k = n - int(np.searchsorted(self.samples, q - TIE, side="left"))
        return _binomial(k, n)

    def expected_value(self, n_sigma: float) -> float:
        """The samples' quantile at Phi(n_sigma) (pyhf's convention for the background-only distribution)."""
        from scipy import special

        return float(np.percentile(self.samples, 100.0 * float(special.ndtr(n_sigma)), method="linear"))


class AsymptoticDistribution:
    """q~_mu's asymptotic distribution under s+b (`kind` "sb") or b-only ("b"), from its Asimov value qA."""

    def __init__(self, q_asimov: float, kind: Hypothesis) -> None:
        self.q_asimov, self.kind = float(q_asimov), kind

    def pvalue(self, q: float) -> tuple[float, float]:
        from sbi_core.inference.asymptotics import qtilde_tail_probabilities

        clsb, clb, _ = qtilde_tail_probabilities(q, self.q_asimov)
        return (clsb if self.kind == "sb" else clb), 0.0

    def expected_value(self, n_sigma: float) -> float:
        """The q~ whose standard-normal statistic t (`asymptotics`: sqrt(q) - sqrt(qA) up to qA, then
        (q - qA) / (2 sqrt(qA))) equals n_sigma: the b-only quantile at Phi(n_sigma)."""
        t, sqa = float(n_sigma), math.sqrt(max(self.q_asimov, 0.0))
        return max(0.0, t + sqa) ** 2 if t <= 0 else self.q_asimov + 2.0 * t * sqa


def expected_from(sb: Distribution, b: Distribution) -> dict[str, float]:
    """The expected CLs band from the two distributions: CLs at the background-only quantiles (pyhf's
    `expected_pvalues`; for toys the quantiles of the b-only q~, whose point mass at 0 clips the upper bands)."""
    from sbi_core.inference.asymptotics import EXPECTED_BANDS

    out = {}
    for band, n in EXPECTED_BANDS.items():
        qn = b.expected_value(n)
        p_sb, p_b = sb.pvalue(qn)[0], b.pvalue(qn)[0]
        out[band] = p_sb / p_b if p_b > 0 else 1.0
    return out


def hypotest(calc: Any, mu: float) -> CLsResult:
    """CLs at mu from any calculator (`teststatistic`, `distributions`, `expected_cls`), with the expected band."""
    q = float(calc.teststatistic(mu))
    sb, b = calc.distributions(mu)
    clsb, e_sb = sb.pvalue(q)
    clb, e_b = b.pvalue(q)
    cls = clsb / clb if clb > 0 else 1.0
    err = math.hypot(e_sb / clb, cls * e_b / clb) if clb > 0 else math.nan
    return CLsResult(float(mu), q, clsb, clb, cls, e_sb, e_b, err, calc.expected_cls(mu, (sb, b)))


class AsymptoticCalculator:
    """The asymptotic q~_mu distributions (`limits.AsymptoticCLs`) behind the calculator interface."""

    def __init__(self, objective: Objective, poi: str, asimov: Any, **kwargs: Any) -> None:
        from sbi_core.inference.limits import AsymptoticCLs

        self.poi = poi
        self.cls = AsymptoticCLs(objective, poi, asimov, **kwargs)

    def teststatistic(self, mu: float) -> float:
        return self.cls.hypotest(mu).qtilde

    def distributions(self, mu: float) -> tuple[AsymptoticDistribution, AsymptoticDistribution]:
        qa = self.cls.q_asimov(float(mu))
        return AsymptoticDistribution(qa, "sb"), AsymptoticDistribution(qa, "b")

    def expected_cls(self, mu: float, dists: Any = None) -> dict[str, float]:
        """The expected CLs band (CCGV: the b-only statistic t at -2..+2, unclipped by q~'s bound at 0)."""
        from sbi_core.inference.asymptotics import EXPECTED_BANDS, expected_cls

        qa = self.cls.q_asimov(float(mu))
        return {band: float(expected_cls(qa, n)) for band, n in EXPECTED_BANDS.items()}

    def upper_limit(self, level: float = 0.95) -> Any:
        """The asymptotic observed and expected upper limits (`limits.UpperLimit`)."""
        return self.cls.upper_limit(level)


@dataclass(frozen=True)
class ToyStatistic:
    """One toy's q~_mu: its index, value, whether its fits were valid (and why not)."""

    index: int
    q: float
    valid: bool
    message: str = ""


def toy_seed(seed: int, *keys: int) -> int:
    """A seed derived from `seed` and integer keys (a tested point, a hypothesis): independent streams."""
    return int(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in keys)).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


class ToyCalculator:
    """q~_mu distributions from toys of a `ToyModel` (see the module doc). Fits of the observed data are
    cached per tested value."""

    def __init__(self, model: ToyModel, poi: str, *, null: float = 0.0, upper: float | None = None,
                 fixed: Mapping[str, float] | None = None, bounds: Mapping[str, tuple[float, float]] | None = None,
                 start: Mapping[str, float] | None = None, ntoys: int = 1000, seed: int = 0,
                 ncall: int | None = None) -> None:
        from sbi_core.inference.profile import Profiler

        names = check_objective(model.observed)
        if list(model.names) != names:
            raise ValueError(f"model.names {list(model.names)} differ from its observed objective's {names}")
        if poi not in names:
            raise InputError(f"toy calculator: {poi!r} is not a parameter of the model ({names})")
        if fixed and poi in fixed:
            raise InputError(f"toy calculator: {poi!r} is fixed; a test needs it free")
        self.model, self.poi, self.names = model, poi, names
        self.null = float(null)
        hi = upper if upper is not None else (bounds or {}).get(poi, (null, math.inf))[1]
        if not hi > self.null:
            raise InputError(f"toy calculator on {poi}: the upper end {hi} must lie above the null value {self.null}")
        self.upper = float(hi)
        self.fixed = dict(fixed or {})
        self.bounds = {**(bounds or {}), poi: (self.null, self.upper)}
        st = dict(start or {})
        st[poi] = min(max(st.get(poi, self.null), self.null), self.upper)
        self.start, self.ncall, self.ntoys, self.seed = st, ncall, int(ntoys), int(seed)
        self._observed = Profiler(model.observed, fixed=self.fixed, bounds=self.bounds, start=st, ncall=ncall)

    def observed_statistic(self, mu: float) -> tuple[float, bool, str]:
        """(q~_mu of the observed data, valid, message)."""
        return qtilde(self._observed, self.poi, float(mu))

    def teststatistic(self, mu: float) -> float:
        return self.observed_statistic(mu)[0]

    def generating_point(self, mu: float) -> tuple[dict[str, float], bool, str]:
        """(parameters, valid, message) of the conditional fit of the observed data with the POI held at mu: where
        the toys of that hypothesis are drawn."""
        p = self._observed.point({self.poi: float(mu)})
        return dict(p.values), p.valid, p.message

    def toy_statistics(self, mu: float, hypothesis: Hypothesis, indices: Sequence[int], seed: int,
                       at: Mapping[str, float] | None = None) -> list[ToyStatistic]:
        """q~_mu of toys `indices` drawn under `hypothesis` ("sb": at mu, "b": at the null value), from the
        conditional fits of the observed data (or at the given parameters `at`)."""
        if hypothesis not in ("sb", "b"):
            raise ValueError(f"hypothesis: expected sb or b, got {hypothesis!r}")
        from sbi_core.inference.profile import Profiler

        gen = dict(at) if at is not None else self.generating_point(mu if hypothesis == "sb" else self.null)[0]
        p = np.array([gen[n] for n in self.names], dtype=np.float64)
        out = []
        for i in indices:
            prof = Profiler(self.model.toy(p, int(seed), int(i)), fixed=self.fixed, bounds=self.bounds, start=gen,
                            ncall=self.ncall, errors=False)
            q, valid, msg = qtilde(prof, self.poi, float(mu))
            out.append(ToyStatistic(int(i), float(q), bool(valid and math.isfinite(q)), "" if valid else msg))
        return out

    def expected_cls(self, mu: float, dists: Any = None) -> dict[str, float]:
        """The expected CLs band from the toys' b-only quantiles (`expected_from`)."""
        return expected_from(*(dists or self.distributions(mu)))

    def distributions(self, mu: float) -> tuple[EmpiricalDistribution, EmpiricalDistribution]:
        """`ntoys` toys of each hypothesis (seeds derived from `seed`); toys with invalid fits are left out."""
        out = []
        for h, hyp in enumerate(("sb", "b")):
            stats_ = self.toy_statistics(mu, hyp, range(self.ntoys), toy_seed(self.seed, h))  # type: ignore[arg-type]
            out.append(EmpiricalDistribution([s.q for s in stats_ if s.valid]))
        return out[0], out[1]


class PoolToyModel:
    """A `ToyModel` on a run's events: toys and Asimov datasets resampled from the pool (`toys.ToyGenerator`),
    each turned into an Objective by `make` (the run's NLL settings, `inference.steps.model_from_arrays`)."""

    def __init__(self, generator: Any, observed: Objective, make: Callable[[Any], Objective]) -> None:
        names = check_objective(observed)
        if list(generator.names) != names:
            raise InputError(f"the toy pool's parameters {list(generator.names)} differ from the observed "
                             f"likelihood's {names}")
        self.generator, self.make, self._observed, self._names = generator, make, observed, names

    @property
    def names(self) -> list[str]:
        return self._names

    @property
    def observed(self) -> Objective:
        return self._observed

    def toy(self, p: np.ndarray, seed: int, index: int) -> Objective:
        return self.make(self.generator.toy(p, seed, index))

    def asimov(self, p: np.ndarray) -> Objective:
        return self.make(self.generator.asimov(p))
