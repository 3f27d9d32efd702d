"""A systematic on one sample only (likelihood contract version 2): the benchmark model with a background
(configs/benchmark_background.yaml: signal + a theta-independent background with its own 20% normalisation
uncertainty `bkg_norm`), closure of the exact arrays against the simulator's densities, and fits.

The run is small (6000 events, 2 shards) and built once for this module."""

from __future__ import annotations

from dataclasses import replace

import h5py
import numpy as np
import pytest

from sbi_core import steps as data_steps
from sbi_core.inference import steps
from sbi_core.inference.fit import minimize
from sbi_core.inference.nll import NLLModel
from sbi_core.inference.pool import pool_arrays
from sbi_core.inference.toys import ToyGenerator
from sbi_core.physics.registry import make_simulator
from tests.conftest import REPO

CONFIG = REPO / "configs" / "benchmark_background.yaml"
RUN = ["generation.events=6000", "generation.shards=2", "generation.shards_per_group=2", "generation.seed=21"]
TRUTH = {"cW": 0.3, "cHW": -0.2}


@pytest.fixture(scope="module")
def bkg_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("bkg") / "run")
    summary = data_steps.configure(str(CONFIG), run, RUN)
    data_steps.generate(run, summary["shards"])
    data_steps.combine(run, 0)
    data_steps.combine(run, None)
    layout, cfg, plan = data_steps.load_run(run)
    return run, cfg, pool_arrays(layout, cfg, plan)


def test_exact_arrays_have_a_background_column_and_per_sample_modifiers(bkg_run):
    _, cfg, pool = bkg_run
    assert pool.samples == ["signal", "background"] and pool.benchmarks == [*cfg.benchmark_names, "background"]
    np.testing.assert_array_equal(pool.benchmark_sample, [0] * 6 + [1])
    np.testing.assert_array_equal(pool.modifier_mask, [[True, True], [True, True], [False, True]])
    assert np.all(pool.log_ratio_var[:, 2, :, 0] == 0)  # bkg_norm leaves the signal alone
    np.testing.assert_allclose(pool.log_ratio_var[:, 2, 0, 1], np.log(1.2), rtol=1e-14)
    # two estimates of each column's fiducial cross section: the weights split by the latent sample shares
    # (`xsec`), and the exact per-event ratios times the MC weights (x-level densities): within MC precision
    est = (np.exp(pool.log_ratio) * pool.weight[:, None]).sum(axis=0)
    se = np.sqrt(((np.exp(pool.log_ratio) * pool.weight[:, None]) ** 2).sum(axis=0))
    assert np.all(np.abs(est - pool.xsec) < 4 * se), (est, pool.xsec, se)
    assert 0.2 < pool.xsec[-1] / pool.xsec[0] < 0.5  # the background: about 30% of the SM rate


def test_arrays_reproduce_the_simulators_densities(bkg_run):
    """The contract's per-event rate (per-sample modifiers, exponential interpolation) against the simulator's
    own total density dsigma(x | theta, nu) / dsigma(x | ref): to rounding for any theta with any normalisation
    values (the background's alone moves the mixture), and for the energy scale at +-1 at the reference (the
    variation ratios are taken there: elsewhere that is the contract's stated approximation)."""
    _, cfg, pool = bkg_run
    sim = make_simulator(cfg)
    gen = ToyGenerator(pool, luminosity=1.0, interpolation="exponential")
    x = pool_observations(bkg_run)
    ref = np.zeros(2)
    base = sim.log_dsigma(x, ref)
    rng = np.random.default_rng(3)
    points = [(rng.uniform(-1, 1, 2), np.array([rng.normal(), 0.0, 2 * rng.normal()])) for _ in range(4)]
    points += [(ref, np.array([0.5, 1.0, -1.3])), (ref, np.array([0.0, -1.0, 0.8]))]
    for theta, nu in points:
        model = gen.rates(np.concatenate([theta, nu])) / pool.weight
        direct = np.exp(sim.log_dsigma(x, theta, nu) - base)
        np.testing.assert_allclose(model, direct, rtol=1e-9)


