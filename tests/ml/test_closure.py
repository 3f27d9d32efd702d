"""Closure on the benchmark model at small scale: on small_run (6000 events), `sample` -> `train` ->
`ensemble`, then the learned log r(x|theta, ref) of an ALICES ensemble and of the benchmark_ratio ensembles
(morphed) against the exact one after cuts (sbi_core.ml.closure), next to untrained networks', at several theta.

Measured (this configuration: 2 members, 4800 training samples, 8 epochs of batch 64; training.seed 0):
RMS(learned - exact) ALICES 0.09-0.14 (untrained 0.19-0.33), benchmark_ratio morphed 0.027-0.068 (untrained
0.15-0.31) at the thetas below; members of one ensemble differ by ~0.06 (ALICES), so the limit is the small
training set, not a bias. Asserted: ALICES < 0.2 and < 0.6 x untrained; benchmark_ratio < 0.1 and < 0.4 x
untrained, at every theta.

The exact targets themselves (ExactTargets, used by the evaluate step) are checked against an independent
simulation (cut efficiencies) and against E_{x ~ p(x|theta1, cuts)}[r(x|theta0, theta1)] = 1."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sbi_core import steps
from sbi_core.config import load_config
from sbi_core.data.format import WEIGHTS, read_samples
from sbi_core.data.training_sets import read_training_set
from sbi_core.layout import RunLayout
from sbi_core.ml import samples
from sbi_core.ml.closure import ExactRatio, ExactTargets, FiducialSums, morphed_log_ratio, rms, untrained_like
from sbi_core.ml.ensemble import Ensemble, build_ensembles, load_ensemble
from sbi_core.ml.plan import training_plan
from sbi_core.ml.train_step import train
from sbi_core.physics.cuts import cut_mask
from sbi_core.physics.registry import make_simulator

SETTINGS = ["training.methods=[alices,benchmark_ratio]", "training.members=2", "training.variations=false",
            "training.samples.train=6000", "training.samples.test=1000", "training.network.hidden=[32,32]",
            "training.optimizer.epochs=8", "training.optimizer.learning_rate=0.005", "training.optimizer.batch_size=64",
            "training.optimizer.learning_rate_final=0.0003", "training.optimizer.patience=0", "training.device=cpu"]
THETAS = [(0.5, 0.0), (0.0, 0.5), (-0.5, -0.5), (0.3, -0.2)]


@pytest.mark.slow
def test_learned_log_ratio_closes_on_the_benchmark(small_run, tmp_path):
    run = str(tmp_path / "closure")
    steps.derive(str(small_run), run, SETTINGS)
    for method in ("alices", "benchmark_ratio"):
        samples.sample(run, method)
    layout, cfg, plan = steps.load_run(run)
    train(run, [nid for ids in training_plan(cfg)["networks"].values() for nid in ids])
    build_ensembles(run)

    with h5py.File(steps.run_events(layout, plan), "r") as f:
        exact = ExactRatio.from_events(cfg, f[WEIGHTS][:, : len(cfg.benchmarks)])
    x = read_training_set(RunLayout(run).training_set("alices", "theta", "nominal", "test")).x.astype(np.float64)
    alices = load_ensemble(layout, "alices", "theta")
    names, ref = cfg.benchmark_names, cfg.benchmark_names.index(cfg.sampling_benchmark)
    heads = {b: load_ensemble(layout, "benchmark_ratio", name) for b, name in enumerate(names) if b != ref}
    untrained = {b: untrained_like(e, x) for b, e in heads.items()}
    alices0 = untrained_like(alices, x, np.array([p.range for p in cfg.parameters]))

    def morphed(ensembles: dict[int, Ensemble], theta: np.ndarray) -> np.ndarray:
        lr = np.zeros((x.shape[0], len(names)))
        for b, e in ensembles.items():
            lr[:, b] = e.log_ratio(x)[0]
        return morphed_log_ratio(lr, exact.morphing.basis_coefficients(theta), exact.basis_totals)

    report = []
    for t in THETAS:
        theta = np.array(t)
        truth = exact.log_ratio(x, theta)
        row = {"theta": t,
               "alices": rms(alices.log_ratio(x, theta)[0], truth),
               "alices_untrained": rms(alices0.log_ratio(x, theta)[0], truth),
               "benchmark_ratio": rms(morphed(heads, theta), truth),
               "benchmark_ratio_untrained": rms(morphed(untrained, theta), truth)}
        report.append(row)
    print(report)
    for row in report:
        for method, tolerance, fraction in (("alices", 0.2, 0.6), ("benchmark_ratio", 0.1, 0.4)):
            assert row[method] < tolerance, (method, row)
            assert row[method] < fraction * row[f"{method}_untrained"], (method, row)


def _setup(small_run):
    cfg = load_config(str(small_run / "config.yaml"))
    sim = make_simulator(cfg)
    sums = FiducialSums.from_events(cfg, sim, str(small_run / "events.h5"), chunk_rows=1000)  # 6 chunks
    return cfg, sim, sums, read_samples(small_run / "events.h5")


def test_cut_fractions_agree_with_an_independent_simulation(small_run):
    cfg, sim, sums, ev = _setup(small_run)
    assert sums.n_events == 6000 and sums.basis.shape == (6,)
    one_chunk = FiducialSums.from_events(cfg, sim, str(small_run / "events.h5"), chunk_rows=10**6)
    np.testing.assert_allclose(sums.basis, one_chunk.basis, rtol=1e-12)
    assert sums.variation_fraction.keys() == {"energy_scale_up", "energy_scale_down"}
    exact = ExactTargets(cfg, sim, sums)
    assert exact.available
    # Fresh events before cuts: the weighted fraction passing the cuts at each benchmark.
    batch = sim.simulate(100_000, np.random.default_rng(99))
    keep = cut_mask(cfg, batch.observations)
    for b, theta in enumerate(np.asarray(cfg.benchmark_matrix())):
        w = batch.weights[:, b]
        fresh = w[keep].sum() / w.sum()
        # The run's 6000 events estimate sigma_fid(theta_b) to ~1% (measured: within 0.8%); allow 2%.
        assert abs(np.exp(exact.log_pass(theta)) / fresh - 1) < 0.02, (cfg.benchmark_names[b], fresh)
    # The variation keeps ~all events for a 2% scale with loose cuts; up and down move opposite ways.
    up, down = sums.variation_fraction["energy_scale_up"], sums.variation_fraction["energy_scale_down"]
    assert 0.98 < up <= 1 + 1e-9 and 0.98 < down <= 1 + 1e-9 and up != down


def test_exact_ratios_integrate_to_one_over_the_reference_sample(small_run):
    """Events are drawn at the reference with equal weights: mean_i r(x_i|theta0, ref) = 1 within its error."""
    cfg, sim, sums, ev = _setup(small_run)
    exact = ExactTargets(cfg, sim, sums)
    x = ev["samples/observations"]
    ref = exact.reference
    thetas = [np.asarray(b) for b in cfg.benchmark_matrix()[1:]] + [np.array([0.3, -0.2])]
    for theta in thetas:
        r = np.exp(exact.log_ratio(x, theta, ref))
        se = r.std() / np.sqrt(r.size)
        assert abs(r.mean() - 1) < 4 * se + 0.01, (theta, r.mean(), se)  # 0.01: sigma_fid's own MC error
    # Per-event theta0 gives the same numbers as one theta at a time.
    t0 = np.repeat(np.asarray(thetas[:2]), [10, 10], axis=0)
    per_event = exact.log_ratio(x[:20], t0, ref)
    np.testing.assert_allclose(per_event[:10], exact.log_ratio(x[:10], thetas[0], ref), rtol=1e-12)
    np.testing.assert_allclose(per_event[10:], exact.log_ratio(x[10:20], thetas[1], ref), rtol=1e-12)
    for variation in ("energy_scale_up", "energy_scale_down"):
        # Not exactly 1: events that migrate INTO the cuts at nu are missing from the moved sample (measured
        # bias 0.0036 +- 0.001 for the down variation on this run); 0.005 allows it.
        r = np.exp(exact.log_ratio_variation(x, variation))
        assert abs(r.mean() - 1) < 4 * r.std() / np.sqrt(r.size) + 0.005, (variation, r.mean())
    # The score has mean zero under the reference sample.
    score = exact.score(x, ref)
    assert score.shape == (6000, 2)
    assert np.all(np.abs(score.mean(axis=0)) < 4 * score.std(axis=0) / np.sqrt(6000) + 0.005), score.mean(axis=0)


def test_the_two_exact_helpers_agree(small_run):
    """ExactRatio (weights in memory) and ExactTargets (streamed sums) give the same after-cut log r."""
    cfg, sim, sums, ev = _setup(small_run)
    targets = ExactTargets(cfg, sim, sums)
    ratio = ExactRatio.from_events(cfg, ev["samples/weights"][:, : len(cfg.benchmarks)])
    x = ev["samples/observations"][:500]
    for theta in (np.array([0.3, -0.2]), np.array([-0.5, 0.5])):
        np.testing.assert_allclose(targets.log_ratio(x, theta, targets.reference), ratio.log_ratio(x, theta),
                                   rtol=1e-9, atol=1e-9)
