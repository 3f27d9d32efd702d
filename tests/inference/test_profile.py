"""Profile fits, scans and root-found intervals on a correlated Gaussian NLL, where the profile is known:
profiling a Gaussian over the other parameters gives the marginal Gaussian (variance = covariance diagonal)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sbi_core.inference.asymptotics import wilks_threshold
from sbi_core.inference.profile import Profiler, snake_order


class Gaussian:
    """NLL = (p - m)^T C^-1 (p - m) / 2."""

    def __init__(self, mean, cov, names) -> None:
        self.m, self.prec, self.names = np.asarray(mean, float), np.linalg.inv(cov), list(names)
        self.calls = 0

    def value(self, p):
        self.calls += 1
        d = np.asarray(p) - self.m
        return float(0.5 * d @ self.prec @ d)

    def grad(self, p):
        return self.prec @ (np.asarray(p) - self.m)


COV = np.array([[0.04, 0.03, 0.01], [0.03, 0.09, -0.02], [0.01, -0.02, 0.25]])
MEAN = [0.3, -0.2, 0.1]


def test_profile_scan_is_the_marginal_parabola():
    prof = Profiler(Gaussian(MEAN, COV, ["a", "b", "nu"]))
    assert prof.best.values["a"] == pytest.approx(0.3, abs=1e-4)
    x = np.linspace(-0.5, 1.0, 16)
    pts = prof.scan(["a"], x[:, None])
    dnll = np.array([p.nll for p in pts]) - prof.nll_min
    assert np.allclose(dnll, (x - 0.3) ** 2 / (2 * 0.04), atol=1e-4)
    assert all(p.valid for p in pts)
    # 2D: profile over nu only gives the (a, b) block of the covariance
    grid = np.array([[0.4, -0.1], [0.1, -0.5]])
    sub = np.linalg.inv(COV[:2, :2])
    for row, p in zip(grid, prof.scan(["a", "b"], grid), strict=True):
        d = row - np.array(MEAN[:2])
        assert p.nll - prof.nll_min == pytest.approx(0.5 * d @ sub @ d, abs=1e-4)


@pytest.mark.parametrize("level", [0.68, 0.95])
def test_interval_by_root_finding(level):
    prof = Profiler(Gaussian(MEAN, COV, ["a", "b", "nu"]))
    half = math.sqrt(COV[1, 1]) * math.sqrt(2 * wilks_threshold(level))
    walked = prof.interval("b", level)
    assert walked.lo == pytest.approx(-0.2 - half, abs=1e-4) and walked.hi == pytest.approx(-0.2 + half, abs=1e-4)
    x = np.linspace(-1.2, 0.8, 11)  # coarse: the scan alone is off by ~1e-3, the refined ends are not
    nll = np.array([p.nll for p in prof.scan(["b"], x[:, None])])
    refined = prof.interval("b", level, scan=(x, nll))
    assert refined.method == "profile" and not refined.lo_open and not refined.hi_open
    assert refined.lo == pytest.approx(-0.2 - half, abs=1e-5) and refined.hi == pytest.approx(-0.2 + half, abs=1e-5)


def test_open_interval_at_bounds_and_cache():
    obj = Gaussian(MEAN, COV, ["a", "b", "nu"])
    prof = Profiler(obj, bounds={"a": (0.0, 0.5)}, fixed={"nu": 0.1})
    iv = prof.interval("a", 0.95)
    assert iv.hi_open and iv.hi == 0.5 and iv.lo_open and iv.lo == 0.0
    before = obj.calls
    prof.point({"a": 0.25})
    prof.point({"a": 0.25})  # asked again: no refit
    after_one = obj.calls
    prof.point({"a": 0.25})
    assert obj.calls == after_one > before


def test_snake_order_visits_neighbours():
    order = snake_order((3, 4))
    cells = [divmod(int(i), 4) for i in order]
    assert sorted(order.tolist()) == list(range(12))
    assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in zip(cells, cells[1:], strict=False))


class QuarticWithHessian:
    """A non-quadratic NLL with an exact Hessian, so minimize would seed Migrad with it."""

    names = ("a", "b", "c", "d")
    A = np.array([[473.6, -315.5, 31.7, -12.2], [-315.5, 548.5, -33.4, 10.7], [31.7, -33.4, 4.23, -0.48],
                  [-12.2, 10.7, -0.48, 8.14]])
    centre = np.array([0.3, -0.2, 0.5, 0.05])

    def value(self, p):
        d = np.asarray(p) - self.centre
        return float(0.5 * d @ self.A @ d + 0.5 * np.sum(d**4))

    def grad(self, p):
        d = np.asarray(p) - self.centre
        return self.A @ d + 2 * d**3

    def hessian(self, p):
        d = np.asarray(p) - self.centre
        return self.A + np.diag(6 * d**2)


@pytest.mark.parametrize("held", ["a", "b", "c", "d"])
def test_constrained_fit_of_an_objective_with_a_hessian(held):
    """Fits with a parameter held reach the constrained minimum whichever parameter it is (Minuit2 mis-indexes
    a user Hessian when parameters are fixed: minimize must not seed with it then)."""
    from scipy.optimize import minimize as scipy_minimize

    from sbi_core.inference.fit import minimize

    obj = QuarticWithHessian()
    start = {"a": 0.315, "b": -0.229, "c": 0.448, "d": 0.078}
    i = obj.names.index(held)
    free = [k for k in range(4) if k != i]

    def sub(q):
        p = np.array(list(start.values()))
        p[free] = q
        return p

    exact = scipy_minimize(lambda q: obj.value(sub(q)), np.array(list(start.values()))[free],
                           jac=lambda q: obj.grad(sub(q))[free], method="BFGS", options={"gtol": 1e-10})
    res = minimize(obj, start=start, fixed={held: start[held]}, errors=False)
    assert res.valid and res.nll == pytest.approx(exact.fun, abs=2e-5)
