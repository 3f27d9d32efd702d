"""The parametrised learned source (`sbi_core.inference.parametrised`): its NLL, gradient, fit and bad inputs.

A trained ALICES ensemble (trained once in its test, ~9 s) is fitted on the benchmark model's Asimov dataset.
The plumbing is checked with a closed-form log r(x | theta): on the synthetic squared-amplitude model the "events"
are its per-benchmark log ratios and log r(x | theta) = log(sum_b alpha_b(theta) e^{x_b}) - log(sigma(theta) /
sigma_ref) is the exact density ratio, so the parametrised NLL must equal the exact `NLLModel` of the same arrays
(both normalisations) to rounding. Exports (the networks' path) are checked with a small random MLP: JAX gradient
against finite differences, and a wrong input size refused with exit 2.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.errors import InputError
from sbi_core.inference.fit import minimize
from sbi_core.inference.nll import NLLModel, _alpha
from sbi_core.inference.parametrised import ParametrisedNLL, exported_ensemble
from sbi_core.inference.synthetic import synthetic_arrays

TRUTH = (0.3, -0.2)


def _closed_form(arrays):
    powers = tuple(map(tuple, arrays.morphing_components.tolist()))
    ref = arrays.benchmarks.index(arrays.reference)

    def log_ratio(params, x, theta):
        alpha = _alpha(theta, params["matrix"], powers)
        return jnp.log(jnp.exp(x) @ alpha) - jnp.log(alpha @ params["xsec"] / params["xsec"][ref])

    return log_ratio, {"matrix": jnp.asarray(arrays.morphing_matrix), "xsec": jnp.asarray(arrays.xsec)}


@pytest.fixture(scope="module")
def model():
    data = synthetic_arrays(3000, 2, truth=TRUTH, seed=3)
    mc = synthetic_arrays(3000, 2, weights="unit", seed=3)
    mc = type(mc)(**{**mc.__dict__, "weight": np.full(3000, 5.0 / 3000)})  # MC weights at the reference: sigma_ref / n
    return data, mc


@pytest.mark.parametrize("norm", ["xsec", "mc"])
def test_closed_form_ratio_equals_the_exact_nll(model, norm):
    data, mc = model
    fn, params = _closed_form(data)
    kw = {"normalization": mc} if norm == "mc" else {}
    exact = NLLModel.from_arrays(data, luminosity=200.0, chunk_rows=1024, **kw)
    par = ParametrisedNLL(fn, params, data.log_ratio, data, luminosity=200.0, chunk_rows=1024,
                          normalization=(mc.log_ratio, mc) if norm == "mc" else None)
    rng = np.random.default_rng(0)
    p0 = np.array([*TRUTH, 0.0, 0.0])
    for _ in range(3):
        p = p0 + rng.normal(0, 0.3, 4)
        # the same NLL: differences agree to rounding (no constant is dropped differently)
        assert par.value(p) - par.value(p0) == pytest.approx(exact.value(p) - exact.value(p0), rel=1e-9, abs=1e-8)
        np.testing.assert_allclose(par.grad(p), exact.grad(p), rtol=1e-8, atol=1e-7)
    assert par.expected_events(p) == pytest.approx(exact.expected_events(p), rel=1e-10)
    if norm == "mc":  # the autodiff Hessian (the fit's errors) through the chunk scan
        np.testing.assert_allclose(par.hessian(p0), exact.hessian(p0), rtol=1e-7, atol=1e-6)


def test_fit_through_the_closed_form_recovers_the_truth(model):
    data, mc = model  # the Asimov dataset at TRUTH: its minimum is the truth itself
    fn, params = _closed_form(data)
    par = ParametrisedNLL(fn, params, data.log_ratio, data, luminosity=200.0, normalization=(mc.log_ratio, mc))
    res = minimize(par, start={"theta0": 0.0, "theta1": 0.0})
    assert res.valid
    np.testing.assert_allclose(res.x, [*TRUTH, 0.0, 0.0], atol=1e-5)
    assert all(0 < res.errors[n] < 1 for n in par.names)


def _random_export(n_x: int, n_theta: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sizes = [n_x + n_theta, 8, 1]
    ex = {"format": np.array("sbi-network-export"), "output": np.array("log_ratio"), "activation": np.array("tanh"),
          "n_layers": np.array(2), "x_mean": rng.normal(0, 0.1, n_x), "x_std": np.full(n_x, 1.2),
          "theta_mean": np.zeros(n_theta), "theta_std": np.ones(n_theta)}
    for i in range(2):
        ex[f"weight_{i}"] = rng.normal(0, 0.5, (sizes[i + 1], sizes[i]))
        ex[f"bias_{i}"] = rng.normal(0, 0.1, sizes[i + 1])
    return ex


def test_exported_ensemble_gradient_matches_finite_differences(model):
    data, mc = model
    n_x = data.log_ratio.shape[1]
    fn, params = exported_ensemble([_random_export(n_x, 2, s) for s in (1, 2)], n_x, 2)
    par = ParametrisedNLL(fn, params, data.log_ratio, data, luminosity=200.0, chunk_rows=512,
                          normalization=(mc.log_ratio, mc))
    p = np.array([0.2, -0.1, 0.3, -0.4])
    h = 1e-5
    numeric = np.array([(par.value(p + h * e) - par.value(p - h * e)) / (2 * h) for e in np.eye(4)])
    np.testing.assert_allclose(par.grad(p), numeric, rtol=1e-6, atol=1e-5)


def test_wrong_input_size_is_refused_naming_both(model):
    data, _ = model
    with pytest.raises(InputError, match=r"takes 5 observables, the events have 6"):
        exported_ensemble([_random_export(5, 2, 0)], 6, 2, where="ensemble alices/theta/nominal")
    with pytest.raises(InputError, match=r"takes 3 parameters, the model has 2"):
        exported_ensemble([_random_export(6, 3, 0)], 6, 2)


# ---------------------------------------------------------------------------------------------- through the steps
def storage_json(summary: dict) -> dict:
    """The block file a step's summary names."""
    from sbi_core import storage

    return storage.read_json(summary["block"])


