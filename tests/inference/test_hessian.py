"""Hessian row blocks against jax.hessian; covariance, correlation and impacts from a known matrix."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_core.errors import InputError
from sbi_core.inference.hessian import block_ranges, hessian_rows, parse_rows, summarize
from sbi_core.inference.nll import NLLModel
from sbi_core.inference.synthetic import synthetic_arrays


def test_row_blocks_equal_jax_hessian():
    model = NLLModel.from_arrays(synthetic_arrays(4000, 9, truth=(0.3, -0.2), seed=5), luminosity=200.0)
    p = np.r_[0.25, -0.1, np.linspace(-0.8, 0.9, 9)]
    auto = model.hessian_autodiff(p)
    blocks = model.hessian(p, block_rows=4)  # 11 rows: blocks 0:4, 4:8, 8:11 (the last one padded)
    np.testing.assert_allclose(blocks, auto, rtol=1e-6, atol=1e-6 * np.abs(auto).max())
    np.testing.assert_allclose(hessian_rows(model, p, 8, 11, pad_to=4), auto[8:11], rtol=1e-6,
                               atol=1e-6 * np.abs(auto).max())
    assert block_ranges(11, 4) == [(0, 4), (4, 8), (8, 11)]


def test_summary_of_a_known_hessian():
    cov = np.array([[0.04, 0.01, 0.02], [0.01, 0.09, -0.03], [0.02, -0.03, 0.5]])  # poi a, b; nuisance n
    out = summarize(np.linalg.inv(cov), ["a", "b", "n"], fixed=[], n_pois=2)
    np.testing.assert_allclose(out["covariance"], cov, rtol=1e-10)
    assert out["errors"]["b"] == pytest.approx(0.3)
    assert out["correlation"][0, 1] == pytest.approx(0.01 / (0.2 * 0.3))
    assert out["impacts"]["a"]["n"]["postfit"] == pytest.approx(0.02 / np.sqrt(0.5))
    assert out["impacts"]["b"]["n"]["prefit"] == pytest.approx(-0.03 / 0.5)
    fixed = summarize(np.linalg.inv(cov), ["a", "b", "n"], fixed=["n"], n_pois=2)
    np.testing.assert_allclose(fixed["covariance"][:2, :2], np.linalg.inv(np.linalg.inv(cov)[:2, :2]))
    assert fixed["errors"]["n"] == 0.0 and fixed["impacts"]["a"] == {}


def test_bad_hessians_and_rows_are_refused():
    h = np.array([[2.0, 0.5], [0.4, 1.0]])
    with pytest.raises(InputError, match="not symmetric"):
        summarize(h, ["a", "b"], [], 1)
    with pytest.raises(InputError, match="not positive definite"):
        summarize(np.array([[1.0, 2.0], [2.0, 1.0]]), ["a", "b"], [], 1)
    assert parse_rows("2:5", 5) == (2, 5)
    for text in ("5:2", "0:6", "a:b", "3"):
        with pytest.raises(InputError, match="--rows"):
            parse_rows(text, 5)
