"""Exact unweighting (`sbi_core.physics.unweighting`) on a case with a closed form: f(x) = 3 x^2 on [0, 1] drawn
from a uniform proposal (weights 3 x^2, integral 1, efficiency 1/3 at w_max = 3); the quantile rule for w_max and
overweight events that keep their factor, so the sample stays exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from sbi_core.physics.channels import BreitWignerMap, PowerLawMap, prior_weights
from sbi_core.physics.unweighting import MaxWeightRule, Unweighter, max_weight, weight_stats


class Cubic:
    """Uniform x in [0, 1] with weight f(x) / q(x) = 3 x^2."""

    dim = 1

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.random((n, 1))
        return x, 3.0 * x[:, 0] ** 2


def test_max_weight_rules():
    w = np.random.default_rng(0).lognormal(0.0, 1.0, 100_000)
    assert max_weight(w, MaxWeightRule(1.1, 0.0)) == pytest.approx(1.1 * w.max())
    for eps in (1e-4, 1e-3, 1e-2):
        w_star = max_weight(w, MaxWeightRule(1.0, eps))
        assert np.maximum(w - w_star, 0).sum() == pytest.approx(eps * w.sum(), rel=1e-9)  # exactly eps above it
        assert w_star < w.max()
    assert max_weight(w, MaxWeightRule(1.0, 1e-2)) < max_weight(w, MaxWeightRule(1.0, 1e-3))
    with pytest.raises(ValueError):
        max_weight(np.array([1.0, -1.0]), MaxWeightRule())
    with pytest.raises(ValueError):
        MaxWeightRule(0.9, 0.0)


def test_the_max_rule_gives_the_closed_form_efficiency():
    unw = Unweighter.find(Cubic(), seed=1, max_points=200_000, rule=MaxWeightRule(1.0, 0.0))
    assert unw.w_max == pytest.approx(3.0, rel=1e-4)  # the largest of 2e5 uniform draws of 3 x^2
    assert unw.efficiency == pytest.approx(1 / 3, abs=0.003) and unw.excess == 0.0
    assert unw.stats.relative_variance == pytest.approx(0.8, abs=0.02)  # var(3x^2) = 9/5 - 1 = 4/5


def test_overweight_events_keep_their_factor_and_the_sample_stays_exact():
    # With 5% of the integral above w_max, about 10% of the events are overweight. Weighted by their factors and
    # normalised by the clipped integral, the events reproduce the integral (1) and E[x] = 3/4 within 4 standard
    # errors; without the factors E[x] is visibly low (the test would see an unweighting that dropped them).
    unw = Unweighter.find(Cubic(), seed=2, max_points=200_000, rule=MaxWeightRule(1.0, 0.05))
    assert unw.stats.overweight_excess == pytest.approx(0.05, rel=1e-9)
    assert unw.excess == pytest.approx(0.05, rel=0.05)
    x, factor = unw.sample(200_000, np.random.default_rng(3))
    x = x[:, 0]
    # the overweight share of accepted events, in closed form: w* solves int (3x^2 - w*)+ = 0.05 with
    # x0 = sqrt(w* / 3), and the events above x0 are accepted with density w*: w*(1 - x0) / (x0^3 + w*(1 - x0))
    w_star = brentq(lambda t: (1 - math.sqrt(t / 3) ** 3) - t * (1 - math.sqrt(t / 3)) - 0.05, 0.5, 3.0)
    assert unw.w_max == pytest.approx(w_star, rel=0.01)
    x0 = math.sqrt(w_star / 3)
    share = w_star * (1 - x0) / (x0**3 + w_star * (1 - x0))
    assert abs(np.mean(factor > 1) - share) < 4 * math.sqrt(share * (1 - share) / factor.size)
    weights = unw.clipped_integral(1.0) * factor
    n = x.size
    assert abs(weights.mean() - 1.0) < 4 * weights.std() / math.sqrt(n)
    mean_x = np.average(x, weights=weights)
    se = math.sqrt(np.average((x - mean_x) ** 2, weights=weights) / n) * math.sqrt(np.mean(factor**2)) / np.mean(factor)
    assert abs(mean_x - 0.75) < 4 * se, (mean_x, se)
    assert 0.75 - x.mean() > 10 * se  # the factors matter
    stats = weight_stats(3.0 * np.random.default_rng(4).random(100_000) ** 2, 3.0)
    assert stats.integral == pytest.approx(1.0, abs=4 * stats.integral_error)


@pytest.mark.parametrize("mapping", [PowerLawMap(60.0, 400.0, 3.0), PowerLawMap(60.0, 400.0, 1.0),
                                     BreitWignerMap(60.0, 400.0, 91.1876, 2.4952)])
def test_mass_maps_are_normalised_bijections(mapping):
    u = np.linspace(0.0, 1.0, 2001)
    m = mapping.to_mass(u)
    assert m[0] == pytest.approx(60.0) and m[-1] == pytest.approx(400.0) and np.all(np.diff(m) > 0)
    np.testing.assert_allclose(mapping.to_unit(m), u, atol=1e-9)
    grid = np.linspace(60.0, 400.0, 200_001)
    assert np.trapezoid(mapping.density(grid), grid) == pytest.approx(1.0, rel=1e-4)
    # dm/du = 1 / density: the Jacobian a channel multiplies its integrand by (central differences, h = 1e-6)
    v, h = np.linspace(0.01, 0.99, 99), 1e-6
    slope = (mapping.to_mass(v + h) - mapping.to_mass(v - h)) / (2 * h)
    np.testing.assert_allclose(slope, 1.0 / mapping.density(mapping.to_mass(v)), rtol=1e-6)


def test_prior_channel_weights_sum_to_one():
    maps = [PowerLawMap(60.0, 400.0, 3.0), BreitWignerMap(60.0, 400.0, 91.1876, 2.4952)]
    a = prior_weights(maps, np.array([61.0, 91.19, 300.0]))
    np.testing.assert_allclose(a.sum(axis=1), 1.0)
    assert a[1, 1] > 0.9 and a[2, 0] > 0.9  # the Z channel owns the peak, the photon the tail