def pool_observations(bkg_run):
    import h5py

    from sbi_core.layout import RunLayout

    with h5py.File(RunLayout(bkg_run[0]).events) as f:
        return f["samples/observations"][()]


def _on_the_total(a, r_up: float, r_down: float):
    """The same columns as one sample with bkg_norm a constant factor on the whole rate (the most a version-1 file
    could say: the total rate's change at the reference), lumi as before, the energy scale left out."""
    lrv = np.zeros((a.n_events, 3, 2, 1))
    lrv[:, 0, :, 0] = np.log1p(0.05), -np.log1p(0.05)
    lrv[:, 2, :, 0] = np.log(r_up), np.log(r_down)
    xsec_var = a.xsec[None, None, :] * np.exp(lrv[0, :, :, 0])[:, :, None]
    return replace(a, samples=["total"], benchmark_sample=np.zeros(len(a.benchmarks), dtype=np.int64),
                   modifier_mask=np.ones((3, 1), dtype=bool), log_ratio_var=lrv, xsec_var=xsec_var)


def test_background_normalisation_is_measured_on_the_background(bkg_run):
    """Asimov data at (truth, bkg_norm = +1, aux = nu): the per-sample model fits them back at their generating
    point; fitted with the systematic on the whole rate instead (what a version-1 file could express), the
    POIs move. Energy scale held at 0 in both."""
    _, _, pool = bkg_run
    lumi, fixed = 100.0, {"energy_scale": 0.0}
    gen = ToyGenerator(pool, luminosity=lumi)
    p = gen.vector({**TRUTH, "bkg_norm": 1.0})
    asimov = gen.asimov(p)
    fit = minimize(NLLModel.from_arrays(asimov, luminosity=lumi, normalization=pool), start=TRUTH, fixed=fixed)
    assert fit.valid
    for name, value in {**TRUTH, "bkg_norm": 1.0, "lumi": 0.0}.items():
        assert abs(fit.values[name] - value) < 1e-3 * fit.errors[name], (name, fit.values[name])
    s_ref, b = pool.xsec[0], pool.xsec[-1]
    r_up, r_down = (s_ref + 1.2 * b) / (s_ref + b), (s_ref + b / 1.2) / (s_ref + b)
    on_total = _on_the_total(pool, r_up, r_down)
    data = _on_the_total(asimov, r_up, r_down)
    wrong = minimize(NLLModel.from_arrays(data, luminosity=lumi, normalization=on_total), start=TRUTH, fixed=fixed)
    shift = max(abs(wrong.values[n] - TRUTH[n]) / fit.errors[n] for n in ("cW", "cHW"))
    print(f"per-sample fit {fit.values}; on the total {wrong.values}; largest POI shift {shift:.2f} sigma")
    assert wrong.valid and shift > 0.2


def test_pipeline_fit_of_pseudo_data_recovers_the_truth(bkg_run, tmp_path, cli):
    """dataset -> likelihood -> join -> fit on pseudo-data at the truth (nu = 0): the POIs within 3 errors. Then
    the joined file loses its per-sample modifier mask: `sbi-core fit` exits 2 naming the file and the array."""
    run, _, _ = bkg_run
    derived = str(tmp_path / "fit")
    data_steps.derive(run, derived, ["inference.luminosity=150"])
    ds = steps.dataset(derived)
    steps.likelihood(derived, [int(b) for b in ds["likelihood_batches"]])
    steps.likelihood_join(derived)
    out = steps.fit(derived)
    assert out["valid"], out["message"]
    for name, value in TRUTH.items():
        assert abs(out["values"][name] - value) < 3 * out["errors"][name], (name, out["values"], out["errors"])
    assert abs(out["values"]["bkg_norm"]) < 3
    layout, cfg, _ = data_steps.load_run(derived)
    uri = layout.likelihood("pseudo", "exact")
    with h5py.File(uri, "a") as f:
        assert f["events/log_ratio_var"].shape[1:] == (3, 2, 2)
        del f["nuisance/samples"]
    res = cli("fit", "--run", derived)
    assert res.returncode == 2 and res.stdout == "", res.stderr
    assert f"{uri}: format_version 2 file lacks nuisance/samples" in res.stderr
