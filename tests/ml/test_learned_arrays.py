"""The learned path of the likelihood contract: with ensembles that output the exact after-cut ratios, the
learned arrays equal the exact arrays (log dsigma_b(x)/dsigma_ref(x) from the simulator's closed forms)."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_core.config import load_config
from sbi_core.data.format import read_samples
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout
from sbi_core.ml import evaluate
from sbi_core.ml.closure import ExactTargets, FiducialSums
from sbi_core.physics.registry import make_simulator

from .fake_ensembles import fake_api


@pytest.fixture
def model(small_run):
    cfg = load_config(str(small_run / "config.yaml"))
    sim = make_simulator(cfg)
    sums = FiducialSums.from_events(cfg, sim, str(small_run / "events.h5"))
    events = read_samples(small_run / "events.h5", 0, 1500)
    return cfg, sim, ExactTargets(cfg, sim, sums), events


@pytest.fixture
def use_api(monkeypatch):
    def install(api):
        monkeypatch.setattr(evaluate, "_ensemble_api", lambda: api)
        evaluate._load_cached.cache_clear()
        evaluate._training_normalisation_cached.cache_clear()

    yield install
    evaluate._load_cached.cache_clear()
    evaluate._training_normalisation_cached.cache_clear()


def _xsec(cfg, exact, events=None):
    """sigma_b from the events' weight sums. Variations: by default (1 + size)^(+-1) for lumi and the kept
    fraction of moved events for the scale (what its training sets are normalised to); with `events`, as the
    inference stage sums them: reweighting every event by its nuisance weight column (no migration effect)."""
    basis = exact.sums.basis
    var = np.empty((len(cfg.nuisance), 2, basis.size))
    if events is not None:
        w = events["samples/weights"]
        n_b = basis.size
        ratio = (w[:, n_b:] / w[:, [0]]).reshape(len(w), len(cfg.nuisance), 2)
        return basis, np.einsum("ib,ikj->kjb", w[:, :n_b], ratio)
    for k, n in enumerate(cfg.nuisance):
        for j, d in enumerate(("up", "down")):
            factor = (1 + n.size) ** (1 if d == "up" else -1) if str(n.kind) == "normalization" \
                else exact.sums.variation_fraction[f"{n.name}_{d}"]
            var[k, j] = basis * factor
    return basis, var


def _variation_sets(layout, cfg, exact):
    """Minimal train splits of the scale's variation sets, carrying the normalisations the sampler records."""
    from sbi_core import storage
    from sbi_core.data.training_sets import TrainingSet, write_training_set

    s_ref = float(exact.sums.basis[0])
    for _, head, variation in VAR_KEYS:
        f4 = np.float32
        ts = TrainingSet(x=np.zeros((2, 5), f4), theta0=np.zeros((2, 2), f4), theta1=np.zeros((2, 2), f4),
                         y=np.array([0, 1], f4), log_r_xz=np.full(2, np.nan, f4), t_xz=np.zeros((2, 2), f4),
                         event=np.zeros(2, np.int64), method="benchmark_ratio", head=head, variation=variation,
                         split="train", seed=0, config_hash="x", observables=tuple(cfg.observable_names),
                         parameters=tuple(cfg.parameter_names), has_joint_ratio=False,
                         attrs={"xsec_theta0": s_ref * exact.sums.variation_fraction[variation], "xsec_theta1": s_ref})
        with storage.atomic_write(layout.training_set("benchmark_ratio", head, variation, "train")) as tmp:
            write_training_set(tmp, ts)


def _exact_arrays(cfg, sim, x):
    """The contract's arrays straight from the closed forms: log sigma(theta_b) p(x|theta_b) - (same at ref)."""
    thetas = np.asarray(cfg.benchmark_matrix())
    ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
    logd = np.stack([np.log(sim.cross_section(t)) + sim.log_likelihood(x, t) for t in thetas], 1)
    log_ratio = logd - logd[:, [ref]]
    var = np.zeros((x.shape[0], len(cfg.nuisance), 2))
    for k, n in enumerate(cfg.nuisance):
        for j, sign in enumerate((1.0, -1.0)):
            if str(n.kind) == "normalization":
                var[:, k, j] = sign * np.log1p(n.size)
            else:
                nu = np.zeros(len(cfg.nuisance))
                nu[k] = sign
                var[:, k, j] = sim.log_likelihood(x, thetas[ref], nu) - sim.log_likelihood(x, thetas[ref])
    return log_ratio, var


BR_KEYS = [("benchmark_ratio", b, "nominal") for b in ("p1", "p2", "p3", "p4", "p5")]
VAR_KEYS = [("benchmark_ratio", "sm", "energy_scale_up"), ("benchmark_ratio", "sm", "energy_scale_down")]


