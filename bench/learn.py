"""learn: closure on the benchmark model. Generate (or reuse) the events, `sample`, `train` an ALICES ensemble
and the benchmark_ratio ensembles on the CPU (networks in parallel processes, one thread each, as mapped train
tasks would run), `ensemble`; then RMS(learned log r - exact log r) over test events at several theta. ALICES
is compared with the ALICES of before issue 25 trained beside it on the same events and epochs (score term in
raw units, shared theta0 points: ratio = now / before, <= 1 wanted at every interior theta), benchmark_ratio with
an untrained network (ratio = learned / untrained). A first row says what alpha means in standardised units.
Per theta: the effective share of events at theta and the spread of the exact log r (what limits the corner).
Exact: the simulator's log p(x|theta) after cuts (sbi_core.ml.closure); benchmark_ratio: the per-benchmark
ratios morphed to theta. Target: RMS <= 0.05 at 200k events. Events are cached under artifacts/bench-learn/
(reused while their header is the current format's); the trained runs are not."""

from __future__ import annotations

import os
import shutil
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
#: The ALICES of before issue 25, trained beside on the same events: the score term in raw units and every theta0
#: point labelling both halves of the samples.
BEFORE = ["training.methods=[alices]", "training.variations=false", "training.device=cpu",
          "training.score_units=raw", "training.samples.pairing=shared"]
BASELINE_LABEL = {"alices": "RMS before (raw score units, shared theta0)", "benchmark_ratio": "RMS untrained-exact"}
TARGET = {"alices": "<= 1 at interior theta; RMS <= 0.05 (200k events)", "benchmark_ratio": "RMS <= 0.05 (200k events)"}
CORNER = (0.8, 0.8)
CORNER_NOTE = ("the size of log r there: the corner has the largest exact log r of the points (exact_log_r_std, ~3x "
               "the interior's) and relative to it is learnt as well as the interior (rms_over_exact_std alike); the "
               "events still carry its weight (effective_events_share ~0.8), but it sits at the corner of the prior "
               "square and outside the circle of basis benchmarks, where fewer training theta0 surround it")


def _events(n_events: int, shards: int) -> str:
    """A combined benchmark run with n_events, generated once and reused."""
    from sbi_core import steps, storage

    run = str(CACHE / f"events-{n_events}")
    sets = [f"generation.events={n_events}", f"generation.shards={shards}", "generation.shards_per_group=4",
            "generation.seed=2024"]
    summary = steps.configure(str(CONFIG), run, sets)
    events = Path(run) / "events.h5"
    if events.exists() and not _same_header(Path(run) / "setup.h5", events):
        shutil.rmtree(Path(run) / "shards", ignore_errors=True)
        shutil.rmtree(Path(run) / "groups", ignore_errors=True)
        events.unlink()  # cached by an older version of the event format: generate again
    if not storage.exists(str(events)):
        steps.generate(run, summary["shards"])
        for g in range(summary["n_groups"]):
            steps.combine(run, g)
        steps.combine(run, None)
    return run


def _same_header(setup: Path, events: Path) -> bool:
    """Whether a cached events file has the header groups configure writes now (setup.h5 is rewritten by it)."""
    import h5py

    def names(path: Path) -> set[str]:
        with h5py.File(path, "r") as f:
            found: set[str] = set()
            f.visit(found.add)
        return {n for n in found if not n.startswith(("samples", "sample_summary"))}

    return names(setup) == names(events)


def _train_one(run: str, network: str) -> float:
    import torch

    from sbi_core.ml.train_step import train

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train(run, [network])
    return time.perf_counter() - t0


def _train_all(runs: list[str]) -> tuple[list[float], int]:
    """Every planned network of the runs, in parallel processes of one thread each: seconds per network."""
    from sbi_core import steps
    from sbi_core.ml.plan import training_plan

    jobs = [(r, nid) for r in runs for ids in training_plan(steps.load_run(r)[1])["networks"].values() for nid in ids]
    workers = max(1, min(4, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_train_one, [r for r, _ in jobs], [n for _, n in jobs])), workers


def _alpha_record(cfg: Any, alices: Any, sizes: dict[str, Any]) -> dict[str, Any]:
    """The row that says what alpha means: the score term in standardised units, t' = t * std(theta0), so alpha
    per parameter in theta's own units is alpha * std^2 (the previous raw-unit alpha 1 is 1 / std^2 here)."""
    import numpy as np

    std = np.mean([m.theta_std.numpy() for m in alices.models], axis=0)
    return {"name": "learn.alpha_standardised_units", "sizes": sizes, "alpha": cfg.training.alpha,
            "score_units": cfg.training.score_units, "pairing": cfg.training.samples.pairing,
            "theta0_std": [round(float(v), 4) for v in std],
            "alpha_in_raw_units": [round(float(cfg.training.alpha * v * v), 4) for v in std],
            "baseline_alpha_in_standardised_units": [round(float(cfg.training.alpha / (v * v)), 4) for v in std],
            "baseline": "score_units=raw, pairing=shared (the estimator before issue 25), same events and epochs"}


