"""Toys resampled from the benchmark run's exact arrays: reproducible draws, the right counts, the Asimov
dataset's fit at its generating point, the toy statistics (coverage, critical values, Neyman sets), and Wilks
against Neyman (the coverage of the Wilks regions over 1000 toys at two sizes: tests/inference/test_coverage.py).

Every NLL here is the pipeline's (`NLLModel`, exact arrays, MC normalisation by the same 6000-event pool the
toys are drawn from), with both nuisance parameters (lumi, energy_scale) floating."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sbi_core.inference.asymptotics import wilks_threshold
from sbi_core.inference.fit import minimize
from sbi_core.inference.profile import Profiler
from sbi_core.inference.toys import ToyFit, coverage, critical_value, fit_toy, neyman_interval
from tests.inference.benchmark_pool import TRUTH, generator, model


@pytest.fixture(scope="module")
def gen(small_run):
    return generator(small_run)


def test_toys_are_reproducible_and_poisson(gen, small_run):
    p = gen.vector(TRUTH)
    a, b = gen.toy(p, seed=3, index=17), gen.toy(p, seed=3, index=17)
    assert np.array_equal(a.weight, b.weight) and np.array_equal(a.log_ratio, b.log_ratio)
    assert not np.array_equal(gen.toy(p, seed=3, index=18).log_ratio[:5], a.log_ratio[:5])
    # N ~ Poisson(L sigma(p)): the model's own expected count, the NLL's extended term
    mu = gen.expected_events(p)
    assert mu == pytest.approx(model(a, small_run).expected_events(p), rel=1e-12)
    assert 300 < mu < 450
    sizes = np.array([gen.draw(p, np.random.default_rng(i))[1].sum() for i in range(400)])
    assert abs(sizes.mean() - mu) < 3 * math.sqrt(mu / sizes.size)  # 3 standard errors of the mean
    assert sizes.var() == pytest.approx(mu, rel=0.25)  # Poisson: variance = mean (400 draws: ~7% spread)


def test_asimov_fit_sits_at_its_generating_point(gen, small_run):
    """The Asimov dataset at (truth, nu = 0) - every pool event weighted by its expected count - is fitted back
    exactly there: the pool is also the NLL's normalisation sample, so the model describes it exactly."""
    p = gen.vector(TRUTH)
    asimov = gen.asimov(p)
    assert asimov.weight.sum() == pytest.approx(gen.expected_events(p), rel=1e-12)
    fit = minimize(model(asimov, small_run), start={"cW": 0.0, "cHW": 0.0})
    assert fit.valid
    for name, value in {**TRUTH, "lumi": 0.0, "energy_scale": 0.0}.items():
        assert abs(fit.values[name] - value) < 1e-3 * fit.errors[name], (name, fit.values[name], fit.errors[name])


def test_numpy_interpolation_basis_is_the_nll_one():
    import jax.numpy as jnp

    from sbi_core.inference import nll  # noqa: F401 - switches JAX to float64
    from sbi_core.inference.interpolation import basis_functions, basis_numpy

    nu = np.linspace(-2.5, 2.5, 101)
    for kind in ("exponential", "polyexp", "linear"):
        up, down = basis_functions(kind)(jnp.asarray(nu))
        assert np.allclose(basis_numpy(kind, nu), np.stack([np.asarray(up), np.asarray(down)], 1), rtol=0, atol=1e-15)


def test_fit_toy_statistic(gen, small_run):
    p = gen.vector(TRUTH)
    toy = gen.toy(p, seed=1, index=0)
    obj = model(toy, small_run)
    fit = fit_toy(obj, 0, int(toy.weight.sum()), TRUTH, [["cW"], ["cW", "cHW"]])
    assert fit.valid and fit.n_events == int(toy.weight.sum())
    direct = minimize(obj, start=TRUTH, fixed={"cW": 0.3}, errors=False)
    assert fit.dnll["cW"] == pytest.approx(direct.nll - fit.nll, abs=1e-4)
    assert 0 <= fit.dnll["cW"] <= fit.dnll["cW,cHW"] + 1e-6  # holding more parameters can only raise the NLL
    assert ToyFit.from_json(fit.to_json()) == fit


def _fits(values, key="a"):
    return [ToyFit(i, 10, True, 0.0, {}, {key: float(v)}) for i, v in enumerate(values)]


def test_coverage_critical_value_and_neyman_set():
    rng = np.random.default_rng(0)
    dnll = rng.chisquare(1, 4000) / 2  # the Wilks distribution of Delta NLL for one parameter
    cov = coverage(_fits(dnll), "a", 0.68)
    assert cov["n"] == 4000 and abs(cov["coverage"] - 0.68) < 2 * cov["error"]
    crit = critical_value(_fits(dnll), "a", 0.68)
    assert crit["lo"] <= wilks_threshold(0.68) <= crit["hi"]
    # invalid toys are left out
    assert coverage([*_fits([0.1]), ToyFit(9, 10, False, 0.0, {}, {"a": 9.0})], "a", 0.68)["n"] == 1
    # with the Wilks critical value everywhere, the Neyman set of a parabola is the Wilks interval
    x = np.linspace(-1, 1, 201)
    lo, hi = neyman_interval(x, (x - 0.1) ** 2 / (2 * 0.2**2), np.full(x.size, wilks_threshold(0.68)))
    half = 0.2 * math.sqrt(2 * wilks_threshold(0.68))
    assert lo == pytest.approx(0.1 - half, abs=1e-4) and hi == pytest.approx(0.1 + half, abs=1e-4)
    assert math.isnan(neyman_interval(x, np.full(x.size, 5.0), np.full(x.size, 1.0))[0])


