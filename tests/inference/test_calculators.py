"""The calculators' one interface: toys against the exact CLs of a counting experiment, asymptotic against
`limits.AsymptoticCLs`, p-values of an empirical distribution, CLs from counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sbi_core.inference.calculators import (
    AsymptoticCalculator,
    EmpiricalDistribution,
    ToyCalculator,
    cls_from_counts,
    hypotest,
)
from sbi_core.inference.counting import CountingExperiment, CountingToyModel
from sbi_core.inference.limits import AsymptoticCLs

N_OBS, S, B = 12, 5.0, 10.0


def exact_cls(mu: float) -> float:
    """CLs of the counting experiment: q~_mu falls with n, so P(q~ >= q~_obs) = P(n <= n_obs)."""
    return stats.poisson.cdf(N_OBS, mu * S + B) / stats.poisson.cdf(N_OBS, B)


def test_toy_calculator_gives_the_exact_cls_of_a_counting_experiment():
    model = CountingToyModel(N_OBS, S, B)
    calc = ToyCalculator(model, "mu", upper=10.0, ntoys=1500, seed=17)
    for mu in (0.6, 1.5):
        res = hypotest(calc, mu)
        assert abs(res.cls - exact_cls(mu)) < 3 * res.cls_error, (mu, res.cls, res.cls_error, exact_cls(mu))
        assert res.clb == pytest.approx(stats.poisson.cdf(N_OBS, B), abs=3 * res.clb_error)
    # the toys are drawn at the conditional fits of the observed data: at mu, and at the null value
    assert calc.generating_point(1.5)[0] == {"mu": 1.5} and calc.generating_point(0.0)[0] == {"mu": 0.0}
    again = calc.toy_statistics(1.5, "sb", [3, 4], seed=99)
    assert again == calc.toy_statistics(1.5, "sb", [3, 4], seed=99)  # a batch is reproducible alone


def test_asymptotic_calculator_is_asymptotic_cls():
    model = CountingToyModel(N_OBS, S, B)
    direct = AsymptoticCLs(model.observed, "mu", CountingExperiment(B, S, B), upper=10.0)
    calc = AsymptoticCalculator(model.observed, "mu", lambda fit: model.asimov(fit.x), upper=10.0)
    for mu in (0.5, 1.0, 2.0):
        got, want = hypotest(calc, mu), direct.hypotest(mu)
        assert got.cls == pytest.approx(want.cls, rel=1e-6) and got.clsb == pytest.approx(want.clsb, rel=1e-6)
        assert got.cls_error == 0.0
        for band in ("-2", "-1", "0", "+1", "+2"):
            assert got.expected[band] == pytest.approx(want.expected[band], rel=1e-6, abs=1e-12), band
    assert calc.upper_limit(0.95).observed == pytest.approx(direct.upper_limit(0.95).observed, rel=1e-6)


def test_empirical_pvalues_and_cls_from_counts():
    dist = EmpiricalDistribution([0.0, 0.0, 1.0, 2.0, 2.0, 3.0])
    assert dist.pvalue(2.0)[0] == pytest.approx(3 / 6)  # at or above, ties included
    assert dist.pvalue(2.0 - 5e-4)[0] == dist.pvalue(2.0)[0]  # within the tie tolerance
    assert dist.pvalue(10.0)[0] == 0.0 and dist.pvalue(10.0)[1] > 0  # an error even with no toy above
    r = cls_from_counts(10, 400, 300, 400)
    assert r.cls == pytest.approx(10 / 300)
    want = math.hypot(math.sqrt((10.5 / 401) * (1 - 10.5 / 401) / 400) / 0.75,
                      r.cls * math.sqrt((300.5 / 401) * (1 - 300.5 / 401) / 400) / 0.75)
    assert r.cls_error == pytest.approx(want)
    with pytest.raises(ValueError):
        EmpiricalDistribution([np.nan])
