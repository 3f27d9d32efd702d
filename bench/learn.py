"""learn: closure on the benchmark model. Generate (or reuse) the events, `sample`, `train` an ALICES ensemble
and the benchmark_ratio ensembles on the CPU (networks in parallel processes, one thread each, as mapped train
tasks would run), `ensemble`; then RMS(learned log r - exact log r) over test events at several theta, next to
an untrained network's RMS (ratio = learned / untrained). Exact: the simulator's log p(x|theta) after cuts
(sbi_core.ml.closure); benchmark_ratio: the per-benchmark ratios morphed to theta. Target: RMS <= 0.05 at
200k events. Events are cached under artifacts/bench-learn/ (reused when present); the trained run is not."""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import Figure, emit

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "benchmark.yaml"
CACHE = REPO / "artifacts" / "bench-learn"
THETAS = [(0.5, 0.0), (0.0, 0.5), (-0.5, -0.5), (0.3, -0.2), (0.8, 0.8)]
# (events, shards, training overrides): the full run is the shipped config's training section with more samples
FULL = (200_000, 8, ["training.members=3", "training.samples.train=100000", "training.samples.test=20000",
                     "training.optimizer.epochs=30", "training.optimizer.learning_rate=0.003"])
QUICK = (20_000, 2, ["training.members=2", "training.samples.train=8000", "training.samples.test=2000",
                     "training.optimizer.epochs=5", "training.optimizer.learning_rate=0.005",
                     "training.optimizer.batch_size=128"])
COMMON = ["training.methods=[alices,benchmark_ratio]", "training.variations=false", "training.device=cpu"]


def _events(n_events: int, shards: int) -> str:
    """A combined benchmark run with n_events, generated once and reused."""
    from sbi_core import steps, storage

    run = str(CACHE / f"events-{n_events}")
    sets = [f"generation.events={n_events}", f"generation.shards={shards}", "generation.shards_per_group=4",
            "generation.seed=2024"]
    summary = steps.configure(str(CONFIG), run, sets)
    if not storage.exists(str(Path(run) / "events.h5")):
        steps.generate(run, summary["shards"])
        for g in range(summary["n_groups"]):
            steps.combine(run, g)
        steps.combine(run, None)
    return run


def _train_one(run: str, network: str) -> float:
    import torch

    from sbi_core.ml.train_step import train

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train(run, [network])
    return time.perf_counter() - t0


def run(quick: bool) -> list[dict[str, Any]]:
    import h5py
    import numpy as np

    from sbi_core import steps
    from sbi_core.data.format import WEIGHTS
    from sbi_core.data.training_sets import read_training_set
    from sbi_core.ml import samples
    from sbi_core.ml.closure import ExactRatio, morphed_log_ratio, rms, untrained_like
    from sbi_core.ml.ensemble import build_ensembles, load_ensemble
    from sbi_core.ml.plan import training_plan

    n_events, shards, training = QUICK if quick else FULL
    t0 = time.perf_counter()
    source = _events(n_events, shards)
    t_events = time.perf_counter() - t0
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-learn-") as tmp:
        run_uri = str(Path(tmp) / "run")
        steps.derive(source, run_uri, COMMON + training)
        t1 = time.perf_counter()
        for method in ("alices", "benchmark_ratio"):
            samples.sample(run_uri, method)
        t_sample = time.perf_counter() - t1
        layout, cfg, plan = steps.load_run(run_uri)
        networks = [nid for ids in training_plan(cfg)["networks"].values() for nid in ids]
        workers = max(1, min(4, os.cpu_count() or 1))
        t2 = time.perf_counter()
        with ProcessPoolExecutor(workers) as pool:
            per_network = list(pool.map(_train_one, [run_uri] * len(networks), networks))
        t_train = time.perf_counter() - t2
        build_ensembles(run_uri)

        with h5py.File(steps.run_events(layout, plan), "r") as f:
            exact = ExactRatio.from_events(cfg, f[WEIGHTS][:, : len(cfg.benchmarks)])
        x = read_training_set(layout.training_set("alices", "theta", "nominal", "test")).x.astype(np.float64)
        ranges = np.array([p.range for p in cfg.parameters])
        alices = load_ensemble(layout, "alices", "theta")
        names, ref = cfg.benchmark_names, cfg.benchmark_names.index(cfg.sampling_benchmark)
        heads = {b: load_ensemble(layout, "benchmark_ratio", n) for b, n in enumerate(names) if b != ref}
        untrained = {"alices": untrained_like(alices, x, ranges),
                     "benchmark_ratio": {b: untrained_like(e, x) for b, e in heads.items()}}

        def morphed(ensembles: dict, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
            """Morphed log r, per-head spreads, and how many events got a sum <= 0 (floored: signed morphing
            coefficients amplify errors of the learned r_b far from the basis)."""
            lr, sd = np.zeros((x.shape[0], len(names))), np.zeros((x.shape[0], len(names)))
            for b, e in ensembles.items():
                lr[:, b], sd[:, b] = e.log_ratio(x)
            alpha = exact.morphing.basis_coefficients(theta)
            nonpositive = int(np.sum(np.exp(lr) @ (alpha * exact.basis_totals) <= 0))
            return morphed_log_ratio(lr, alpha, exact.basis_totals), sd, nonpositive

        sizes = {"events": n_events, "train_samples": cfg.training.samples.train, "test_events": int(x.shape[0]),
                 "members": cfg.training.members, "epochs": cfg.training.optimizer.epochs}
        timing = {"seconds_events": round(t_events, 1), "seconds_sample": round(t_sample, 1),
                  "seconds_train": round(t_train, 1), "train_processes": workers,
                  "network_seconds_median": round(float(np.median(per_network)), 1)}
        for t in THETAS:
            theta = np.array(t)
            truth = exact.log_ratio(x, theta)
            mean, std = alices.log_ratio(x, theta)
            rows = {"alices": (rms(mean, truth), rms(untrained["alices"].log_ratio(x, theta)[0], truth),
                               float(std.mean()), {})}
            bmean, bstd, nonpositive = morphed(heads, theta)
            rows["benchmark_ratio"] = (rms(bmean, truth), rms(morphed(untrained["benchmark_ratio"], theta)[0], truth),
                                       float(bstd[:, [b for b in range(len(names)) if b != ref]].mean()),
                                       {"nonpositive_morphed_events": nonpositive})
            for method, (learned, baseline, spread, more) in rows.items():
                fig = Figure(name=f"learn.{method}", sizes={**sizes, "theta": list(t)}, ours=[learned],
                             baseline=[baseline], ours_label="RMS learned-exact log r",
                             baseline_label="RMS untrained-exact", target="RMS <= 0.05 (200k events)",
                             extra={"rms": round(learned, 4), "member_std": round(spread, 4), **more, **timing})
                rec = fig.record()
                emit(rec)
                records.append(rec)
    return records
