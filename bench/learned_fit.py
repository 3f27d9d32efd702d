"""learned_fit: the fit through each learned likelihood against the exact one, on the benchmark model.

Generate (or reuse bench.learn's cached) events, train every log-ratio method (benchmark_ratio, ALICES, ALICE,
RASCAL, CARL, ROLR) and, in a second run derived from the same events, SALLY's score network (networks in
parallel processes of one thread, as mapped train tasks run), then the pipeline's own steps: a pseudo dataset at
the truth (cW 0.3, cHW -0.2, L = 200/pb), and the `fit` step with source exact and `inference.compare` = every
ratio method (`sbi_core/inference/compare.py`); the SALLY run fits the same dataset with source sally (its score
histograms, `sbi_core/inference/sally.py`). Per method and parameter of interest: ratio = learned 68% width / exact
68% width (2 x Hesse error each; goal within 10% for ALICES and benchmark_ratio), the shift of the learned best fit
in exact errors, and the coverage of the learned 68% interval (best fit +- Hesse error) of the truth over toys
drawn from the exact model (`toys.ToyGenerator` on the exact pool, aux drawn), with its binomial error.

How the toys are fitted (what each coverage row rests on):
- benchmark_ratio: its per-event columns select the toy's events; the MC normalisation is the run's events.
- ALICES, ALICE, RASCAL, CARL, ROLR: the network on the toy's events, log Z(theta) from a Chebyshev table of the
  run's events over the parameter ranges (`sbi_core/inference/normalization_table.py`; the row gives its degree
  and its largest log Z error at random points, and the toy NLL error it bounds); the fits are bounded to the
  table's box. Without it each toy fit evaluates the network on every run event at every call (hours per method).
- SALLY: the toy's events binned with the run's binning (the score network once on the run's events), the run's
  MC histograms and staterror nuisances (their aux left at 0: coverage given the run's MC).
Methods run in parallel processes (one per core). --quick: 20k events, demo-size training, 40 toys for
benchmark_ratio, ALICES and SALLY only; full: 200k events, the shipped training, 500 toys per method."""

from __future__ import annotations

import math
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.common import emit
from bench.learn import _events, _train_all

METHODS = ["benchmark_ratio", "alices", "alice", "rascal", "carl", "rolr"]
SALLY = "sally"
TRAINING = {
    True: ["training.members=2", "training.samples.train=10000", "training.samples.test=2000",
           "training.optimizer.epochs=10", "training.optimizer.learning_rate=0.01",
           "training.optimizer.learning_rate_final=0.001"],
    False: ["training.members=3", "training.samples.train=100000", "training.samples.test=20000",
            "training.optimizer.epochs=30", "training.optimizer.learning_rate=0.003"],
}
SIZES = {True: (20_000, 2, 40, ["benchmark_ratio", "alices", SALLY]), False: (200_000, 8, 500, [*METHODS, SALLY])}
TABLE_DEGREE = {True: 10, False: 16}
COMMON = [f"training.methods=[{','.join(METHODS)}]", "training.variations=false", "training.device=cpu",
          f"inference.compare=[{','.join(METHODS)}]"]
SALLY_SETS = ["training.methods=[sally]", "training.variations=false", "training.device=cpu",
              "inference.source=sally"]
TOY_SEED = 7


def _toy_objectives(run: str, method: str, quick: bool, sally_run: str | None = None) -> Any:
    """(generator, truth vector, names, toy rows/counts/aux -> the learned NLL of that toy, fit bounds, notes)."""
    import numpy as np

    from sbi_core.inference import compare, steps
    from sbi_core.inference.datasets import MC_PART, read_events
    from sbi_core.inference.stats_steps import load_context

    ctx = load_context(run)
    pool = ctx.pool()  # the exact model's arrays of the run's events: the toys' source
    gen = ctx.generator(pool)
    truth = gen.vector(ctx.expected_point())
    inf = ctx.cfg.inference
    if method == SALLY:
        build, notes = _sally_objective(run, sally_run, ctx)
        return gen, np.asarray(truth), list(ctx.best["names"]), build, None, notes
    variant = compare._variant(ctx.cfg, source="learned", estimator=method)
    _, mc = compare._arrays(ctx.layout, variant, ctx.info)  # the same events, in the pool's order
    if method == "benchmark_ratio":
        def build(rows: Any, counts: Any, aux: Any) -> Any:
            return steps.model_from_arrays(variant, replace(mc.select(rows), weight=counts, aux=aux), mc,
                                           luminosity=ctx.info.luminosity)
        return gen, np.asarray(truth), list(ctx.best["names"]), build, None, {}
    from sbi_core.inference.normalization_table import build_table
    from sbi_core.inference.parametrised import ParametrisedNLL, exported_ensemble, load_exports

    x = read_events(ctx.info, 0, ctx.info.n_mc, MC_PART)["observations"]
    fn, params = exported_ensemble(load_exports(ctx.layout, method)[1], x.shape[1], len(ctx.cfg.parameter_names))
    lo, hi = zip(*(p.range for p in ctx.cfg.parameters), strict=True)
    t0 = time.perf_counter()
    table = build_table(fn, params, x, mc.weight, lo, hi, degree=TABLE_DEGREE[quick], checks=32)
    notes = {"table_degree": TABLE_DEGREE[quick], "table_max_log_z_error": float(f"{table.max_error:.2e}"),
             "table_nll_error_bound": float(f"{table.max_error * ctx.info.extra['expected_events']:.2e}"),
             "table_seconds": round(time.perf_counter() - t0, 1)}

    def build(rows: Any, counts: Any, aux: Any) -> Any:
        return ParametrisedNLL(fn, params, x[rows], replace(mc.select(rows), weight=counts, aux=aux),
                               luminosity=ctx.info.luminosity, table=table, interpolation=inf.interpolation,
                               schemes=inf.nuisance_interpolation)
    bounds = {p.name: tuple(p.range) for p in ctx.cfg.parameters}
    return gen, np.asarray(truth), list(ctx.best["names"]), build, bounds, notes


