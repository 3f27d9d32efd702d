"""minimize(): Asimov closure on synthetic arrays, fixed and bounded parameters, plain Objectives, bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sbi_core.errors import InputError
from sbi_core.inference.fit import minimize
from sbi_core.inference.nll import NLLModel
from sbi_core.inference.objective import Objective
from sbi_core.inference.synthetic import synthetic_arrays


@pytest.fixture(scope="module")
def model():
    # exponential interpolation: the Asimov minimum is exactly (truth, nu = 0)
    return NLLModel.from_arrays(synthetic_arrays(20000, 3, truth=(0.3, -0.2), seed=1), luminosity=200.0,
                                interpolation="exponential")


class Gaussian:
    """NLL of a 2-D Gaussian with mean mu and covariance cov: the fit must return mu and sqrt(diag cov)."""

    names = ("a", "b")

    def __init__(self, mu, cov):
        self.mu, self.prec = np.asarray(mu), np.linalg.inv(cov)

    def value(self, p):
        d = p - self.mu
        return 0.5 * d @ self.prec @ d

    def grad(self, p):
        return self.prec @ (p - self.mu)


def test_asimov_fit_recovers_the_truth(model):
    res = minimize(model)
    assert res.valid and res.message == "valid" and res.edm < 1e-3
    # Asimov: the minimum is the truth up to Migrad's EDM tolerance (shift << 1e-2 sigma)
    np.testing.assert_allclose(res.x[:2], [0.3, -0.2], atol=0.01 * min(res.errors["theta0"], res.errors["theta1"]))
    np.testing.assert_allclose(res.x[2:], 0.0, atol=0.02)
    # errors from the exact Hessian: symmetric positive covariance, nuisances near their unit prior (little data)
    assert res.covariance is not None and np.allclose(res.covariance, res.covariance.T)
    assert 0.0 < res.errors["theta0"] < 0.2 and all(0.0 < res.errors[f"nu{k}"] < 1.01 for k in range(3))
    js = res.to_json()
    assert js["values"]["theta0"] == res.values["theta0"] and len(js["covariance"]) == 5


@pytest.mark.parametrize("interpolation", ["polyexp", "exponential"])
def test_mc_normalisation_is_exact_at_the_asimov_truth(interpolation):
    """With the expected rate summed over the MC sample with the data's own per-event model, the Asimov NLL
    is stationary at (truth, nu = 0) for any interpolation; the contract's xsec interpolation is not (its
    sigma(nu) between the +-1 points ignores the spread of the per-event variations)."""
    data = synthetic_arrays(5000, 3, truth=(0.3, -0.2), seed=3)
    mc = replace(data, weight=np.full(data.n_events, 5.0 / data.n_events))  # MC weights at the reference
    truth = np.array([0.3, -0.2, 0.0, 0.0, 0.0])
    exact = NLLModel.from_arrays(data, luminosity=200.0, normalization=mc, interpolation=interpolation)
    assert exact.normalization == "mc" and exact.n_normalization == 5000
    g = exact.grad(truth)
    assert np.abs(g).max() < 1e-9 * data.weight.sum()
    assert exact.expected_events(truth) == pytest.approx(data.weight.sum(), rel=1e-12)
    res = minimize(exact)
    errors = np.array([res.errors[n] for n in res.names])
    assert np.all(np.abs(res.x - truth) < 0.01 * errors)  # Migrad's EDM tolerance, seen: < 0.005 sigma
    if interpolation == "polyexp":
        approx = NLLModel.from_arrays(data, luminosity=200.0, interpolation=interpolation)
        assert np.abs(approx.grad(truth)[2:]).max() > 0.1  # seen: ~0.2-0.4 per nuisance at 1000 events


def test_fixed_and_bounded(model):
    res = minimize(model, fixed={"nu0": 0.5}, bounds={"theta0": (0.0, 0.2)})
    assert res.values["nu0"] == 0.5 and res.errors["nu0"] == 0.0 and res.fixed == ["nu0"]
    assert res.values["theta0"] == pytest.approx(0.2, abs=1e-6)  # the truth (0.3) is outside: at the bound
    assert "at its limit" in res.message
    assert res.covariance[2, 2] == 0.0


def test_plain_objective_and_numeric_hesse():
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    g = Gaussian([1.0, -2.0], cov)
    assert isinstance(g, Objective)
    res = minimize(g, start={"a": 0.0, "b": 0.0})
    np.testing.assert_allclose(res.x, [1.0, -2.0], atol=1e-4)
    # errordef LIKELIHOOD on an NLL: the errors are sqrt(diag(cov)), not sqrt(2 diag(cov))
    np.testing.assert_allclose([res.errors["a"], res.errors["b"]], [0.2, 0.3], rtol=1e-3)
    np.testing.assert_allclose(res.covariance, cov, rtol=1e-3, atol=1e-6)


def test_bad_input_is_named(model):
    with pytest.raises(InputError, match=r"fixed: unknown parameters \['mu'\]"):
        minimize(model, fixed={"mu": 1.0})
    with pytest.raises(InputError, match="bounds.theta0"):
        minimize(model, bounds={"theta0": (1.0, 0.0)})
    with pytest.raises(InputError, match="start: expected 5 values"):
        minimize(model, start=[0.0, 0.0])
    with pytest.raises(TypeError, match="missing"):
        minimize(object())


class DoubleWell:
    """f(a, b) = (a^2 - 1)^2 + b^2 / 2: its Hessian at the start (0, 0) is not positive definite."""

    names = ("a", "b")

    def value(self, p):
        return (p[0] ** 2 - 1.0) ** 2 + 0.5 * p[1] ** 2

    def grad(self, p):
        return np.array([4.0 * p[0] * (p[0] ** 2 - 1.0), p[1]])

    def hessian(self, p):
        return np.array([[12.0 * p[0] ** 2 - 4.0, 0.0], [0.0, 1.0]])


def test_a_start_without_positive_curvature_is_not_seeded():
    """Minuit2 needs a positive-definite Hessian seed (iminuit 2.33 raised TypeError on this one): the fit
    starts without it and finds a minimum at a = +-1."""
    res = minimize(DoubleWell(), start={"a": 0.05, "b": 0.3})
    assert res.valid and abs(abs(res.values["a"]) - 1.0) < 1e-2 and abs(res.values["b"]) < 1e-2  # errors ~0.25, 1
