"""toy_limits: the refined toy CLs limit against a brute-force fine grid with many toys, on the benchmark model.

The run: configs/benchmark.yaml, a small run (6000 events), luminosity 60/pb (about 400 events a toy), pseudo-data at the config's true values, the exact likelihood arrays; the limit is on cW with
cHW, lumi and energy_scale profiled (4 parameters in every fit).
- Ours: a `toy_limits` study (coarse grid of 6 values, 100 toys of each hypothesis at a new value, 3 new
  values a round, doubling where CLs straddles 0.05) driven round after round until the limit is located to
  the tolerance (twice its error within it).
- Baseline: the brute force, a fine grid over the whole range (0, 1] of cW, every value with the same large
  number of toys, in one round of the same study machinery (same toys, fits and estimator: only the design
  differs).
Sizes: quick, tolerance 0.06 and a brute-force grid of 20 values x 150 toys of each hypothesis; full, tolerance
0.02 and 40 values x 300 toys.
Printed: both limits with their Monte Carlo errors, whether they agree within two combined errors, both toy
totals and their ratio (target <= 1/3), and the asymptotic limit of the same model. Work items run in 2
processes, as mapped tasks would. Only toy counts are compared, not times: a toy costs the same in both.
"""

from __future__ import annotations

import math
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import emit

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "benchmark.yaml"
SIZES = {
    True: {"events": 6000, "tolerance": 0.06, "fine": 20, "fine_toys": 150},
    False: {"events": 6000, "tolerance": 0.02, "fine": 40, "fine_toys": 300},
}
LUMINOSITY = 60.0
WORKERS = 2


def _run(root: Path, events: int) -> str:
    """A configured, generated, combined run with its dataset and exact likelihood arrays."""
    from sbi_core import steps
    from sbi_core.inference import steps as inference

    run = str(root / "run")
    shards = 2
    summary = steps.configure(str(CONFIG), run, [f"generation.events={events}", f"generation.shards={shards}",
                                                 "generation.shards_per_group=2", "generation.seed=11",
                                                 f"inference.luminosity={LUMINOSITY}"])
    steps.generate(run, summary["shards"])
    steps.combine(run, 0)
    steps.combine(run, None)
    info = inference.dataset(run)
    inference.likelihood(run, [int(b) for b in info["likelihood_batches"]])
    inference.likelihood_join(run)
    inference.fit(run)
    return run


def _work_one(args: tuple[str, int, str]) -> None:
    from sbi_core.studies import steps

    steps.work(args[0], args[1], [args[2]])


def _drive(uri: str, pool: ProcessPoolExecutor) -> dict[str, Any]:
    """Every round of a study, its work items spread over the pool, then its results."""
    from sbi_core.studies import steps
    from sbi_core.studies.layout import StudyLayout

    state = steps.read_state(StudyLayout(uri))
    while state.running:
        planned = steps.plan(uri, state.round)
        list(pool.map(_work_one, [(uri, state.round, item) for item in planned["items"]]))
        steps.aggregate(uri, state.round)
        state = steps.read_state(StudyLayout(uri))
    return steps.finish(uri)


def run(quick: bool) -> list[dict[str, Any]]:
    import json

    from sbi_core import storage
    from sbi_core.studies import steps

    size = SIZES[quick]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-toy-limits-") as tmp:
        root = Path(tmp)
        run_uri = _run(root, size["events"])
        common = ["kind=toy_limits", f"run={run_uri}", "seed=7", "options.poi=cW", "options.toys_per_task=50",
                  "max_rounds=30", "budget=10000000"]
        refined = str(root / "refined")
        steps.create(refined, None, [*common, f"tolerance={size['tolerance']}", "points_per_round=3",
                                     "options.grid_points=6", "options.toys=100", "options.max_toys=6400"])
        fine = [round((k + 1) / size["fine"], 6) for k in range(size["fine"])]
        brute = str(root / "brute")
        steps.create(brute, None, [*common, "tolerance=1e-6", "max_rounds=1", f"options.grid={fine}",
                                   f"options.toys={size['fine_toys']}", f"options.max_toys={size['fine_toys']}"])
        import multiprocessing as mp

        with ProcessPoolExecutor(WORKERS, mp_context=mp.get_context("spawn")) as pool:
            t_ref = time.perf_counter()
            _drive(refined, pool)
            t_ref = time.perf_counter() - t_ref
            t_bf = time.perf_counter()
            _drive(brute, pool)
            t_bf = time.perf_counter() - t_bf
        ours = json.loads(storage.read_text(str(root / "refined" / "results.json")))
        base = json.loads(storage.read_text(str(root / "brute" / "results.json")))
    lo, bo = ours["limit"], base["limit"]
    combined = math.hypot(lo["error"] or math.inf, bo["error"] or math.inf)
    record = {
        "name": "toy_limits refined vs brute-force grid",
        "sizes": {"events": size["events"], "luminosity": LUMINOSITY, "poi": "cW", "profiled": "cHW,lumi,energy_scale",
                  "tolerance": size["tolerance"], "brute_grid": size["fine"], "brute_toys_per_value": size["fine_toys"]},
        "ours": {"label": "refined toys", "min": lo["toys"], "median": lo["toys"], "n": 1},
        "baseline": {"label": "brute-force toys", "min": bo["toys"], "median": bo["toys"], "n": 1},
        "ratio": round(lo["toys"] / bo["toys"], 3),
        "target": "<= 0.333 (3x fewer toys), limits within 2 combined MC errors",
        "refined_limit": round(lo["value"], 5), "refined_error": round(lo["error"], 5),
        "refined_rounds": ours["rounds"], "refined_values": len(ours["points"]), "refined_reason": ours["reason"],
        "brute_limit": round(bo["value"], 5), "brute_error": round(bo["error"], 5),
        "difference_in_errors": round(abs(lo["value"] - bo["value"]) / combined, 2),
        "agree": abs(lo["value"] - bo["value"]) <= 2 * combined,
        "toys_ratio_brute_over_refined": round(bo["toys"] / lo["toys"], 2),
        "asymptotic_observed": round(ours["asymptotic"]["observed"], 5),
        "asymptotic_expected": round(ours["asymptotic"]["expected"]["0"], 5),
        "seconds": {"refined": round(t_ref, 1), "brute": round(t_bf, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    emit(record)
    return [record]