def _sally_objective(run: str, sally_run: str, ctx: Any) -> tuple[Any, dict[str, Any]]:
    """toy rows/counts/aux -> SALLY's binned NLL of the toy: its events binned with the SALLY run's binning."""
    import numpy as np

    from sbi_core.inference import sally, steps
    from sbi_core.inference.datasets import MC_PART, DatasetInfo, event_header, read_events
    from sbi_core.inference.exact import model_header
    from sbi_core.runs import load_run

    layout, cfg, plan = load_run(sally_run)
    info = DatasetInfo.load(layout, cfg.inference.dataset.kind)
    binning = sally.Binning.from_json(info.extra[sally.SALLY])
    score = sally.score_function(layout, cfg)
    mc = sally._summed([sally._fill(cfg, info, b, binning, score) for b in range(info.n_batches)
                        if info.batch(b)[0] == MC_PART])
    x = read_events(ctx.info, 0, ctx.info.n_mc, MC_PART)["observations"]  # the exact pool's events, in its order
    bins = binning.index(sally._chunked_scores(score, x, x.shape[0], len(cfg.parameters)))
    h = event_header(str(info.mc_events))
    header = model_header(cfg, info, h["components"], h["matrix"], sally.SALLY)

    def build(rows: Any, counts: Any, aux: Any) -> Any:
        hist = np.bincount(bins[rows], weights=counts, minlength=binning.n_bins)
        data, mc_arrays = sally.binned_arrays(cfg, header, hist, mc.sums, mc.sumw2,
                                              staterror=cfg.inference.sally.staterror)
        full_aux = np.zeros(len(data.nuisance))
        full_aux[: len(aux)] = aux  # the exact model's nuisances first, then the bins' staterrors at 0
        return steps.model_from_arrays(cfg, replace(data, aux=full_aux), mc_arrays, luminosity=info.luminosity)
    return build, {"bins": binning.n_bins, "staterror_aux": "0 (coverage given the run's MC)"}


