"""Closure of the learned likelihood arrays on the benchmark model with real (small) trainings: after a short
training the learned per-event arrays are much closer to the exact ones than an untrained ensemble's; the
evaluate step runs on the real ensembles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbi_core import steps, storage
from sbi_core.config import load_config
from sbi_core.data.format import read_samples
from sbi_core.layout import RunLayout
from sbi_core.ml import evaluate
from sbi_core.ml.closure import ExactTargets, FiducialSums
from sbi_core.ml.ensemble import build_ensembles
from sbi_core.ml.plan import training_plan
from sbi_core.ml.samples import sample
from sbi_core.ml.train_step import train
from sbi_core.physics.registry import make_simulator

from .test_learned_arrays import _exact_arrays, _xsec

SMALL_TRAINING = ["training.methods=[benchmark_ratio]", "training.members=2", "training.samples.train=10000",
                  "training.samples.test=1000", "training.network.hidden=[32, 32]"]
TRAINED = ["training.optimizer.epochs=15", "training.optimizer.learning_rate=0.01",
           "training.optimizer.learning_rate_final=0.001"]
UNTRAINED = ["training.optimizer.epochs=1", "training.optimizer.learning_rate=1e-9",
             "training.optimizer.learning_rate_final=1e-9"]


def _train_run(small_run, run, settings) -> RunLayout:
    steps.derive(str(small_run), str(run), SMALL_TRAINING + settings)
    sample(str(run), "benchmark_ratio")
    cfg = load_config(str(run / "config.yaml"))
    train(str(run), [i for ids in training_plan(cfg)["networks"].values() for i in ids])
    build_ensembles(str(run))
    return RunLayout(str(run))


@pytest.mark.slow
def test_trained_ensembles_approach_the_exact_arrays(small_run, tmp_path, monkeypatch):
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("SBI_TRACKING", "off")
    evaluate._load_cached.cache_clear()
    trained = _train_run(small_run, tmp_path / "trained", TRAINED)
    untrained = _train_run(small_run, tmp_path / "untrained", UNTRAINED)
    cfg = load_config(trained.config)
    sim = make_simulator(cfg)
    exact = ExactTargets(cfg, sim, FiducialSums.from_events(cfg, sim, str(small_run / "events.h5")))
    xsec, xsec_var = _xsec(cfg, exact, read_samples(small_run / "events.h5"))  # as the inference stage sums them
    x = read_samples(small_run / "events.h5", 0, 3000)["samples/observations"]
    events = {"observations": x, "weights": np.ones(len(x))}
    log_ratio, log_ratio_var = _exact_arrays(cfg, sim, x)
    rms = {}
    for name, layout in (("trained", trained), ("untrained", untrained)):
        arrays = evaluate.learned_arrays(layout, cfg, events, xsec, xsec_var)
        rms[name] = np.sqrt(np.mean((arrays.log_ratio - log_ratio) ** 2, axis=0))[1:]  # the reference column is 0
        rms[name + "_var"] = np.sqrt(np.mean((arrays.log_ratio_var[..., 0] - log_ratio_var) ** 2, axis=0))[1]  # energy scale
        assert np.all(arrays.log_ratio_std[:, 1:] > 0)
    # Measured (6000 events, 10000 samples, 15 epochs, 2 members, soft labels): trained RMS per benchmark
    # 0.04-0.23 (p1, p5 0.04; p3, the farthest from the SM, 0.23), untrained 0.31-1.0, ratio 0.12-0.23.
    # Tolerance: every benchmark below 0.4 and below 0.4x the untrained RMS, the mean ratio below 0.3.
    ratio = rms["trained"] / rms["untrained"]
    assert np.all(rms["trained"] < 0.4) and np.all(ratio < 0.4) and ratio.mean() < 0.3, (rms, ratio)
    # Variation networks (plain labels: moved observables have no joint ratio): a 2% scale moves log r by ~0.07
    # RMS, at this size the networks' noise level (measured trained 0.069-0.077, untrained 0.15-0.16); only
    # "better than untrained" is claimed here.
    assert np.all(rms["trained_var"] < rms["untrained_var"]), rms

    # The evaluate step on real ensembles: closure at every theta below the log r = 0 guess.

    n_batches = int(json.loads(storage.read_text(trained.ensembles_index))["evaluate_batches"])
    for i in range(n_batches):
        evaluate.evaluate_batch(trained.root, i)
    report = evaluate.evaluate_report(trained.root)
    closure = json.loads(storage.read_text(trained.evaluation_metrics))["closure"]["benchmark_ratio"]["thetas"]
    assert all(t["rms"] < t["rms_trivial"] for t in closure.values()), closure
    assert report["n_networks_ok"] == 14 and len(report["plot_files"]) == 4
