"""active_learning: the two objectives of the `active_learning` study kind on the benchmark model.

(a) excess: a run whose dataset is the Asimov dataset at an injected point (exact likelihood arrays, fitted); the
study (Bayesian optimisation, POINTS points per round) searches the largest local significance against the SM and
stops by its own convergence rule. The figure: the evaluations it took (ours) against the points of a grid of
the same resolution (the tolerance) over the parameter ranges (baseline), ratio < 1 wanted, with the distance of
the found point from the injected one (the data's best fit: the maximum of the local significance), which must
be within the tolerance.

(b) disagreement: a source run with a trained ALICES ensemble; the study (its space the grid's box below) simulates
where the ensemble disagrees most, adds those events' samples and samples from the source's own events at that
point and the next points of largest disagreement, and retrains warm, until the disagreement is below its threshold
or its budget of events is spent. The figure: RMS(learned - exact log r) at the worst corner (0.8, 0.8) over the
source's ALICES test events after the study (ours) against before (baseline), target < 0.05; beside it the
simulated events it took and those a uniform design (more events at the SM, same training settings) needed for the
same RMS, tried at 2x and 4x the source's events, and the control: a uniform design with the study's events and as
many samples as its final sets (is it where the samples are, or how many?). Beside it, the largest RMS over a 5 x 5
grid of theta in [-0.8, 0.8]^2 and where it is, before and after (what the study's objective points at; the corner
is one of the grid's points), and what the estimator reaches at that worst point when networks are trained there
alone (theta0 fixed at it; the control's events, 4x the source's samples): the limit no choice of where to simulate
gets under. Events are cached under artifacts/bench-active-learning/."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Figure, emit

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "benchmark.yaml"
CACHE = REPO / "artifacts" / "bench-active-learning"
INJECTED = {"cW": 0.5, "cHW": -0.4}
CORNER = (0.8, 0.8)
POINTS = 4
# (a): events, tolerance; (b): source events, train samples, epochs, members, events per point, samples per
# point, samples per point from the source's events and how many points get them, budget (events), threshold
A_FULL, A_QUICK = (40_000, 0.05), (10_000, 0.1)
B_FULL = (200_000, 100_000, 30, 3, 50_000, 25_000, 100_000, 4, 200_000, 0.03)
B_QUICK = (20_000, 8_000, 5, 2, 20_000, 8_000, 8_000, 2, 40_000, 0.03)


def _combined(run: str, sets: list[str]) -> str:
    from sbi_core import steps, storage

    summary = steps.configure(str(CONFIG), run, sets)
    if not storage.exists(str(Path(run) / "events.h5")):
        steps.generate(run, summary["shards"])
        for g in range(summary["n_groups"]):
            steps.combine(run, g)
        steps.combine(run, None)
    return run


def _drive(uri: str, sets: list[str]) -> dict[str, Any]:
    from sbi_core.studies import steps

    steps.create(uri, None, sets)
    steps.drive(uri)
    return json.loads(Path(uri, "results.json").read_text())


# ---------------------------------------------------------------------------------------------- (a) excess
def excess(quick: bool, root: str) -> dict[str, Any]:
    """The excess study on an Asimov dataset at INJECTED; its evaluations against a grid's points."""
    from sbi_core import storage
    from sbi_core.inference import steps
    from sbi_core.studies.active_learning_report import grid_points

    n_events, tol = A_QUICK if quick else A_FULL
    truth = [f"parameters[{i}].true_value={v}" for i, v in enumerate(INJECTED.values())]
    run = _combined(str(CACHE / f"excess-{n_events}"), [f"generation.events={n_events}", "generation.shards=2",
                                                        "generation.seed=31", *truth, "inference.dataset.kind=asimov",
                                                        "inference.toys.n=0"])
    if not storage.exists(str(Path(run) / "inference" / "fit.json")):
        ds = steps.dataset(run)
        steps.likelihood(run, [int(b) for b in ds["likelihood_batches"]])
        steps.likelihood_join(run)
        steps.fit(run)
    fit = json.loads((Path(run) / "inference" / "fit.json").read_text())["values"]
    t0 = time.perf_counter()
    res = _drive(str(Path(root) / "excess"), [
        f"run={run}", "kind=active_learning", "options.objective=excess", f"points_per_round={POINTS}",
        "max_rounds=40", "budget=400", f"tolerance={tol}", "options.min_gain=0.01", "options.initial_points=8",
        "seed=1"])
    seconds = time.perf_counter() - t0
    best = res["best"]["point"]
    error = max(abs(best[k] - fit[k]) for k in best)
    from sbi_core import steps as run_steps

    grid = grid_points({p.name: tuple(p.range) for p in run_steps.load_run(run)[1].parameters}, tol)
    fig = Figure(name="active_learning.excess", sizes={"events": n_events, "tolerance": tol, "points_per_round": POINTS},
                 ours=[float(res["evaluations"])], baseline=[float(grid)], ours_label="evaluations (bayes)",
                 baseline_label=f"grid points at resolution {tol}", target="ratio < 1; location error <= tolerance",
                 extra={"found": {k: round(v, 4) for k, v in best.items()}, "best_fit": {k: round(fit[k], 4) for k in best},
                        "injected": INJECTED, "location_error": round(error, 4), "within_tolerance": error <= tol,
                        "best_value": round(res["best"]["value"], 3), "status": res["status"], "reason": res["reason"],
                        "seconds": round(seconds, 1)})
    return fig.record()


