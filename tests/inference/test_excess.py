"""The excess statistics against closed forms (a counting experiment) and the CLs code they build on (on a fitted
benchmark run: tests/studies/test_active_learning.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sbi_core.inference.excess import RayObjective, cls_excess, local_significance
from sbi_core.inference.limits import hypotest
from sbi_core.inference.profile import Profiler


class Counting:
    """n ~ Poisson(b (1 + 0.1 nu) + s theta^2), nu ~ N(0, 1) (with_nuisance), else nu absent: an NLL."""

    def __init__(self, n: float, b: float = 100.0, s: float = 50.0, with_nuisance: bool = True) -> None:
        self.n, self.b, self.s, self.nu = n, b, s, with_nuisance

    @property
    def names(self) -> list[str]:
        return ["theta", "nu"] if self.nu else ["theta"]

    def rate(self, p: np.ndarray) -> float:
        nu = p[1] if self.nu else 0.0
        return self.b * (1.0 + 0.1 * nu) + self.s * p[0] ** 2

    def value(self, p: np.ndarray) -> float:
        lam = self.rate(p)
        return lam - self.n * math.log(lam) + (0.5 * p[1] ** 2 if self.nu else 0.0)

    def grad(self, p: np.ndarray) -> np.ndarray:
        lam = self.rate(p)
        d = 1.0 - self.n / lam
        g = [d * 2.0 * self.s * p[0]]
        if self.nu:
            g.append(d * 0.1 * self.b + p[1])
        return np.array(g)


def test_local_significance_equals_the_closed_form():
    """No nuisance: q(theta) = 2 [(l0 - n log l0) - (lt - n log lt)] with l = b + s theta^2; expected on the
    Asimov count n = b. Largest at the maximum-likelihood theta^2 = (n - b) / s."""
    n, b, s = 130.0, 100.0, 50.0
    obs = Profiler(Counting(n, with_nuisance=False))
    exp = Profiler(Counting(b, with_nuisance=False))

    def q(nn, t):
        lt = b + s * t**2
        return 2.0 * ((b - nn * math.log(b)) - (lt - nn * math.log(lt)))

    for t in (0.3, math.sqrt((n - b) / s), 1.2):
        res = local_significance(obs, exp, {"theta": t}, {"theta": 0.0})
        assert res.observed["q"] == pytest.approx(q(n, t), rel=1e-12)
        assert res.value == pytest.approx(math.copysign(math.sqrt(abs(q(n, t))), q(n, t)), rel=1e-12)
        assert res.expected["q"] == pytest.approx(q(b, t), rel=1e-12) and res.expected["z"] < 0 and res.valid
    best = local_significance(obs, exp, {"theta": math.sqrt((n - b) / s)}, {"theta": 0.0}).value
    assert best > local_significance(obs, exp, {"theta": 0.7}, {"theta": 0.0}).value
    assert best > local_significance(obs, exp, {"theta": 0.8}, {"theta": 0.0}).value


def test_cls_along_the_ray_equals_the_cls_of_the_parameter_itself():
    """With one POI the ray theta = mu theta_t is a positive rescaling: CLs(mu = 1) equals CLs(theta = theta_t)
    from limits.hypotest (the pyhf-checked code), observed and expected, to 2e-4 (the fits' own precision: the
    two parametrisations stop at different points within Migrad's EDM tolerance)."""
    obj = Counting(112.0)

    def asimov(x):
        return Counting(Counting(0.0).rate(np.asarray(x)))

    for t in (0.6, 1.1):
        res = cls_excess(obj, asimov, {"theta": t}, {"theta": 0.0}, upper=10.0)
        ref = hypotest(obj, "theta", t, lambda fit: asimov(fit.x), null=0.0, upper=10.0 * t)
        assert res.observed["cls"] == pytest.approx(ref.cls, abs=2e-4)
        assert res.expected["cls"] == pytest.approx(ref.expected["0"], abs=2e-4)
        from scipy import stats

        assert res.value == pytest.approx(stats.norm.isf(ref.expected["0"]) - stats.norm.isf(ref.cls), abs=2e-3)
    ray = RayObjective(obj, {"theta": 0.0}, {"theta": 0.5})
    p = np.array([1.3, 0.4])
    eps = 1e-6
    numeric = [(ray.value(p + eps * e) - ray.value(p - eps * e)) / (2 * eps) for e in np.eye(2)]
    assert ray.grad(p) == pytest.approx(numeric, rel=1e-6)
    assert ray.names == ["mu", "nu"] and ray.full(p).tolist() == pytest.approx([0.65, 0.4])