def _install_exports(run: str, n_x: int, members: int = 2) -> None:
    """An alices/theta/nominal ensemble of random exports in the run (what `sbi-core ensemble` leaves)."""
    from sbi_core import storage
    from sbi_core.layout import RunLayout
    from sbi_core.ml.export import save_export

    layout = RunLayout(run)
    ids = [f"alices-theta-nominal-m{i}" for i in range(members)]
    for i, nid in enumerate(ids):
        save_export(layout.network_file(nid, "export.npz"), _random_export(n_x, 2, 10 + i))
    storage.write_json(layout.ensemble("alices", "theta", "nominal"), {"status": "ok", "members": ids})
    storage.write_json(layout.ensembles_index,
                       {"ensembles": [{"method": "alices", "head": "theta", "variation": "nominal"}]})


@pytest.fixture(scope="module")
def alices_run(small_run, tmp_path_factory):
    """A run derived from the session's small benchmark run (exact source), comparing a (random) alices ensemble."""
    from sbi_core import steps as data_steps
    from sbi_core.inference import steps

    run = str(tmp_path_factory.mktemp("par") / "run")
    data_steps.derive(str(small_run), run, ["training.methods=[alices]", "inference.compare=[alices]",
                                            "inference.fix={energy_scale: 0.0}"])
    _install_exports(run, 5)
    ds = steps.dataset(run)
    steps.likelihood(run, [int(b) for b in ds["likelihood_batches"]])
    steps.likelihood_join(run)
    return run, steps.fit(run)


def test_fit_step_puts_the_learned_fit_beside_the_exact_one(alices_run):
    run, summary = alices_run
    cmp = summary["learned_vs_exact"]
    assert cmp["exact"]["values"] == summary["values"]  # source exact: the global fit is the exact one
    rows = cmp["methods"]["alices"]["parameters"]
    assert set(rows) == {"cW", "cHW"}
    for row in rows.values():
        assert row["exact_width_68"] == pytest.approx(2 * summary["errors"][next(k for k in rows if rows[k] is row)])
        assert row["width_ratio"] == pytest.approx(row["learned_width_68"] / row["exact_width_68"])
        assert row["shift_in_exact_errors"] == pytest.approx((row["learned"] - row["exact"]) / (row["exact_width_68"] / 2))