# ---------------------------------------------------------------------------------------------- (b) disagreement
def _training(n_train: int, epochs: int, members: int) -> list[str]:
    return ["training.methods=[alices]", "training.variations=false", "training.device=cpu",
            f"training.members={members}", f"training.samples.train={n_train}", "training.samples.test=5000",
            f"training.optimizer.epochs={epochs}", "training.optimizer.learning_rate=0.003"]


def _trained(events_run: str, run: str, training: list[str]) -> str:
    """A run derived from `events_run` with `training`, sampled and trained (networks two at a time)."""
    from concurrent.futures import ProcessPoolExecutor

    from sbi_core import steps
    from sbi_core.ml.plan import training_plan
    from sbi_core.ml.samples import sample

    steps.derive(events_run, run, training)
    sample(run, "alices")
    ids = training_plan(steps.load_run(run)[1])["networks"]["alices"]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_train_one, [run] * len(ids), ids))
    return run


def _train_one(run: str, network: str) -> None:
    import torch

    from sbi_core.ml.train_step import train

    torch.set_num_threads(1)
    train(run, [network])


GRID = [-0.8, -0.4, 0.0, 0.4, 0.8]  # per parameter: where the worst RMS over the space is looked for (CORNER is one)


def _rms_at(run: str, x: Any, exact: Any, points: list[tuple[float, float]]) -> dict[tuple[float, float], float]:
    """RMS(learned - exact log r) over the events x at each point, of the run's ALICES ensemble (loaded once)."""
    import numpy as np

    from sbi_core import steps
    from sbi_core.ml.closure import rms
    from sbi_core.ml.disagreement import trained_ensemble

    layout, cfg, _ = steps.load_run(run)
    ensemble = trained_ensemble(layout, cfg, "alices", "theta")
    return {p: float(rms(ensemble.log_ratio(x, np.array(p))[0], exact.log_ratio(x, np.array(p)))) for p in points}


def _grid_rms(run: str, x: Any, exact: Any) -> tuple[float, dict[str, Any]]:
    """(RMS(learned - exact log r) at CORNER, the largest RMS over the GRID x GRID points and where it is) of the
    run's ALICES ensemble."""
    import numpy as np

    values = _rms_at(run, x, exact, [(a, b) for a in GRID for b in GRID])
    point = max(values, key=values.get)
    return values[CORNER], {"point": list(point), "rms": round(values[point], 4),
                            "median_rms": round(float(np.median(list(values.values()))), 4)}


def _events(n: int) -> str:
    """The cached run of n SM events (seed 2024): the source's, and the uniform designs'."""
    return _combined(str(CACHE / f"events-{n}"), [f"generation.events={n}", f"generation.shards={max(2, n // 25_000)}",
                                                 "generation.seed=2024"])