def test_perfect_ensembles_give_the_exact_arrays(model, use_api, small_run, tmp_path):
    """xsec_var as the inference stage computes it (reweighting); the variation networks' own normalisation (moved
    events that still pass the cuts) comes from their training sets, so the arrays are exact all the same."""
    from sbi_core import steps

    cfg, sim, exact, events = model
    steps.derive(str(small_run), str(tmp_path / "run"), [])
    layout = RunLayout(str(tmp_path / "run"))
    _variation_sets(layout, cfg, exact)
    use_api(fake_api(exact, BR_KEYS + VAR_KEYS))
    x = events["samples/observations"]
    xsec, xsec_var = _xsec(cfg, exact, read_samples(small_run / "events.h5"))
    moved = _xsec(cfg, exact)[1]
    # The two estimates differ by the events migrating into the cuts (here 4e-4 relative for the down shift):
    # far above the 1e-9 the arrays are compared to below.
    assert abs(np.log(xsec_var[1, :, 0] / moved[1, :, 0])).max() > 1e-4
    arrays = evaluate.learned_arrays(layout, cfg, {"observations": x, "weight": np.ones(len(x))},
                                     xsec, xsec_var, meta={"dataset": "test"})
    log_ratio, var = _exact_arrays(cfg, sim, x)
    assert arrays.source == "learned" and arrays.reference == "sm" and arrays.meta["dataset"] == "test"
    np.testing.assert_allclose(arrays.log_ratio, log_ratio, atol=1e-9)
    np.testing.assert_allclose(arrays.log_ratio_var[..., 0], var, atol=1e-9)  # one sample
    assert np.all(arrays.log_ratio_std[:, 0] == 0) and np.all(arrays.log_ratio_std[:, 1:] == 0.01)
    assert "benchmark_ratio/energy_scale_up" in arrays.meta["networks"]


def test_missing_networks(model, use_api, small_run):
    """No variation network: the scale's log_ratio_var is the constant rate change; no head p3: named error."""
    cfg, sim, exact, events = model
    x = events["samples/observations"][:100]
    xsec, xsec_var = _xsec(cfg, exact)
    ev = {"observations": x, "weights": np.ones(100)}  # the key "weights" is accepted too
    use_api(fake_api(exact, BR_KEYS))
    arrays = evaluate.learned_arrays(RunLayout(str(small_run)), cfg, ev, xsec, xsec_var)
    np.testing.assert_allclose(arrays.log_ratio_var[:, 1, 0, 0], np.log(exact.sums.variation_fraction["energy_scale_up"]))
    np.testing.assert_allclose(arrays.log_ratio_var[:, 0, 1, 0], -np.log1p(0.05))
    use_api(fake_api(exact, [k for k in BR_KEYS if k[1] != "p3"]))
    with pytest.raises(InputError, match="benchmark_ratio ensemble of benchmark 'p3'"):
        evaluate.learned_arrays(RunLayout(str(small_run)), cfg, ev, xsec, xsec_var)
    with pytest.raises(ValueError, match="xsec_var"):
        evaluate.learned_arrays(RunLayout(str(small_run)), cfg, ev, xsec, xsec_var[:, :, :3])
    with pytest.raises(ValueError, match="'weight'"):
        evaluate.learned_arrays(RunLayout(str(small_run)), cfg, {"observations": x, "weight": np.ones(3)}, xsec,
                                xsec_var)


def test_morphing_benchmark_ratios_reproduces_the_ratio_at_any_theta(model):
    """Morphing exact per-benchmark ratios gives the exact log dsigma(x|theta)/dsigma_ref(x) at a theta off the basis."""
    cfg, sim, exact, events = model
    x = events["samples/observations"][:500]
    log_ratio, _ = _exact_arrays(cfg, sim, x)
    log_xsec = np.log([sim.cross_section(t) for t in np.asarray(cfg.benchmark_matrix())])
    theta = np.array([0.3, -0.2])
    # With total cross sections, log_ratio - log(sigma_b/sigma_ref) is the before-cut ratio of densities.
    value, spread, floored = evaluate.morph_benchmark_ratios(
        log_ratio - (log_xsec - log_xsec[0]), np.full_like(log_ratio, 0.1), log_xsec,
        exact.morphing.basis_coefficients(theta), 0)
    expected = np.log(sim.cross_section(theta)) + sim.log_likelihood(x, theta) - log_xsec[0] - \
        sim.log_likelihood(x, exact.reference)
    np.testing.assert_allclose(value, expected, atol=1e-9)
    assert floored == 0 and np.all(spread > 0)
    with pytest.raises(ValueError, match="expected"):
        evaluate.morph_benchmark_ratios(log_ratio, np.zeros(3), log_xsec, np.ones(6), 0)
