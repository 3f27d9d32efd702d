"""The CLs limits of the pipeline's likelihood against pyhf on binned models both can express.

Each model is a HistFactory channel: a signal sample scaled by mu with a normalisation systematic (normsys), and
a background with a normalisation (normsys) and a shape (histosys) systematic. In the contract's arrays (docs/
likelihood-model.md, "Binned models") a bin is one event: the data's weight is its observed count, the
normalisation sample's its nominal background count (L = 1); the columns are the two samples (signal: weight mu,
background: weight 1) with their log counts over the background; every nuisance acts on its sample only
(version 2). pyhf settings matched (docs/statistics.md): normsys interpolation code 1 (our `exponential`),
histosys code 0 (our additive `linear`), test statistic q~_mu with mu in [0, 10], nuisances in [-5, 5], the
background-only Asimov data from the fit with mu = 0 including the auxiliary data (global observables) at the
fitted nuisance values; pyhf's fits with scipy at tolerance 1e-12. The limits and every CLs value (observed,
and the expected band) agree to 1e-3 relative (seen: better than 1e-5)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyhf
import pytest

from sbi_core.data.likelihood_arrays import LikelihoodArrays
from sbi_core.inference.limits import AsymptoticCLs, pool_asimov
from sbi_core.inference.nll import NLLModel
from sbi_core.inference.toys import ToyGenerator

MODELS = {
    "one_bin": {"signal": [6.0], "background": [40.0], "bkg_norm": (1.08, 0.93), "bkg_shape": ([44.0], [37.5]),
                "sig_norm": (1.1, 0.9), "observed": [43.0]},
    "two_bin": {"signal": [5.0, 10.0], "background": [50.0, 60.0], "bkg_norm": (1.05, 0.95),
                "bkg_shape": ([52.0, 63.5], [48.5, 57.0]), "sig_norm": (1.1, 0.9), "observed": [53.0, 65.0]},
}
NUISANCE = ["bkg_norm", "bkg_shape", "sig_norm"]
SCHEMES = {"bkg_shape": "linear"}  # the others: exponential (HistFactory code 1)
BOUNDS = {n: (-5.0, 5.0) for n in NUISANCE}
TESTED = (0.5, 1.0, 2.0)
REL = 1e-3


def pyhf_model(m: dict) -> pyhf.Model:
    hi, lo = m["bkg_shape"]
    spec = {"channels": [{"name": "sr", "samples": [
        {"name": "signal", "data": m["signal"], "modifiers": [
            {"name": "mu", "type": "normfactor", "data": None},
            {"name": "sig_norm", "type": "normsys", "data": {"hi": m["sig_norm"][0], "lo": m["sig_norm"][1]}}]},
        {"name": "background", "data": m["background"], "modifiers": [
            {"name": "bkg_norm", "type": "normsys", "data": {"hi": m["bkg_norm"][0], "lo": m["bkg_norm"][1]}},
            {"name": "bkg_shape", "type": "histosys", "data": {"hi_data": hi, "lo_data": lo}}]}]}]}
    return pyhf.Model(spec, poi_name="mu", modifier_settings={"normsys": {"interpcode": "code1"},
                                                             "histosys": {"interpcode": "code0"}})


def contract_arrays(m: dict) -> tuple[LikelihoodArrays, LikelihoodArrays]:
    """(data, normalisation sample) of the binned model, one event per bin (see the module doc)."""
    s, b = np.array(m["signal"]), np.array(m["background"])
    hi, lo = (np.array(v) for v in m["bkg_shape"])
    n = s.size
    lrv = np.zeros((n, 3, 2, 2))
    lrv[:, 0, :, 1] = np.log(m["bkg_norm"])
    lrv[:, 1, 0, 1], lrv[:, 1, 1, 1] = np.log(hi / b), np.log(lo / b)
    lrv[:, 2, :, 0] = np.log(m["sig_norm"])
    counts = np.stack([s, b], axis=1)  # (bins, columns)
    xsec_var = np.einsum("ic,ikjc->kjc", counts, np.exp(lrv))  # column c belongs to sample c
    pool = LikelihoodArrays(
        source="exact", parameters=["mu"], benchmarks=["signal", "background"],
        benchmark_values=np.full((2, 1), np.nan), reference="background", morphing_components=np.array([[0], [1]]),
        morphing_matrix=np.array([[0.0, 1.0], [1.0, 0.0]]), nuisance=NUISANCE,
        nuisance_kinds=["normalization", "shape_weight", "normalization"], nuisance_sizes=np.array([0.05, 0.05, 0.1]),
        xsec=counts.sum(axis=0), xsec_var=xsec_var, log_ratio=np.log(counts / b[:, None]), log_ratio_var=lrv,
        weight=b.copy(), samples=["signal", "background"], benchmark_sample=np.array([0, 1]),
        modifier_mask=np.array([[False, True], [False, True], [True, False]]),
    )
    data = replace(pool, weight=np.array(m["observed"], dtype=np.float64))
    return data, pool


def ours(m: dict) -> AsymptoticCLs:
    data, pool = contract_arrays(m)
    kw = {"luminosity": 1.0, "interpolation": "exponential", "schemes": SCHEMES}
    gen = ToyGenerator(pool, normalization="mc", **kw)
    observed = NLLModel.from_arrays(data, normalization=pool, **kw)
    asimov = pool_asimov(gen, lambda a: NLLModel.from_arrays(a, normalization=pool, **kw))
    return AsymptoticCLs(observed, "mu", asimov, null=0.0, upper=10.0, bounds=BOUNDS, start={"mu": 1.0})


@pytest.fixture(scope="module", autouse=True)
def tight_pyhf():
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    yield
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cls_values_and_limits_equal_pyhf(name):
    m = MODELS[name]
    model = pyhf_model(m)
    data = np.array(m["observed"] + model.config.auxdata)
    calc = ours(m)
    bands = ("-2", "-1", "0", "+1", "+2")  # pyhf's expected set, from the strongest expected limit up
    for mu in TESTED:
        cls, (clsb, clb), expected = pyhf.infer.hypotest(mu, data, model, test_stat="qtilde", return_tail_probs=True,
                                                           return_expected_set=True)
        got = calc.hypotest(mu)
        assert got.valid
        assert got.cls == pytest.approx(float(cls), rel=REL) and got.clsb == pytest.approx(float(clsb), rel=REL)
        assert got.clb == pytest.approx(float(clb), rel=REL)
        for band, value in zip(bands, expected, strict=True):
            assert got.expected[band] == pytest.approx(float(value), rel=REL), (mu, band)
    obs, exp = pyhf.infer.intervals.upper_limits.toms748_scan(data, model, 0.5, 5.0, level=0.05, atol=1e-10,
                                                              rtol=1e-8, test_stat="qtilde")
    lim = calc.upper_limit(0.95)
    print(f"{name}: observed {lim.observed:.6f} (pyhf {float(obs):.6f}); expected "
          + ", ".join(f"{b} {lim.expected[b]:.6f} ({float(e):.6f})" for b, e in zip(bands, exp, strict=True)))
    assert lim.valid and lim.observed == pytest.approx(float(obs), rel=REL)
    for band, value in zip(bands, exp, strict=True):
        assert lim.expected[band] == pytest.approx(float(value), rel=REL), band


def test_the_asimov_data_carry_the_conditional_fit():
    """What makes the expected band pyhf's: the background-only Asimov dataset has the conditional fit's (mu = 0)
    expected counts and its auxiliary data at the fitted nuisance values. Left at aux = 0 (the wave-2 pipeline),
    the median expected CLs moves well beyond the 1e-3 agreement."""
    from sbi_core.inference.fit import minimize

    m = MODELS["two_bin"]
    calc = ours(m)
    data, pool = contract_arrays(m)
    kw = {"luminosity": 1.0, "interpolation": "exponential", "schemes": SCHEMES}
    conditional = minimize(NLLModel.from_arrays(data, normalization=pool, **kw), start={"mu": 0.0}, fixed={"mu": 0.0},
                           bounds=BOUNDS)
    nu = conditional.x[1:]
    assert np.max(np.abs(nu)) > 0.1  # the data pull the nuisances: the convention matters here
    np.testing.assert_allclose(calc.asimov.objective.aux, nu, rtol=1e-6, atol=1e-8)
    gen = ToyGenerator(pool, normalization="mc", **kw)
    at_zero = replace(gen.asimov(conditional.x), aux=np.zeros(3))
    old = AsymptoticCLs(NLLModel.from_arrays(data, normalization=pool, **kw), "mu",
                        NLLModel.from_arrays(at_zero, normalization=pool, **kw), upper=10.0, bounds=BOUNDS)
    shift = old.hypotest(1.0).expected["0"] / calc.hypotest(1.0).expected["0"] - 1
    print(f"median expected CLs(mu = 1) with the Asimov aux left at 0: {shift:+.2%} off pyhf's")
    assert abs(shift) > 0.01