def disagreement(quick: bool, root: str) -> dict[str, Any]:
    import h5py
    import numpy as np

    from sbi_core import steps, storage
    from sbi_core.config import flow_mapping
    from sbi_core.data.format import WEIGHTS
    from sbi_core.data.training_sets import read_training_set
    from sbi_core.layout import RunLayout
    from sbi_core.ml.closure import ExactRatio

    n0, n_train, epochs, members, per_point, samples, from_source, source_points, budget, threshold = (
        B_QUICK if quick else B_FULL)
    training = _training(n_train, epochs, members)
    source = _trained(_events(n0), str(Path(root) / "source"), training)
    layout, cfg, plan = steps.load_run(source)
    with h5py.File(steps.run_events(layout, plan), "r") as f:
        exact = ExactRatio.from_events(cfg, f[WEIGHTS][:, : len(cfg.benchmarks)])
    x = read_training_set(layout.training_set("alices", "theta", "nominal", "test")).x.astype(np.float64)
    before, worst_before = _grid_rms(source, x, exact)
    t0 = time.perf_counter()
    res = _drive(str(Path(root) / "disagreement"), [
        f"run={source}", "kind=active_learning", "options.objective=disagreement", "options.method=alices",
        f"points_per_round={POINTS}", "options.search_rounds=2", "options.initial_points=6", f"budget={budget}",
        f"tolerance={threshold}", f"options.events_per_point={per_point}", f"options.samples_per_point={samples}",
        f"options.source_samples_per_point={from_source}", f"options.source_points={source_points}", "max_rounds=40",
        "seed=3",
        *(f"options.ranges.{p}=[{GRID[0]}, {GRID[-1]}]" for p in ("cW", "cHW"))])
    seconds = time.perf_counter() - t0
    after, worst_after = _grid_rms(res["final_run"], x, exact)
    uniform = []
    for factor in ((2,) if quick else (2, 4)):
        n = n0 * factor
        run = _trained(_events(n), str(Path(root) / f"uniform-{factor}x"), _training(n_train * factor, epochs, members))
        corner, worst = _grid_rms(run, x, exact)
        uniform.append({"events": n, "samples": n_train * factor, "rms_corner": round(corner, 4), "worst_on_grid": worst})
        if uniform[-1]["rms_corner"] <= after:
            break
    reached = next((u["events"] for u in uniform if u["rms_corner"] <= after), None)
    # the control: a uniform design with the study's events and as many samples as the study's final sets
    rows = storage.read_json(RunLayout(res["final_run"]).samples_manifest("alices"))["rows"]
    study_samples, n_all = rows["train"] + rows["val"], n0 + int(res["events"])
    same = _trained(_events(n_all), str(Path(root) / "uniform-same"), _training(study_samples, epochs, members))
    corner, worst = _grid_rms(same, x, exact)
    control = {"events": n_all, "samples": study_samples, "rms_corner": round(corner, 4), "worst_on_grid": worst}
    # the estimator's own limit at the grid's worst point after the study: networks trained there alone (theta0
    # fixed at it), on the control's events with 4x the source's samples
    at = tuple(worst_after["point"])
    values = flow_mapping({"cW": at[0], "cHW": at[1]})  # GRID points are (cW, cHW), the config's order
    fixed = ["training.samples.theta0=fixed", f"training.samples.theta_fixed={values}"]
    alone = _trained(_events(n_all), str(Path(root) / "at-worst-point"), _training(4 * n_train, epochs, members) + fixed)
    dedicated = {"point": list(at), "events": n_all, "samples": 4 * n_train,
                 "rms": round(_rms_at(alone, x, exact, [at])[at], 4)}
    fig = Figure(name="active_learning.disagreement", sizes={"source_events": n0, "train_samples": n_train,
                                                             "epochs": epochs, "members": members,
                                                             "events_per_point": per_point, "samples_per_point": samples,
                                                             "source_samples_per_point": from_source,
                                                             "source_points": source_points, "budget": budget},
                 ours=[after], baseline=[before], ours_label=f"RMS log r at {CORNER} after",
                 baseline_label="before", target="ours < 0.05",
                 extra={"worst_on_grid_before": worst_before, "worst_on_grid_after": worst_after,
                        "events_simulated": res["events"], "total_events": n0 + res["events"],
                        "study_samples": study_samples, "uniform_design": uniform,
                        "uniform_same_events_and_samples": control, "trained_at_worst_point_alone": dedicated,
                        "uniform_events_for_same_rms": reached if reached is not None else f"> {uniform[-1]['events']}",
                        "cycles": res["cycles"], "status": res["status"], "reason": res["reason"],
                        "seconds": round(seconds, 1)})
    return fig.record()


def run(quick: bool) -> list[dict[str, Any]]:
    import os

    os.environ.setdefault("SBI_TRACKING", "off")
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-al-") as root:
        for part in (excess, disagreement):
            rec = part(quick, root)
            emit(rec)
            records.append(rec)
    return records
