"""The normalisation table (`sbi_core.inference.normalization_table`): a Chebyshev series of log Z(theta) that
lets a parametrised fit skip the run's events.

Checked on the synthetic squared-amplitude model with a closed-form log r(x | theta) (the exact density ratio, as in
test_parametrised.py) and with a small random tanh network: the table's NLL, gradient, Hessian and best fit
against the same model normalised over the events at every call (normalisation mc), within the table's own
measured error; a shape systematic, an empty box and a point outside the box refused.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sbi_core.errors import InputError
from sbi_core.inference.fit import minimize
from sbi_core.inference.normalization_table import build_table
from sbi_core.inference.parametrised import ParametrisedNLL, exported_ensemble
from sbi_core.inference.synthetic import synthetic_arrays
from tests.inference.test_parametrised import TRUTH, _closed_form, _random_export

BOX = ([-1.0, -1.0], [1.0, 1.0])


def _normalisation_only(arrays):
    """The arrays with every event's variation factors those of a 5% and a 3% normalisation (no shapes)."""
    row = np.log(np.array([[1.05, 1 / 1.05], [1.03, 1 / 1.03]]))[..., None]  # (K, 2, 1)
    return replace(arrays, log_ratio_var=np.broadcast_to(row, (arrays.n_events, 2, 2, 1)).copy())


@pytest.fixture(scope="module")
def model():
    data = _normalisation_only(synthetic_arrays(2000, 2, truth=TRUTH, seed=5))
    mc = _normalisation_only(synthetic_arrays(6000, 2, weights="unit", seed=6))
    mc = replace(mc, weight=np.full(6000, 5.0 / 6000))
    return data, mc


@pytest.mark.parametrize("network", ["closed_form", "tanh"])
def test_the_table_gives_the_normalised_nll(model, network):
    data, mc = model
    n_x = data.log_ratio.shape[1]
    if network == "closed_form":
        fn, params = _closed_form(data)
    else:
        fn, params = exported_ensemble([_random_export(n_x, 2, s) for s in (1, 2)], n_x, 2)
    table = build_table(fn, params, mc.log_ratio, mc.weight, *BOX, degree=16, checks=16)
    assert table.evaluations == 17 * 17 + 16
    assert table.max_error < 1e-7  # log Z is analytic in theta: the series converges geometrically
    kw = {"luminosity": 200.0, "chunk_rows": 1024, "normalization": (mc.log_ratio, mc)}
    full = ParametrisedNLL(fn, params, data.log_ratio, data, **kw)
    tab = ParametrisedNLL(fn, params, data.log_ratio, data, table=table, **kw)
    n_data = float(np.sum(data.weight))
    rng = np.random.default_rng(0)
    for _ in range(4):
        p = np.array([*rng.uniform(-0.9, 0.9, 2), *rng.normal(0, 1, 2)])
        assert tab.value(p) == pytest.approx(full.value(p), abs=n_data * table.max_error * 10 + 1e-9)
        np.testing.assert_allclose(tab.grad(p), full.grad(p), rtol=1e-5, atol=1e-4)
        assert tab.expected_events(p) == pytest.approx(full.expected_events(p), rel=1e-9)
    np.testing.assert_allclose(tab.hessian(p), full.hessian(p), rtol=1e-4, atol=1e-3)
    bounds = {"theta0": (-1.0, 1.0), "theta1": (-1.0, 1.0)}
    a = minimize(full, start={"theta0": 0.0, "theta1": 0.0})
    b = minimize(tab, start={"theta0": 0.0, "theta1": 0.0}, bounds=bounds)
    assert a.valid and b.valid
    np.testing.assert_allclose(b.x, a.x, atol=1e-5)
    np.testing.assert_allclose([b.errors[n] for n in tab.names], [a.errors[n] for n in full.names], rtol=1e-3)


def test_a_shape_systematic_is_refused_naming_it(model):
    data, mc = model
    fn, params = _closed_form(data)
    shaped = synthetic_arrays(2000, 2, truth=TRUTH, seed=5)  # per-event variation factors
    table = build_table(fn, params, mc.log_ratio, mc.weight, *BOX, degree=4, checks=2)
    with pytest.raises(InputError, match="'nu0' changes the events' shapes"):
        ParametrisedNLL(fn, params, shaped.log_ratio, shaped, luminosity=200.0, table=table)


def test_bad_box_and_points_outside_are_refused(model):
    data, mc = model
    fn, params = _closed_form(data)
    with pytest.raises(InputError, match="lo < hi"):
        build_table(fn, params, mc.log_ratio, mc.weight, [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(InputError, match="degree 1"):
        build_table(fn, params, mc.log_ratio, mc.weight, *BOX, degree=1)
    table = build_table(fn, params, mc.log_ratio, mc.weight, [-0.5, -0.5], [0.5, 0.5], degree=4, checks=2)
    tab = ParametrisedNLL(fn, params, data.log_ratio, data, luminosity=200.0, table=table)
    assert np.isfinite(tab.value([0.1, 0.1, 0.0, 0.0]))
    with pytest.raises(ValueError, match="outside the normalisation table's box"):
        tab.value([0.9, 0.1, 0.0, 0.0])
