"""hpo: Bayesian optimisation against random search at equal budget, on one network of the benchmark model.

For each of SEEDS seeds, two `hpo` studies (searcher bayes, searcher random) search the same space for the same
network (ALICES, member 0) of one sampled run with the same budget of trainings (rounds of POINTS points), driven
in this process (`sbi-core study --drive`, what one DAG run per round does). The figure: the median over the seeds
of the best validation loss each reached (ours: bayes; baseline: random; target ratio <= 1.0), with the loss of
the shipped config's hyperparameters (64 x 64, tanh, learning rate 1e-3, batch 256; epochs capped as the trials')
trained on the same sets beside them. Seeds
run two at a time in processes (one thread each). Events are cached under artifacts/bench-hpo/."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import Figure, emit

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "benchmark.yaml"
CACHE = REPO / "artifacts" / "bench-hpo"
NETWORK = "alices-theta-nominal-m00"
SEEDS = 5
#: (events, training samples, budget, points per round, most epochs); 4 initial design points per study
FULL = (100_000, 20_000, 20, 4, 12)
QUICK = (10_000, 5_000, 16, 4, 4)
TRAINING = ["training.methods=[alices]", "training.members=1", "training.variations=false", "training.device=cpu",
            "training.samples.test=2000"]


def _space(max_epochs: int) -> dict[str, Any]:
    return {"layers": {"type": "integer", "low": 1, "high": 3},
            "width": {"type": "integer", "low": 8, "high": 128, "log": True},
            "activation": {"type": "categorical", "choices": ["tanh", "relu", "silu"]},
            "learning_rate": {"type": "real", "low": 1e-4, "high": 3e-2, "log": True},
            "batch_size": {"type": "integer", "low": 32, "high": 512, "log": True},
            "epochs": {"type": "integer", "low": 2, "high": max_epochs}}


def _run(n_events: int, n_train: int) -> str:
    """A combined and sampled benchmark run, built once and reused."""
    from sbi_core import steps, storage
    from sbi_core.ml.samples import sample

    run = str(CACHE / f"run-{n_events}-{n_train}")
    summary = steps.configure(str(CONFIG), run, [f"generation.events={n_events}", "generation.shards=2",
                                                "generation.seed=2025", f"training.samples.train={n_train}",
                                                *TRAINING])
    if not storage.exists(str(Path(run) / "events.h5")):
        steps.generate(run, summary["shards"])
        for g in range(summary["n_groups"]):
            steps.combine(run, g)
        steps.combine(run, None)
    if not storage.exists(str(Path(run) / "samples" / "alices" / "manifest.json")):
        sample(run, "alices")
    return run


def _study(args: tuple[str, str, str, int, int, int, int]) -> tuple[float, int, float]:
    """(best validation loss, trainings, seconds) of one driven study."""
    import torch

    from sbi_core.studies import steps

    torch.set_num_threads(1)
    root, run, searcher, seed, budget, points, max_epochs = args
    t0 = time.perf_counter()
    uri = str(Path(root) / f"{searcher}-{seed}")
    sets = [f"run={run}", "kind=hpo", f"budget={budget}", f"points_per_round={points}",
            f"max_rounds={budget // points}", "tolerance=1e-9", f"seed={seed}", f"options.searcher={searcher}",
            f"options.networks=[{NETWORK}]", f"options.patience={budget}", "options.initial_points=4"]
    sets += [f"options.space.{k}.{f}={v if not isinstance(v, list) else '[' + ', '.join(v) + ']'}"
             for k, d in _space(max_epochs).items() for f, v in d.items()]
    steps.create(uri, None, sets)
    steps.drive(uri)
    record = json.loads(Path(uri, "results.json").read_text())
    return float(record["segments"][NETWORK]["value"]), int(record["budget_used"]), time.perf_counter() - t0


def _default_loss(run: str, root: str, max_epochs: int) -> float:
    """The shipped config's network and optimiser (64 x 64, tanh, learning rate 1e-3, batch 256), trained for the
    space's largest number of epochs (the same cap as every trial)."""
    from sbi_core.ml.trial import train_trial

    return float(train_trial(run, NETWORK, {"epochs": max_epochs}, str(Path(root) / "default"),
                             closure=False)["val_loss"])


def run(quick: bool) -> list[dict[str, Any]]:
    os.environ.setdefault("SBI_TRACKING", "off")  # the figures are the losses; MLflow is not measured here
    n_events, n_train, budget, points, max_epochs = QUICK if quick else FULL
    run_uri = _run(n_events, n_train)
    with tempfile.TemporaryDirectory(prefix="bench-hpo-") as root:
        jobs = [(root, run_uri, s, seed, budget, points, max_epochs) for seed in range(SEEDS)
                for s in ("bayes", "random")]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            out = dict(zip([(j[2], j[3]) for j in jobs], pool.map(_study, jobs), strict=True))
        seconds = time.perf_counter() - t0
        default = _default_loss(run_uri, root, max_epochs)
    bayes = [out[("bayes", s)][0] for s in range(SEEDS)]
    rand = [out[("random", s)][0] for s in range(SEEDS)]
    fig = Figure(name="hpo.best_val_loss", sizes={"events": n_events, "train_samples": n_train, "budget": budget,
                                                  "points_per_round": points, "seeds": SEEDS, "max_epochs": max_epochs},
                 ours=bayes, baseline=rand, ours_label="median best val loss, bayes",
                 baseline_label="median best val loss, random", target="ratio <= 1.0",
                 extra={"default_val_loss": round(default, 5), "bayes": [round(v, 5) for v in bayes],
                        "random": [round(v, 5) for v in rand],
                        "bayes_median_minus_default": round(statistics.median(bayes) - default, 5),
                        "seconds": round(seconds, 1), "network": NETWORK})
    rec = fig.record()
    emit(rec)
    return [rec]