def _diagnostics(exact: Any, x: Any, weights: Any, ref: int, theta: Any) -> dict[str, Any]:
    """What limits the RMS at theta: how many of the run's events carry its weight (Kish's effective number of
    the events weighted to theta, as a share of those at the reference) and the spread of the exact log r."""
    import numpy as np

    alpha = exact.morphing.basis_coefficients(theta)
    w_t, w_ref = np.clip(weights @ alpha, 0.0, None), weights[:, ref]
    ess = (w_t.sum() ** 2 / (w_t**2).sum()) / (w_ref.sum() ** 2 / (w_ref**2).sum())
    return {"effective_events_share": round(float(ess), 4),
            "exact_log_r_std": round(float(np.std(exact.log_ratio(x, theta))), 4)}


def run(quick: bool) -> list[dict[str, Any]]:
    import h5py
    import numpy as np

    from sbi_core import steps
    from sbi_core.data.format import WEIGHTS
    from sbi_core.data.training_sets import read_training_set
    from sbi_core.ml import samples
    from sbi_core.ml.closure import ExactRatio, morphed_log_ratio, rms, untrained_like
    from sbi_core.ml.ensemble import build_ensembles, load_ensemble

    n_events, shards, training = QUICK if quick else FULL
    t0 = time.perf_counter()
    source = _events(n_events, shards)
    t_events = time.perf_counter() - t0
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-learn-") as tmp:
        run_uri, before_uri = str(Path(tmp) / "run"), str(Path(tmp) / "before")
        steps.derive(source, run_uri, COMMON + training)
        steps.derive(source, before_uri, BEFORE + training)
        t1 = time.perf_counter()
        for uri, method in ((run_uri, "alices"), (run_uri, "benchmark_ratio"), (before_uri, "alices")):
            samples.sample(uri, method)
        t_sample = time.perf_counter() - t1
        layout, cfg, plan = steps.load_run(run_uri)
        t2 = time.perf_counter()
        per_network, workers = _train_all([run_uri, before_uri])
        t_train = time.perf_counter() - t2
        build_ensembles(run_uri)
        build_ensembles(before_uri)

        with h5py.File(steps.run_events(layout, plan), "r") as f:
            weights = f[WEIGHTS][:, : len(cfg.benchmarks)]
        exact = ExactRatio.from_events(cfg, weights)
        x = read_training_set(layout.training_set("alices", "theta", "nominal", "test")).x.astype(np.float64)
        ranges = np.array([p.range for p in cfg.parameters])
        alices = load_ensemble(layout, "alices", "theta")
        before = load_ensemble(steps.load_run(before_uri)[0], "alices", "theta")
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
        alpha_row = _alpha_record(cfg, alices, sizes)
        emit(alpha_row)
        records.append(alpha_row)
        for t in THETAS:
            theta = np.array(t)
            truth = exact.log_ratio(x, theta)
            mean, std = alices.log_ratio(x, theta)
            diag = _diagnostics(exact, x, weights, ref, theta)
            learned = rms(mean, truth)
            rows = {"alices": (learned, rms(before.log_ratio(x, theta)[0], truth), float(std.mean()),
                               {"rms_untrained": round(rms(untrained["alices"].log_ratio(x, theta)[0], truth), 4),
                                **diag, "rms_over_exact_std": round(learned / diag["exact_log_r_std"], 3),
                                **({"limited_by": CORNER_NOTE} if t == CORNER else {})})}
            bmean, bstd, nonpositive = morphed(heads, theta)
            rows["benchmark_ratio"] = (rms(bmean, truth), rms(morphed(untrained["benchmark_ratio"], theta)[0], truth),
                                       float(bstd[:, [b for b in range(len(names)) if b != ref]].mean()),
                                       {"nonpositive_morphed_events": nonpositive, **diag})
            for method, (learned, baseline, spread, more) in rows.items():
                fig = Figure(name=f"learn.{method}", sizes={**sizes, "theta": list(t)}, ours=[learned],
                             baseline=[baseline], ours_label="RMS learned-exact log r",
                             baseline_label=BASELINE_LABEL[method], target=TARGET[method],
                             extra={"rms": round(learned, 4), "member_std": round(spread, 4), **more, **timing})
                rec = fig.record()
                emit(rec)
                records.append(rec)
    return records
