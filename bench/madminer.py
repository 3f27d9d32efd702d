"""madminer: the same events, sampling and ALICES training in this project and in MadMiner 0.9.6, side by side.

Events: the benchmark model (cached under artifacts/bench-learn/, as `bench learn`), written by `sbi-core
combine` in our format, which MadMiner's SampleAugmenter opens as it is. Per training seed:
- sampling: ours `sbi-core sample --method alices` (train + validation + test sets) against MadMiner's
  `sample_train_ratio` (theta0: n_thetas flat prior points, theta1: the reference; the train partition holds
  the same share of the events as our train + validation split), both in this process: samples/s;
- training: ours `sbi-core train` of one ALICES network against MadMiner's `ParameterizedRatioEstimator.train`
  (method alices), each in a fresh process with one torch thread, one after the other: samples x epochs / s.
  Equal settings: 64x64 tanh, Adam, batch 256, learning rate 1e-3 decaying to 1e-4, early stopping with
  patience 5 (best state restored), gradient clipping 10, alpha 1 in standardised units (MadMiner's
  scale_parameters), validation 20% of the training samples, no bootstrap; MadMiner's DataLoader in-process
  (n_workers=0: one thread);
- accuracy: RMS(learned - exact log r(x|theta, ref)) over test events neither side trained on (our test split,
  restricted to MadMiner's test partition), at THETAS (bench learn's), against the simulator's exact ratio after
  cuts (sbi_core.ml.closure). Ratio = ours / MadMiner's, median over seeds (RMS: goal <= 1; speed: goal >= 2 for
  training).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bench.common import Figure, emit
from bench.learn import THETAS, _events

# (events, shards, samples per set, test samples, theta0 points, epochs, seeds)
FULL = (100_000, 8, 100_000, 20_000, 100, 30, 3)
QUICK = (20_000, 2, 8_000, 2_000, 20, 4, 1)
SETTINGS = {"hidden": (64, 64), "batch_size": 256, "learning_rate": 1e-3, "learning_rate_final": 1e-4,
            "patience": 5, "clip": 10.0, "alpha": 1.0, "validation_fraction": 0.2}


def _ours_train(run: str) -> tuple[float, int]:
    """Train our one ALICES network (fresh process, one thread, MLflow off): the network's training seconds as
    result.json records them (the training sets read, every epoch with validation and checkpoint, model and export
    written) and the epochs run."""
    import os

    import torch

    from sbi_core import storage
    from sbi_core.layout import RunLayout
    from sbi_core.ml.train_step import train

    os.environ["SBI_TRACKING"] = "off"
    torch.set_num_threads(1)
    train(run, ["alices-theta-nominal-m00"])
    result = storage.read_json(RunLayout(run).network_file("alices-theta-nominal-m00", "result.json"))
    return float(result["seconds"]), int(result["epochs"])


def _madminer_train(arrays: str, model_dir: str, epochs: int, seed: int) -> tuple[float, int]:
    """Train MadMiner's ALICES (fresh process, one thread) on the saved samples: the seconds of its `train` (data
    scaling and loaders, every epoch with validation) and the epochs run; the model is saved for evaluation."""
    import numpy as np
    import torch
    from madminer.ml import ParameterizedRatioEstimator

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    d = np.load(arrays)
    est = ParameterizedRatioEstimator(n_hidden=SETTINGS["hidden"], activation="tanh")
    t0 = time.perf_counter()
    losses = est.train(method="alices", x=d["x"], y=d["y"], theta=d["theta0"], r_xz=d["r_xz"], t_xz=d["t_xz"],
                       alpha=SETTINGS["alpha"], optimizer="adam", n_epochs=epochs, batch_size=SETTINGS["batch_size"],
                       initial_lr=SETTINGS["learning_rate"], final_lr=SETTINGS["learning_rate_final"],
                       validation_split=SETTINGS["validation_fraction"], early_stopping=True,
                       early_stopping_patience=SETTINGS["patience"], clip_gradient=SETTINGS["clip"],
                       scale_parameters=True, scale_inputs=True, n_workers=0, verbose="none")
    seconds = time.perf_counter() - t0
    est.save(model_dir)
    return seconds, int(len(losses[0]))


def _in_process(fn: Any, *args: Any) -> Any:
    with ProcessPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def _madminer_sample(events: str, cfg: Any, n: int, n_thetas: int, test_split: float, seed: int) -> dict:
    import numpy as np
    from madminer.sampling import SampleAugmenter, benchmark, random_morphing_points

    np.random.seed(seed)
    sa = SampleAugmenter(events)  # (include_nuisance_parameters=False fails in 0.9.6 on any file with nuisances)
    priors = [("flat", p.range[0], p.range[1]) for p in cfg.parameters]
    t0 = time.perf_counter()
    x, theta0, _, y, r_xz, t_xz, _ = sa.sample_train_ratio(
        theta0=random_morphing_points(n_thetas, priors), theta1=benchmark(cfg.sampling_benchmark), n_samples=n,
        test_split=test_split, validation_split=0.0, partition="train", n_processes=1, nuisance_score=False)
    n_par = len(cfg.parameters)  # MadMiner appends the (nominal, zero) nuisance values to theta when a file has any
    return {"seconds": time.perf_counter() - t0, "x": x, "theta0": theta0[:, :n_par], "y": y, "r_xz": r_xz,
            "t_xz": t_xz,
            "test_start": int(round((1.0 - test_split) * sa.n_samples)) + 1}


def _one_seed(source: str, tmp: str, seed: int, sizes: tuple) -> dict[str, Any]:
    """Sample, train and evaluate both at one seed; the per-theta RMS and the timings."""
    import h5py
    import numpy as np
    from madminer.ml import ParameterizedRatioEstimator

    from sbi_core import steps
    from sbi_core.data.format import WEIGHTS
    from sbi_core.data.training_sets import read_training_set
    from sbi_core.ml import samples
    from sbi_core.ml.closure import ExactRatio, rms
    from sbi_core.ml.ensemble import build_ensembles, load_ensemble

    n_events, _, n_samples, n_test, n_thetas, epochs, _ = sizes
    run = f"{tmp}/ours-{seed}"
    steps.derive(source, run, [
        "training.methods=[alices]", "training.variations=false", "training.device=cpu", "training.members=1",
        "training.bootstrap=false", f"training.seed={seed}", f"training.samples.train={n_samples}",
        f"training.samples.test={n_test}", f"training.samples.n_thetas={n_thetas}",
        f"training.optimizer.epochs={epochs}", f"training.alpha={SETTINGS['alpha']}"])
    layout, cfg, plan = steps.load_run(run)
    t0 = time.perf_counter()
    samples.sample(run, "alices")
    ours_sample_s = time.perf_counter() - t0
    ours_train_s, ours_epochs = _in_process(_ours_train, run)
    build_ensembles(run)

    events = steps.run_events(layout, plan)
    n_ours = n_samples + n_test  # our rows: train + validation, and test
    mm = _madminer_sample(events, cfg, n_samples, n_thetas, n_test / n_ours, seed)
    arrays = f"{tmp}/mm-{seed}.npz"
    np.savez(arrays, **{k: mm[k] for k in ("x", "theta0", "y", "r_xz", "t_xz")})
    mm_train_s, mm_epochs = _in_process(_madminer_train, arrays, f"{tmp}/mm-model-{seed}", epochs, seed)
    est = ParameterizedRatioEstimator()
    est.load(f"{tmp}/mm-model-{seed}")

    with h5py.File(events, "r") as f:
        exact = ExactRatio.from_events(cfg, f[WEIGHTS][:, : len(cfg.benchmarks)])
    test = read_training_set(layout.training_set("alices", "theta", "nominal", "test"))
    x = test.x[test.event >= mm["test_start"]].astype(np.float64)  # events neither side trained on
    ours = load_ensemble(layout, "alices", "theta")
    theirs = est.evaluate_log_likelihood_ratio(x=x, theta=np.array(THETAS), test_all_combinations=True)[0]
    out: dict[str, Any] = {"rms": {}, "n_test_x": int(x.shape[0]),
                           "ours_sample_per_s": n_ours * 1.0 / ours_sample_s, "mm_sample_per_s": n_samples / mm["seconds"],
                           "ours_train_per_s": (1 - SETTINGS["validation_fraction"]) * n_samples * ours_epochs
                           / ours_train_s,
                           "mm_train_per_s": (1 - SETTINGS["validation_fraction"]) * mm["x"].shape[0] * mm_epochs
                           / mm_train_s, "epochs": [ours_epochs, mm_epochs]}
    for k, t in enumerate(THETAS):
        truth = exact.log_ratio(x, np.array(t))
        out["rms"][str(t)] = (rms(ours.log_ratio(x, np.array(t))[0], truth), rms(theirs[k], truth))
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    import statistics

    logging.getLogger("madminer").setLevel(logging.WARNING)
    sizes = QUICK if quick else FULL
    n_events, shards, n_samples, n_test, n_thetas, epochs, n_seeds = sizes
    source = _events(n_events, shards)
    with tempfile.TemporaryDirectory(prefix="bench-madminer-") as tmp:
        per_seed = [_one_seed(source, tmp, seed, sizes) for seed in range(n_seeds)]
    common = {"events": n_events, "samples": n_samples, "thetas": n_thetas, "epochs": epochs, "seeds": n_seeds,
              "threads": 1}
    figures = [
        Figure(name="madminer.sample", sizes=common, ours=[r["ours_sample_per_s"] for r in per_seed],
               baseline=[r["mm_sample_per_s"] for r in per_seed], ours_label="samples/s (sbi-core sample)",
               baseline_label="samples/s (MadMiner sample_train_ratio)", target=">= 1"),
        Figure(name="madminer.train", sizes=common, ours=[r["ours_train_per_s"] for r in per_seed],
               baseline=[r["mm_train_per_s"] for r in per_seed], ours_label="samples x epochs / s (sbi-core train)",
               baseline_label="samples x epochs / s (MadMiner ALICES)", target=">= 2",
               extra={"epochs_ours_madminer": [r["epochs"] for r in per_seed]}),
    ]
    for t in THETAS:
        ours = [r["rms"][str(t)][0] for r in per_seed]
        theirs = [r["rms"][str(t)][1] for r in per_seed]
        figures.append(Figure(name="madminer.alices_rms", sizes={**common, "theta": list(t)}, ours=ours,
                              baseline=theirs, ours_label="RMS learned-exact log r (ours)",
                              baseline_label="RMS (MadMiner)", target="<= 1",
                              extra={"test_x": per_seed[0]["n_test_x"],
                                     "ours_mean": round(statistics.mean(ours), 4),
                                     "madminer_mean": round(statistics.mean(theirs), 4)}))
    records = []
    for fig in figures:
        rec = fig.record()
        emit(rec)
        records.append(rec)
    return records


if __name__ == "__main__":  # pragma: no cover - python -m bench madminer is the entry point
    print(json.dumps(run(quick=True)))