def test_learned_parametrised_source_fits_scans_toys_and_refuses_a_wrong_input_size(alices_run, tmp_path, cli):
    from sbi_core import steps as data_steps
    from sbi_core.inference import steps

    run, _ = alices_run
    new = str(tmp_path / "learned")
    data_steps.derive(run, new, ["inference.source=learned", "inference.estimator=alices", "inference.compare=[]",
                                 "inference.toys.n=2", "inference.scan.points=3"])
    _install_exports(new, 5)
    ds = steps.dataset(new)
    steps.likelihood(new, [int(b) for b in ds["likelihood_batches"]])
    steps.likelihood_join(new)
    out = steps.fit(new)
    assert out["valid"] and set(out["learned_vs_exact"]["methods"]) == {"alices"}
    from sbi_core.inference.fit import minimize
    from sbi_core.inference.stats_steps import load_context, scan, toys
    from sbi_core.publish.artefact import export_likelihood

    # expected results: the Asimov dataset of the network's own rates (normalisation mc) has its minimum at its
    # point; a scan block and toys run through the same models
    ctx = load_context(new)
    pool = ctx.pool()
    gen = ctx.generator(pool)
    point = {**ctx.expected_point(), "lumi": 0.2}
    res = minimize(ctx.model(gen.asimov(gen.vector(point)), pool), start=ctx.best["values"], fixed=ctx.inf.fix)
    assert res.valid
    for name in ("cW", "cHW", "lumi"):
        assert res.values[name] == pytest.approx(point[name], abs=1e-4 * max(1.0, res.errors[name]))
    assert scan(new, "0:1")["step"] == "scan"
    assert len(storage_json(toys(new, "0:2"))["toys"]) == 2
    with pytest.raises(InputError, match="inference.estimator alices"):  # not built for it: said, exit 2
        export_likelihood(new)
    _install_exports(new, 4)  # networks of 4 observables against events of 5
    res = cli("fit", "--run", new)
    assert res.returncode == 2, res.stderr
    assert "takes 4 observables, the events have 5" in res.stderr and "alices/theta/nominal" in res.stderr


def test_a_normalisation_table_gives_the_same_fit_and_runs_toys(alices_run, tmp_path):
    """inference.normalization_table: the same learned fit as the run's events at every call (within a tiny
    fraction of its error), its degree and error in fit.json, and toys through it bounded to the ranges."""
    from sbi_core import steps as data_steps
    from sbi_core.inference import steps
    from sbi_core.inference.stats_steps import toys

    run, _ = alices_run
    fits = {}
    for degree in (0, 10):
        new = str(tmp_path / f"table{degree}")
        data_steps.derive(run, new, ["inference.source=learned", "inference.estimator=alices",
                                     "inference.compare=[]", "inference.toys.n=3",
                                     f"inference.normalization_table={degree}"])
        _install_exports(new, 5)
        ds = steps.dataset(new)
        steps.likelihood(new, [int(b) for b in ds["likelihood_batches"]])
        steps.likelihood_join(new)
        fits[degree] = steps.fit(new)
        assert fits[degree]["valid"]
    record = storage_json({"block": fits[10]["fit"]})["normalization_table"]
    assert record["degree"] == 10 and record["low"] == [-1.0, -1.0] and record["high"] == [1.0, 1.0]
    assert record["max_log_z_error"] < 1e-6 and record["evaluations"] == 11 * 11 + 32
    assert "normalization_table" not in storage_json({"block": fits[0]["fit"]})
    for poi in ("cW", "cHW"):
        assert fits[10]["values"][poi] == pytest.approx(fits[0]["values"][poi], abs=1e-3 * fits[0]["errors"][poi])
        assert fits[10]["errors"][poi] == pytest.approx(fits[0]["errors"][poi], rel=1e-3)
    done = storage_json(toys(str(tmp_path / "table10"), "0:3"))["toys"]
    assert len(done) == 3