def _coverage(run: str, method: str, n_toys: int, pois: list[str], quick: bool,
              sally_run: str | None = None) -> dict[str, Any]:
    """Share of toys (exact model at the truth) whose learned best fit +- Hesse error holds the truth, per POI."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from sbi_core.inference.fit import minimize
    from sbi_core.inference.toys import toy_rng

    t0 = time.perf_counter()
    gen, truth, names, build, bounds, notes = _toy_objectives(run, method, quick, sally_run)
    covered = {p: 0 for p in pois}
    valid = 0
    for i in range(n_toys):
        rng = toy_rng(TOY_SEED, i)
        rows, counts = gen.draw(truth, rng)
        aux = gen.draw_aux(truth, rng)
        model = build(rows, counts, aux)
        start = dict(zip(names, truth, strict=True))
        start.update({n: 0.0 for n in model.names if n not in start})
        res = minimize(model, start={n: start[n] for n in model.names}, bounds=bounds)
        if not res.valid:
            continue
        valid += 1
        for p in pois:
            covered[p] += abs(res.values[p] - truth[names.index(p)]) <= res.errors[p]
    out: dict[str, Any] = {"_notes": {**notes, "toy_seconds": round(time.perf_counter() - t0, 1)}}
    for p in pois:
        c = covered[p] / valid if valid else float("nan")
        out[p] = {"coverage_68": round(c, 3), "binomial_error": round(math.sqrt(c * (1 - c) / valid), 3) if valid
                  else None, "toys_valid": valid, "toys": n_toys}
    return out


def _sally_fit(run: str, sally_run: str, ratio_dataset: dict[str, Any]) -> dict[str, Any]:
    """The SALLY run's global fit of its dataset (the same pseudo-data: same events, seed and luminosity; checked
    on its size), as compare's rows against the ratio run's exact fit."""
    from types import SimpleNamespace

    from sbi_core import storage
    from sbi_core.inference import compare, steps
    from sbi_core.runs import load_run

    ds = steps.dataset(sally_run)
    steps.likelihood(sally_run, [int(b) for b in ds["likelihood_batches"]])
    steps.likelihood_join(sally_run)
    fit = steps.fit(sally_run)
    exact = storage.read_json(load_run(run)[0].fit)["learned_vs_exact"]["exact"]
    pois = [p for p in load_run(sally_run)[1].parameter_names if exact["errors"].get(p, 0) > 0]
    rows = compare.compare_rows(SimpleNamespace(**fit), SimpleNamespace(**exact), pois)
    return {"valid": fit["valid"], "parameters": rows,
            "same_dataset": ds["n_events"] == ratio_dataset["n_events"]}


def run(quick: bool) -> list[dict[str, Any]]:
    from sbi_core import steps as run_steps
    from sbi_core.inference import steps
    from sbi_core.ml import samples
    from sbi_core.ml.ensemble import build_ensembles

    n_events, shards, n_toys, toy_methods = SIZES[quick]
    t0 = time.perf_counter()
    source = _events(n_events, shards)
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-learned-fit-") as tmp:
        run_uri, sally_uri = str(Path(tmp) / "run"), str(Path(tmp) / "sally")
        run_steps.derive(source, run_uri, COMMON + TRAINING[quick])
        run_steps.derive(source, sally_uri, SALLY_SETS + TRAINING[quick])
        for method in METHODS:
            samples.sample(run_uri, method)
        samples.sample(sally_uri, SALLY)
        t1 = time.perf_counter()
        _, workers = _train_all([run_uri, sally_uri])
        t_train = time.perf_counter() - t1
        build_ensembles(run_uri)
        build_ensembles(sally_uri)
        ds = steps.dataset(run_uri)
        steps.likelihood(run_uri, [int(b) for b in ds["likelihood_batches"]])
        steps.likelihood_join(run_uri)
        t2 = time.perf_counter()
        fit = steps.fit(run_uri)
        t_fit = time.perf_counter() - t2
        cmp = {**fit["learned_vs_exact"]["methods"], SALLY: _sally_fit(run_uri, sally_uri, ds)}
        training = dict(item.split("=", 1) for item in TRAINING[quick])
        sizes = {"events": n_events, "dataset_events": ds["n_events"],
                 "train_samples": int(training["training.samples.train"]),
                 "epochs": int(training["training.optimizer.epochs"])}
        t3 = time.perf_counter()
        jobs = {m: (run_uri, m, n_toys, list(cmp[m]["parameters"]), quick, sally_uri) for m in toy_methods}
        with ProcessPoolExecutor(max(1, min(len(jobs), os.cpu_count() or 1)), mp_context=get_context("spawn")) as px:
            futures = {m: px.submit(_coverage, *args) for m, args in jobs.items()}
            coverage = {m: f.result() for m, f in futures.items()}
        t_toys = time.perf_counter() - t3
        for method in [*METHODS, SALLY]:
            rows = cmp[method]["parameters"]
            cov = coverage.get(method, {})
            notes = cov.get("_notes", {})
            for poi, r in rows.items():
                record = {"name": f"learned_fit.{method}.{poi}", "sizes": sizes,
                          "ratio": round(r["width_ratio"], 3), "target": "width ratio within 10% (alices, "
                          "benchmark_ratio)", "learned": round(r["learned"], 4), "exact": round(r["exact"], 4),
                          "learned_error": round(r["learned_width_68"] / 2, 4),
                          "exact_error": round(r["exact_width_68"] / 2, 4),
                          "shift_in_exact_errors": round(r["shift_in_exact_errors"], 3),
                          "fit_valid": cmp[method]["valid"], **cov.get(poi, {}), **notes}
                if method == SALLY:
                    record["same_dataset"] = cmp[method]["same_dataset"]
                emit(record)
                records.append(record)
        timing = {"name": "learned_fit.seconds", "sizes": sizes, "total": round(time.perf_counter() - t0, 1),
                  "train": round(t_train, 1), "train_processes": workers, "fit_and_compare": round(t_fit, 1),
                  "toys": round(t_toys, 1)}
        emit(timing)
        records.append(timing)
    return records
