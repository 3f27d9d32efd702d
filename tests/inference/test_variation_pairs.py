"""Folded variation pairs: which pairs fold, and the folded NLL equals the unfolded one (float64, 1e-10)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sbi_core.inference.nll import NLLModel
from sbi_core.inference.synthetic import synthetic_arrays, two_sample_arrays
from sbi_core.inference.variation_pairs import PairScan


def test_pairs_fold_where_down_is_a_fixed_multiple_of_up():
    rng = np.random.default_rng(11)
    n = 600
    u = rng.normal(0.0, 0.05, (n, 7))
    v = np.zeros((n, 7, 2))
    v[:, :, 0] = u
    v[:, 0, 1] = -u[:, 0]  # symmetric
    v[:, 1, 1] = 0.0  # one-sided
    v[:, 2, 1] = -1.3 * u[:, 2]  # a fixed asymmetry
    v[:, 3, 1] = rng.normal(0.0, 0.05, n)  # independent: both kept
    v[:, 4, 0], v[:, 4, 1] = 0.0, u[:, 4]  # up zero everywhere: down alone
    v[:, 5] = 0.0  # no variation at all: nothing read
    v[:, 6, 1] = -u[:, 6]
    v[450, 6, 1] *= 1.0 + 1e-9  # proportional but for one event in a later chunk: both kept
    v[:40, 0, 0] = v[:40, 0, 1] = 0.0  # events without the variation are fine
    flat = v.reshape(n, 14)
    scan = PairScan(7, rtol=16 * np.finfo(np.float64).eps)
    for start in range(0, n, 200):
        scan.add(flat[start : start + 200])
    columns, q = scan.fold()
    assert columns.tolist() == [0, 2, 4, 6, 7, 9, 12, 13]
    np.testing.assert_allclose(flat[:, columns] @ q, flat, rtol=1e-15, atol=0.0)


def test_down_alone_before_the_first_up_is_not_folded():
    """An event with d != 0 while u == 0, seen before any u != 0: no fixed multiple can give it."""
    scan = PairScan(1, rtol=1e-15)
    scan.add(np.array([[0.0, 0.2], [0.0, 0.0]]))
    scan.add(np.array([[0.1, -0.1], [0.3, -0.3]]))
    assert scan.fold()[0].tolist() == [0, 1]


def _random_model(seed: int):
    """Two samples, seven nuisances: five common ones with every kind of pair (symmetric, one-sided, asymmetric,
    independent, up zero), one on the signal only and one additive (linear) on both; random weights."""
    rng = np.random.default_rng(seed)
    base = two_sample_arrays(1500, truth=(0.3, -0.2), weights="unit", seed=seed)
    n = base.n_events
    u = rng.normal(0.0, 0.05, (n, 7))
    lrv = np.zeros((n, 7, 2))
    lrv[:, :, 0] = u
    lrv[:, 0, 1], lrv[:, 1, 1], lrv[:, 2, 1] = -u[:, 0], 0.0, -1.3 * u[:, 2]
    lrv[:, 3, 1] = rng.normal(0.0, 0.05, n)
    lrv[:, 4, 0], lrv[:, 4, 1] = 0.0, u[:, 4]
    lrv[:, 5, 1], lrv[:, 6, 1] = -0.8 * u[:, 5], -u[:, 6]
    mask = np.ones((7, 2), dtype=bool)
    mask[5, 1] = False
    lrv = lrv[:, :, :, None] * mask[None, :, None, :]  # (n, K, 2, S): zero where a nuisance does not act
    owner = np.asarray(base.benchmark_sample)
    rates = np.exp(base.log_ratio)
    xsec_var = np.einsum("ib,ikjb->kjb", rates, np.exp(lrv[:, :, :, owner])) * base.xsec / rates.sum(axis=0)
    data = replace(base, nuisance=[f"n{k}" for k in range(7)], nuisance_kinds=["shape_weight"] * 7,
                   nuisance_sizes=np.full(7, 0.05), log_ratio_var=lrv, xsec_var=xsec_var,
                   modifier_mask=mask, aux=np.zeros(7), constraints=["gaussian"] * 7,
                   weight=rng.uniform(0.5, 1.5, n))
    mc = replace(data, weight=rng.uniform(0.5, 1.5, n) * 5.0 / n)
    return data, mc


@pytest.mark.parametrize("kind", ["two samples", "one sample"])
def test_folded_nll_equals_the_unfolded_one(kind):
    """The bench's path (one sample: only common nuisances) and the per-sample path (`_norm_general`)."""
    if kind == "two samples":
        data, mc = _random_model(21)
        schemes = {"n6": "linear"}
        expect_columns = 6  # n0, n1, n2, n4 one column each, n3 two
    else:
        data = synthetic_arrays(2000, 4, truth=(0.3, -0.2), seed=22)
        mc = replace(data, weight=np.full(data.n_events, 5.0 / data.n_events))
        schemes, expect_columns = None, 4  # d = -(1 + a_k) u: one column per nuisance
    kw = {"luminosity": 150.0, "normalization": mc, "schemes": schemes, "chunk_rows": 512}
    folded = NLLModel.from_arrays(data, **kw)
    whole = NLLModel.from_arrays(data, fold_variations=False, **kw)
    assert (folded.mc_columns, whole.mc_columns) == (expect_columns, 2 * len(folded.groups["common"]))
    rng = np.random.default_rng(23)
    n_pois = folded.n_pois
    for _ in range(3):
        p = np.r_[rng.normal(0.0, 0.3, n_pois), rng.normal(0.0, 1.2, folded.n_params - n_pois)]
        v1, g1 = folded.value_and_grad(p)
        v0, g0 = whole.value_and_grad(p)
        assert v1 == pytest.approx(v0, rel=1e-10)
        np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-10 * np.abs(g0).max())
    if kind == "one sample":  # second derivatives (the general path's HVP: the same Q F, costlier to compile)
        h1, h0 = folded.hvp(p, g0), whole.hvp(p, g0)
        np.testing.assert_allclose(h1, h0, rtol=1e-10, atol=1e-10 * np.abs(h0).max())
        # the sample in parts, their passes in threads (4 chunks here, 2 cores or more), against one chunk alone
        alone = NLLModel.from_arrays(data, fold_variations=False, **{**kw, "chunk_rows": 4096})
        assert not isinstance(alone._data["mc_e"], tuple)
        v2, g2 = alone.value_and_grad(p)
        assert v2 == pytest.approx(v0, rel=1e-12)
        np.testing.assert_allclose(g2, g0, rtol=1e-9, atol=1e-9 * np.abs(g0).max())
