"""Closure on the benchmark model at small scale: on small_run (6000 events), `sample` -> `train` ->
`ensemble`, then the learned log r(x|theta, ref) of an ALICES ensemble and of the benchmark_ratio ensembles
(morphed) against the exact one after cuts (sbi_core.ml.closure), next to untrained networks', at several theta.

Measured (this configuration: 2 members, 4800 training samples, 8 epochs of batch 64; training.seed 0):
RMS(learned - exact) ALICES 0.09-0.14 (untrained 0.19-0.33), benchmark_ratio morphed 0.027-0.068 (untrained
0.15-0.31) at the thetas below; members of one ensemble differ by ~0.06 (ALICES), so the limit is the small
training set, not a bias. Asserted: ALICES < 0.2 and < 0.6 x untrained; benchmark_ratio < 0.1 and < 0.4 x
untrained, at every theta."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sbi_core import steps
from sbi_core.data.format import WEIGHTS
from sbi_core.data.training_sets import read_training_set
from sbi_core.layout import RunLayout
from sbi_core.ml import samples
from sbi_core.ml.closure import ExactRatio, morphed_log_ratio, rms, untrained_like
from sbi_core.ml.ensemble import Ensemble, build_ensembles, load_ensemble
from sbi_core.ml.plan import training_plan
from sbi_core.ml.train_step import train

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