N_NEYMAN = 150


@pytest.mark.slow
def test_wilks_interval_agrees_with_the_neyman_interval(gen, small_run):
    """Pseudo-data at the truth (toy 0 of seed 11). Its Wilks 68% interval [lo, hi] of cW is where the profile
    Delta NLL crosses w = 0.4945. A Neyman construction (toys at each tested cW, the other parameters at their
    conditional best values for the data: the profile construction) puts the end of the interval where the
    observed Delta NLL equals the toys' 68% quantile c. The two ends agree iff c(lo) = c(hi) = w, i.e. iff a
    fraction 0.68 of the toys generated at each end has Delta NLL <= w: checked within two binomial standard
    errors (150 toys per end: 2 x 0.038 = 0.076). Seen: the data's interval is [0.028, 0.250] (the truth 0.3
    is outside, as for 32% of datasets); 0.633 of the toys at lo and 0.747 at hi fall below w, Neyman critical
    values 0.60 and 0.35: the Neyman interval sits a little lower than Wilks', within the toys' precision."""
    observed = gen.toy(gen.vector(TRUTH), seed=11, index=0)
    prof = Profiler(model(observed, small_run), start=TRUTH)
    wilks = prof.interval("cW", 0.68)
    w = wilks_threshold(0.68)
    assert not wilks.lo_open and not wilks.hi_open and wilks.lo < prof.best.values["cW"] < wilks.hi
    se = math.sqrt(0.68 * 0.32 / N_NEYMAN)
    for end in (wilks.lo, wilks.hi):
        assert prof.dnll({"cW": end}) == pytest.approx(w, abs=1e-3)
        at = prof.point({"cW": end}).values  # the profile construction's nuisance values at this cW
        fits = []
        for i in range(N_NEYMAN):
            toy = gen.toy(gen.vector(at), seed=12, index=i)
            fits.append(fit_toy(model(toy, small_run), i, int(toy.weight.sum()), at, [["cW"]]))
        frac = float(np.mean([f.dnll["cW"] <= w for f in fits if f.valid]))
        crit = critical_value(fits, "cW", 0.68)
        print(f"cW = {end:.4f}: P(toy Delta NLL <= {w:.4f}) = {frac:.3f} (+- {se:.3f}); "
              f"Neyman critical value {crit['value']:.3f} [{crit['lo']:.3f}, {crit['hi']:.3f}]")
        assert sum(not f.valid for f in fits) <= 2
        assert abs(frac - 0.68) <= 2 * se, (end, frac)


def test_toys_and_asimov_of_a_two_sample_model_carry_auxiliary_data():
    """Version 2: the generator's per-event rates are the NLL's (per-sample and additive modifiers, both
    normalisations); a toy draws its aux from N(nu, 1) after its events; the Asimov aux are the nuisance values."""
    from dataclasses import replace

    from sbi_core.inference.nll import NLLModel
    from sbi_core.inference.synthetic import two_sample_arrays
    from sbi_core.inference.toys import ToyGenerator

    pool = two_sample_arrays(1500, seed=8)
    pool = replace(pool, weight=np.full(pool.n_events, 5.0 / pool.n_events))
    schemes = {"sig_shape": "linear"}
    p = np.array([0.2, -0.3, 0.4, -1.1, 0.6])
    for norm in ("mc", "xsec"):
        gen = ToyGenerator(pool, luminosity=40.0, normalization=norm, schemes=schemes)
        asimov = gen.asimov(p)
        np.testing.assert_array_equal(asimov.aux, p[2:])
        nll = NLLModel.from_arrays(asimov, luminosity=40.0, normalization=pool if norm == "mc" else None,
                                   schemes=schemes)
        assert gen.expected_events(p) == pytest.approx(nll.expected_events(p), rel=1e-12)
        if norm == "mc":  # the Asimov data of the model itself: the NLL is stationary at its generating point
            assert np.max(np.abs(nll.grad(p))) < 1e-8 * gen.expected_events(p)
    aux = np.array([gen.toy(p, seed=4, index=i).aux for i in range(300)])
    np.testing.assert_array_equal(aux[7], gen.toy(p, seed=4, index=7).aux)
    assert np.all(np.abs(aux.mean(axis=0) - p[2:]) < 3 / np.sqrt(300))  # centred on nu (3 standard errors)
    assert np.all(np.abs(aux.std(axis=0) - 1.0) < 0.15)  # unit width (300 draws: ~4% spread)
