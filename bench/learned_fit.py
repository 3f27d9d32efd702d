"""learned_fit: the fit through each learned likelihood against the exact one, on the benchmark model.

Generate (or reuse bench.learn's cached) events, train every log-ratio method (benchmark_ratio, ALICES, ALICE,
RASCAL, CARL, ROLR; networks in parallel processes of one thread, as mapped train tasks run), then the pipeline's
own steps: a pseudo dataset at the truth (cW 0.3, cHW -0.2, L = 200/pb), and the `fit` step with source exact
and `inference.compare` = every method (`sbi_core/inference/compare.py`). Per method and parameter of interest:
ratio = learned 68% width / exact 68% width (2 x Hesse error each; goal within 10% for ALICES and
benchmark_ratio), the shift of the learned best fit in exact errors, and the coverage of the learned 68% interval
(best fit +- Hesse error) of the truth over toys drawn from the exact model (`toys.ToyGenerator` on the exact
pool, aux drawn), with its binomial error. --quick: 20k events, demo-size training, 40 toys for benchmark_ratio
and ALICES only; full: 200k events, the shipped training, 500 toys per method. SALLY is not a ratio (its binned
fit is another source)."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import emit
from bench.learn import _events, _train_all

METHODS = ["benchmark_ratio", "alices", "alice", "rascal", "carl", "rolr"]
TRAINING = {
    True: ["training.members=2", "training.samples.train=10000", "training.samples.test=2000",
           "training.optimizer.epochs=10", "training.optimizer.learning_rate=0.01",
           "training.optimizer.learning_rate_final=0.001"],
    False: ["training.members=3", "training.samples.train=100000", "training.samples.test=20000",
            "training.optimizer.epochs=30", "training.optimizer.learning_rate=0.003"],
}
SIZES = {True: (20_000, 2, 40, ["benchmark_ratio", "alices"]), False: (200_000, 8, 500, METHODS)}
COMMON = [f"training.methods=[{','.join(METHODS)}]", "training.variations=false", "training.device=cpu",
          f"inference.compare=[{','.join(METHODS)}]"]


def _toy_objectives(run: str, method: str) -> Any:
    """(generator, truth vector, names, a function toy rows/counts/aux -> the learned NLL of that toy)."""
    import numpy as np

    from sbi_core.inference import compare, steps
    from sbi_core.inference.datasets import MC_PART, read_events
    from sbi_core.inference.parametrised import ParametrisedNLL, exported_ensemble, load_exports
    from sbi_core.inference.stats_steps import load_context

    ctx = load_context(run)
    pool = ctx.pool()  # the exact model's arrays of the run's events: the toys' source
    gen = ctx.generator(pool)
    truth = gen.vector(ctx.expected_point())
    variant = compare._variant(ctx.cfg, source="learned", estimator=method)
    _, mc = compare._arrays(ctx.layout, variant, ctx.info)  # the same events, in the pool's order
    inf = ctx.cfg.inference
    if method == "benchmark_ratio":
        def build(rows: Any, counts: Any, aux: Any) -> Any:
            return steps.model_from_arrays(variant, replace(mc.select(rows), weight=counts, aux=aux), mc,
                                           luminosity=ctx.info.luminosity)
    else:
        x = read_events(ctx.info, 0, ctx.info.n_mc, MC_PART)["observations"]
        fn, params = exported_ensemble(load_exports(ctx.layout, method)[1], x.shape[1], len(ctx.cfg.parameter_names))

        def build(rows: Any, counts: Any, aux: Any) -> Any:
            return ParametrisedNLL(fn, params, x[rows], replace(mc.select(rows), weight=counts, aux=aux),
                                   luminosity=ctx.info.luminosity, normalization=(x, mc),
                                   interpolation=inf.interpolation, schemes=inf.nuisance_interpolation)
    return gen, np.asarray(truth), list(ctx.best["names"]), build


def _coverage(run: str, method: str, n_toys: int, pois: list[str]) -> dict[str, Any]:
    """Share of toys (exact model at the truth) whose learned best fit +- Hesse error holds the truth, per POI."""
    from sbi_core.inference.fit import minimize
    from sbi_core.inference.toys import toy_rng

    gen, truth, names, build = _toy_objectives(run, method)
    covered = {p: 0 for p in pois}
    valid = 0
    for i in range(n_toys):
        rng = toy_rng(7, i)
        rows, counts = gen.draw(truth, rng)
        aux = gen.draw_aux(truth, rng)
        res = minimize(build(rows, counts, aux), start=dict(zip(names, truth, strict=True)))
        if not res.valid:
            continue
        valid += 1
        for p in pois:
            covered[p] += abs(res.values[p] - truth[names.index(p)]) <= res.errors[p]
    out = {}
    for p in pois:
        c = covered[p] / valid if valid else float("nan")
        out[p] = {"coverage_68": round(c, 3), "binomial_error": round(math.sqrt(c * (1 - c) / valid), 3) if valid
                  else None, "toys_valid": valid, "toys": n_toys}
    return out


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
        run_uri = str(Path(tmp) / "run")
        run_steps.derive(source, run_uri, COMMON + TRAINING[quick])
        for method in METHODS:
            samples.sample(run_uri, method)
        t1 = time.perf_counter()
        _, workers = _train_all([run_uri])
        t_train = time.perf_counter() - t1
        build_ensembles(run_uri)
        ds = steps.dataset(run_uri)
        steps.likelihood(run_uri, [int(b) for b in ds["likelihood_batches"]])
        steps.likelihood_join(run_uri)
        t2 = time.perf_counter()
        fit = steps.fit(run_uri)
        t_fit = time.perf_counter() - t2
        cmp = fit["learned_vs_exact"]
        training = dict(item.split("=", 1) for item in TRAINING[quick])
        sizes = {"events": n_events, "dataset_events": ds["n_events"],
                 "train_samples": int(training["training.samples.train"]),
                 "epochs": int(training["training.optimizer.epochs"])}
        for method in METHODS:
            rows = cmp["methods"][method]["parameters"]
            cov = _coverage(run_uri, method, n_toys, list(rows)) if method in toy_methods else {}
            for poi, r in rows.items():
                record = {"name": f"learned_fit.{method}.{poi}", "sizes": sizes,
                          "ratio": round(r["width_ratio"], 3), "target": "width ratio within 10% (alices, "
                          "benchmark_ratio)", "learned": round(r["learned"], 4), "exact": round(r["exact"], 4),
                          "learned_error": round(r["learned_width_68"] / 2, 4),
                          "exact_error": round(r["exact_width_68"] / 2, 4),
                          "shift_in_exact_errors": round(r["shift_in_exact_errors"], 3),
                          "fit_valid": cmp["methods"][method]["valid"], **cov.get(poi, {})}
                emit(record)
                records.append(record)
        timing = {"name": "learned_fit.seconds", "sizes": sizes, "total": round(time.perf_counter() - t0, 1),
                  "train": round(t_train, 1), "train_processes": workers, "fit_and_compare": round(t_fit, 1)}
        emit(timing)
        records.append(timing)
    return records