def test_results_and_headline_carry_the_comparison(alices_run):
    from sbi_core import storage
    from sbi_core.inference.report import headline, learned_vs_exact_section
    from sbi_core.layout import RunLayout

    run, summary = alices_run
    fit = storage.read_json(RunLayout(run).fit)
    section = learned_vs_exact_section(fit)
    assert section["learned_vs_exact"] == summary["learned_vs_exact"]
    results = {"parameters_of_interest": ["cW", "cHW"], "best_fit": {"values": summary["values"],
               "errors": summary["errors"], "valid": True}, **section}
    rows = section["learned_vs_exact"]["methods"]["alices"]["parameters"]
    assert headline(results)["learned_vs_exact"] == {
        "alices": {p: [r["width_ratio"], r["shift_in_exact_errors"]] for p, r in rows.items()}}
    assert learned_vs_exact_section({"values": {}}) == {}


def test_an_untrained_estimator_is_refused_naming_the_field(tmp_path):
    from sbi_core import steps as data_steps
    from tests.conftest import BENCHMARK_CONFIG, SMALL

    with pytest.raises(InputError, match=r"inference\.estimator.*'carl' is not trained"):
        data_steps.configure(str(BENCHMARK_CONFIG), str(tmp_path / "a"),
                             [*SMALL, "inference.source=learned", "inference.estimator=carl"])
    with pytest.raises(InputError, match=r"inference\.compare\[1\].*'rolr' is not trained"):
        data_steps.configure(str(BENCHMARK_CONFIG), str(tmp_path / "b"), [*SMALL, "inference.compare=[alices, rolr]"])


# ---------------------------------------------------------------------------------------------- a trained ALICES
TRAINED = ["training.methods=[alices]", "training.members=2", "training.variations=false", "training.device=cpu",
           "training.network.hidden=[32, 32]", "training.optimizer.epochs=10", "training.optimizer.patience=0",
           "training.optimizer.learning_rate=0.01", "training.optimizer.learning_rate_final=0.001",
           "training.samples.train=6000", "training.samples.test=500",
           "inference.source=learned", "inference.estimator=alices", "inference.dataset.kind=asimov"]


def test_fit_through_a_trained_alices_ensemble_recovers_the_truth(small_run, tmp_path):
    """ALICES trained once here (2 members, seeds fixed by the config) on the session's 6000 benchmark events; the
    Asimov dataset at the truth (cW 0.3, cHW -0.2) fitted through its exported ensemble: within 1.5 of the
    learned errors of the truth, and beside the exact fit (whose best fit is the truth itself)."""
    from sbi_core import steps as data_steps
    from sbi_core.inference import steps
    from sbi_core.ml.ensemble import build_ensembles
    from sbi_core.ml.plan import training_plan
    from sbi_core.ml.samples import sample
    from sbi_core.ml.train_step import train
    from sbi_core.runs import load_run

    run = str(tmp_path / "alices")
    data_steps.derive(str(small_run), run, TRAINED)
    sample(run, "alices")
    _, cfg, _ = load_run(run)
    train(run, training_plan(cfg)["networks"]["alices"])
    build_ensembles(run)
    ds = steps.dataset(run)
    steps.likelihood(run, [int(b) for b in ds["likelihood_batches"]])
    steps.likelihood_join(run)
    out = steps.fit(run)
    assert out["valid"]
    for poi, truth in (("cW", 0.3), ("cHW", -0.2)):
        assert abs(out["values"][poi] - truth) < 1.5 * out["errors"][poi], (poi, out["values"], out["errors"])
    exact = out["learned_vs_exact"]["exact"]["values"]
    assert exact["cW"] == pytest.approx(0.3, abs=1e-3) and exact["cHW"] == pytest.approx(-0.2, abs=1e-3)
