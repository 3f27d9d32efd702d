"""Bootstrap ensembles as the method uncertainty (sbi_core/inference/bootstrap.py).

A member whose arrays are the model shifted in theta, rate'(theta) = rate(theta - delta) (exact for a quadratic
morphing: log_ratio'[i, b] = log sum_c w_c(theta_b - delta) exp(log_ratio[i, c]), in data and normalisation
alike), has NLL'(theta, nu) = NLL(theta - delta, nu): its best fit and interval ends move by delta exactly, so the
members' spread is the standard deviation of the deltas. Identical members spread by 0. The pipeline's learned
path (fit with `inference.bootstrap: true`, then report) runs on stand-in ensembles (tests/ml/fake_ensembles.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sbi_core import storage
from sbi_core.inference import bootstrap
from sbi_core.physics.morphing import monomials
from tests.inference.benchmark_pool import TOY_LUMINOSITY, TRUTH, exact_pool, generator

DELTAS = np.array([[0.0, 0.0], [0.06, -0.02], [-0.04, 0.05]])  # (member, (cW, cHW))


def _shifted(arrays, delta):
    """The arrays of rate(theta - delta) (see the module doc)."""
    basis = np.asarray(arrays.benchmark_values)
    w = np.stack([monomials(t - delta, arrays.morphing_components) @ arrays.morphing_matrix for t in basis])  # (B, C)
    return replace(arrays, log_ratio=np.log(np.exp(arrays.log_ratio) @ w.T))


@pytest.fixture(scope="module")
def setup(small_run):
    from sbi_core.runs import load_run

    _, cfg, _ = load_run(str(small_run))
    cfg = cfg.model_copy(update={"inference": cfg.inference.model_copy(update={"confidence_levels": [0.68]})})
    pool = exact_pool(small_run)
    n_k = len(pool.nuisance)
    data = generator(small_run).toy(np.array([TRUTH["cW"], TRUTH["cHW"], *([0.0] * n_k)]), seed=3, index=0)
    return cfg, data, pool


def test_shifted_members_spread_by_the_shift(setup):
    cfg, data, pool = setup
    fits = [bootstrap.member_fit(cfg, _shifted(data, d), _shifted(pool, d), TOY_LUMINOSITY) for d in DELTAS]
    assert all(f["valid"] for f in fits)
    for i, name in enumerate(("cW", "cHW")):
        moved = np.array([f["values"][name] for f in fits]) - fits[0]["values"][name]
        np.testing.assert_allclose(moved, DELTAS[:, i], atol=2e-5)  # fit precision (1e-5 relative tested elsewhere)
        lo = np.array([f["intervals"][name][0]["lo"] for f in fits])
        np.testing.assert_allclose(lo - lo[0], DELTAS[:, i], atol=1e-4)  # Brent's xtol 1e-5 on a shifted curve
    out = bootstrap.spread(fits, ["cW", "cHW"], [0.68])
    for i, name in enumerate(("cW", "cHW")):
        expected = float(np.std(DELTAS[:, i], ddof=1))
        assert out[name]["best_fit"]["std"] == pytest.approx(expected, abs=2e-5)
        assert out[name]["interval_0.68"]["hi"]["std"] == pytest.approx(expected, abs=1e-4)


def test_identical_members_spread_by_zero(setup):
    cfg, data, pool = setup
    fits = [bootstrap.member_fit(cfg, data, pool, TOY_LUMINOSITY) for _ in range(2)]
    out = bootstrap.spread(fits, ["cW", "cHW"], [0.68])
    assert out["cW"]["best_fit"]["std"] == 0.0 and out["cHW"]["interval_0.68"]["lo"]["std"] == 0.0


BR_KEYS = [("benchmark_ratio", b, "nominal") for b in ("p1", "p2", "p3", "p4", "p5")]


@pytest.mark.parametrize("shift", [0.0, 0.05])
def test_learned_fit_with_bootstrap_reports_the_method_uncertainty(small_run, tmp_path, monkeypatch, shift):
    """Stand-in benchmark_ratio ensembles of 2 members: identical (spread 0) or member 1's log r_p1 shifted."""
    from sbi_core import steps as data_steps
    from sbi_core.config import load_config
    from sbi_core.inference import stats_steps, steps
    from sbi_core.layout import RunLayout
    from sbi_core.ml import evaluate
    from sbi_core.ml.closure import ExactTargets, FiducialSums
    from sbi_core.physics.registry import make_simulator
    from tests.ml.fake_ensembles import fake_api

    cfg = load_config(str(small_run / "config.yaml"))
    sim = make_simulator(cfg)
    api = fake_api(ExactTargets(cfg, sim, FiducialSums.from_events(cfg, sim, str(small_run / "events.h5"))), BR_KEYS)
    api.ensembles[BR_KEYS[0]].member_shifts = (0.0, shift)
    monkeypatch.setattr(evaluate, "_ensemble_api", lambda: api)
    evaluate._load_cached.cache_clear()
    run = str(tmp_path / "run")
    data_steps.derive(str(small_run), run, ["inference.source=learned", "inference.bootstrap=true",
                                            "inference.confidence_levels=[0.68]"])
    ds = steps.dataset(run)
    steps.likelihood(run, [int(b) for b in ds["likelihood_batches"]])
    steps.likelihood_join(run)
    fit = steps.fit(run)
    evaluate._load_cached.cache_clear()
    assert fit["bootstrap_members"] == 2
    report = stats_steps.report(run)
    results = storage.read_json(RunLayout(run).results)
    mu = results["method_uncertainty"]
    assert mu["n_members"] == 2 and mu["valid"] == 2 and mu["source"] == "learned"
    members = [storage.read_json(RunLayout(run).bootstrap_member(m)) for m in range(2)]
    # member 0 is the unshifted networks (the stand-in's mean): its fit is the ensemble's when the members agree;
    # the spread of two members is |difference| / sqrt(2)
    for name in ("cW", "cHW"):
        a, b = (m["values"][name] for m in members)
        assert mu["parameters"][name]["best_fit"]["std"] == pytest.approx(abs(a - b) / np.sqrt(2), abs=1e-12)
        assert a == pytest.approx(fit["values"][name], abs=2e-5)
        assert (a == b) == (shift == 0.0)
    assert (mu["parameters"]["cW"]["best_fit"]["std"] > 1e-3) == (shift > 0)
    assert set(report["method_uncertainty"]) == {"cW", "cHW"} and "bootstrap_cW" in report["plots"]


def test_bootstrap_is_refused_on_the_exact_source(small_run, tmp_path):
    from sbi_core import steps as data_steps
    from sbi_core.errors import InputError

    with pytest.raises(InputError, match="inference.bootstrap"):
        data_steps.derive(str(small_run), str(tmp_path / "run"), ["inference.bootstrap=true"])
