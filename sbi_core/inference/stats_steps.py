"""The statistics steps as plain functions: a run URI in, a small JSON-able summary out.

Order (each one `sbi-core` subcommand, `sbi_core.inference.stats_commands`), after `assemble`:
    scan --points A:B (mapped) -> limits;   toys --toys A:B (mapped);   then report.

- scan: profile points A..B-1 of the configured grid (`scan.ScanGrid`), on the observed dataset and on the
  expected (Asimov) one, each fit warm-started from its neighbour; one JSON block per task.
- limits: joins the blocks; Wilks intervals (crossings refined by root finding on the profile) and 2D
  contours, observed and expected; asymptotic CLs upper limits (q~) for `inference.limits`.
- toys: toys A..B-1 at the expected point (the true values, nu = 0), each fitted, with the profile Delta NLL at
  the generating point: coverage and Neyman critical values.
- report: results.json and the plots (`report.py`).

The expected point: the parameters' true values (nuisances 0) when every parameter of interest has one (the
closure tests' truth), else the reference benchmark. Expected results are the same fits on the Asimov dataset
there (`toys.ToyGenerator.asimov`, resampled from the run's own events, `pool.py`).
Every output is written atomically; a step refuses (InputError naming the file) when an input is missing.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["limits", "load_context", "report", "scan", "toys"]


@dataclass
class _Context:
    """What every statistics step reads: the run, its config, the dataset record and the global fit."""

    layout: Any
    cfg: Any
    plan: Any
    info: Any
    best: dict[str, Any]

    @property
    def inf(self) -> Any:
        return self.cfg.inference

    def fit_result(self) -> Any:
        from sbi_core.inference.fit import FitResult

        known = {f.name for f in fields(FitResult)}
        d = {k: v for k, v in self.best.items() if k in known}
        cov = d.get("covariance")
        d["covariance"] = None if cov is None else np.asarray(cov, dtype=np.float64)
        return FitResult(**d)

    def observed_model(self) -> Any:
        from sbi_core.inference.steps import load_model

        model = load_model(self.layout, self.cfg, self.info)
        if list(model.names) != list(self.best["names"]):
            raise InputError(f"{self.layout.fit} fits parameters {self.best['names']}, the likelihood arrays have "
                             f"{model.names}: rerun `sbi-core fit`")
        return model

    def pool(self) -> Any:
        from sbi_core.inference.pool import load_pool

        return load_pool(self.layout, self.cfg, self.plan)

    def generator(self, pool: Any) -> Any:
        from sbi_core.inference.toys import ToyGenerator

        return ToyGenerator(pool, luminosity=self.info.luminosity, interpolation=self.inf.interpolation,
                            normalization=self.normalization, schemes=self.inf.nuisance_interpolation)

    @property
    def normalization(self) -> str:
        return str(getattr(self.info, "normalization", "xsec"))

    def model(self, arrays: Any, pool: Any) -> Any:
        """The NLL of in-memory arrays (a toy, an Asimov dataset) with the run's settings."""
        from sbi_core.inference.steps import model_from_arrays

        return model_from_arrays(self.cfg, arrays, pool if self.normalization == "mc" else None,
                                 luminosity=self.info.luminosity)

    def grid(self) -> Any:
        """The configured scan grid around the global fit."""
        from sbi_core.inference.scan import ScanGrid

        return ScanGrid.from_config(self.cfg, self.best["values"], self.best["errors"])

    def expected_point(self) -> dict[str, float]:
        """The true values when every POI has one, else the reference benchmark; nuisances at 0."""
        names = list(self.best["names"])
        truth = [p.true_value for p in self.cfg.parameters]
        if all(t is not None for t in truth):
            pois = dict(zip(self.cfg.parameter_names, truth, strict=True))
        else:
            ref = self.cfg.benchmark_names.index(self.cfg.sampling_benchmark)
            pois = dict(zip(self.cfg.parameter_names, self.cfg.benchmark_matrix()[ref], strict=True))
        point = {n: float(pois.get(n, 0.0)) for n in names}
        point.update({k: float(v) for k, v in self.inf.fix.items()})
        return point


def _context(run_uri: str) -> _Context:
    from sbi_core.inference.datasets import DatasetInfo
    from sbi_core.runs import load_run

    layout, cfg, plan = load_run(run_uri)
    if not storage.exists(layout.fit):
        raise InputError(f"no fit result {layout.fit}: run `sbi-core fit` first")
    info = DatasetInfo.load(layout, cfg.inference.dataset.kind)
    return _Context(layout, cfg, plan, info, storage.read_json(layout.fit))


def load_context(run_uri: str) -> _Context:
    """A fitted run as the statistics read it: config, dataset, global fit; the observed model, the event pool,
    the toy generator and the NLL of any arrays with the run's settings (the excess objective uses it)."""
    return _context(run_uri)


def _profilers(ctx: _Context, observed: Any, asimov: Any, expected: dict[str, float]) -> tuple[Any, Any]:
    from sbi_core.inference.profile import Profiler

    inf = ctx.inf
    obs = Profiler(observed, fixed=inf.fix, bounds=inf.bounds, best=ctx.fit_result())
    exp = Profiler(asimov, fixed=inf.fix, bounds=inf.bounds, start=expected)
    return obs, exp


# ---------------------------------------------------------------------------------------------- scan
def scan(run_uri: str, points: str) -> dict[str, Any]:
    """Profile points A..B-1 of the configured grid, observed and expected; one block file."""
    from sbi_core.inference.scan import parse_range

    t0 = time.perf_counter()
    ctx = _context(run_uri)
    grid = ctx.grid()
    a, b = parse_range(points, grid.total, "points")
    pool = ctx.pool()
    gen = ctx.generator(pool)
    expected = ctx.expected_point()
    obs, exp = _profilers(ctx, ctx.observed_model(), ctx.model(gen.asimov(gen.vector(expected)), pool), expected)
    rows = []
    prev: dict[str, Any] = {}
    for k, s_idx, at in grid.points(a, b):
        same_scan = prev.get("scan") == s_idx
        po = obs.point(at, start={**prev["obs"].values, **at} if same_scan else None)
        pe = exp.point(at, start={**prev["exp"].values, **at} if same_scan else None)
        prev = {"scan": s_idx, "obs": po, "exp": pe}
        rows.append({"index": k, "scan": s_idx, "at": at, "observed": po.to_json(), "expected": pe.to_json()})
    record = {"range": [a, b], "total": grid.total, "fit_nll": ctx.best["nll"], "expected_point": expected,
              "best_nll": {"observed": obs.best.nll, "expected": exp.best.nll},
              "expected_fit": exp.best.to_json(), "points": rows}
    uri = ctx.layout.scan_block(a, b)
    storage.write_json(uri, record)
    n_bad = sum(not (r["observed"]["valid"] and r["expected"]["valid"]) for r in rows)
    if n_bad:
        log.warning("scan %s: %d of %d points have an invalid fit", points, n_bad, len(rows))
    return {"step": "scan", "run": ctx.layout.root, "points": f"{a}:{b}", "block": uri, "n_points": len(rows),
            "invalid": n_bad, "seconds": round(time.perf_counter() - t0, 3)}


def _read_blocks(ctx: _Context, total: int) -> list[dict[str, Any]]:
    from sbi_core.inference.blocks import scan_blocks

    out, missing = [], []
    for block in scan_blocks(ctx.cfg):
        a, b = (int(v) for v in block.split(":"))
        uri = ctx.layout.scan_block(a, b)
        if not storage.exists(uri):
            missing.append(block)
            continue
        rec = storage.read_json(uri)
        if rec.get("total") != total or rec.get("fit_nll") != ctx.best["nll"]:
            raise InputError(f"scan block {uri} belongs to another scan grid or fit ({rec.get('total')} points, the "
                             f"config has {total}): rerun `sbi-core scan --points {block}`")
        out.extend(rec["points"])
    if missing:
        raise InputError(f"limits: scan blocks {missing} are missing: run `sbi-core scan --points A:B` for them")
    return out


# ---------------------------------------------------------------------------------------------- limits
def limits(run_uri: str) -> dict[str, Any]:
    """Intervals and contours from the joined scan (observed and expected) and CLs upper limits: limits.json."""
    from sbi_core.inference.intervals import contours_from_grid, region_contains
    from sbi_core.inference.limits import AsymptoticCLs, pool_asimov
    from sbi_core.inference.profile import ProfilePoint

    t0 = time.perf_counter()
    ctx = _context(run_uri)
    inf = ctx.inf
    grid = ctx.grid()
    points = _read_blocks(ctx, grid.total)
    pool = ctx.pool()
    gen = ctx.generator(pool)
    expected = ctx.expected_point()
    observed_model = ctx.observed_model()
    obs, exp = _profilers(ctx, observed_model, ctx.model(gen.asimov(gen.vector(expected)), pool), expected)
    profs = {"observed": obs, "expected": exp}
    for kind, prof in profs.items():
        prof.remember([ProfilePoint.from_json(p[kind]) for p in points])
    truth = {p.name: p.true_value for p in ctx.cfg.parameters}
    scans = []
    for s_idx, sc in enumerate(grid.scans):
        entry: dict[str, Any] = {"parameters": list(sc.names), "axes": [ax.tolist() for ax in sc.axes]}
        for kind, prof in profs.items():
            nll = grid.curves({p["index"]: p[kind]["nll"] if p[kind]["valid"] else math.nan for p in points})[s_idx]
            dnll = nll - prof.nll_min
            res: dict[str, Any] = {"dnll": np.where(np.isfinite(dnll), dnll, None).tolist(),
                                   "nll_min": prof.nll_min, "best_improved": prof.best_improved,
                                   "best": {n: prof.best.values[n] for n in sc.names}}
            if len(sc.names) == 1:
                ok = np.isfinite(nll)
                res["intervals"] = [prof.interval(sc.names[0], level, scan=(sc.axes[0][ok], nll[ok])).to_json()
                                    for level in inf.confidence_levels]
            else:
                res["contours"] = [{"level": level,
                                    "lines": [line.tolist() for line in contours_from_grid(*sc.axes, dnll, level)]}
                                   for level in inf.confidence_levels]
                point = tuple(truth[n] for n in sc.names)
                if all(v is not None for v in point):
                    res["truth_inside"] = {str(level): region_contains(*sc.axes, dnll, level, point)  # type: ignore[arg-type]
                                           for level in inf.confidence_levels}
            entry[kind] = res
        scans.append(entry)
    upper = []
    for poi, null in _limit_parameters(ctx.cfg).items():
        hi = next(p.range[1] for p in ctx.cfg.parameters if p.name == poi)
        calc = AsymptoticCLs(observed_model, poi, pool_asimov(gen, lambda a: ctx.model(a, pool)), null=null,
                             upper=hi, fixed=inf.fix, bounds={k: v for k, v in inf.bounds.items() if k != poi},
                             start=ctx.best["values"])
        upper.append(calc.upper_limit(inf.cls_level).to_json())
    record = {"expected_point": expected, "expected_fit": exp.best.to_json(), "scans": scans, "limits": upper,
              "confidence_levels": list(inf.confidence_levels), "cls_level": inf.cls_level}
    storage.write_json(ctx.layout.limits, record)
    headline = {}
    for s in scans:
        if len(s["parameters"]) == 1:
            iv = s["observed"]["intervals"][0]
            headline[s["parameters"][0]] = {"level": iv["level"], "lo": iv["lo"], "hi": iv["hi"]}
    return {"step": "limits", "run": ctx.layout.root, "limits": ctx.layout.limits, "intervals": headline,
            "upper_limits": {u["poi"]: {"observed": u["observed"], "expected": u["expected"]["0"]} for u in upper},
            "seconds": round(time.perf_counter() - t0, 3)}


def _limit_parameters(cfg: Any) -> dict[str, float]:
    """POI -> null value of the configured CLs limits (`inference.limits`; default: every POI whose range holds
    0, null 0)."""
    given = getattr(cfg.inference, "limits", None)
    if given is not None:
        return {k: float(v) for k, v in given.items()}
    return {p.name: 0.0 for p in cfg.parameters if p.range[0] <= 0.0 < p.range[1] and p.name not in cfg.inference.fix}


# ---------------------------------------------------------------------------------------------- toys
def toy_tests(ctx: _Context) -> list[list[str]]:
    """The test statistics every toy records: each free POI alone, and all free POIs together (if several)."""
    free = [p for p in ctx.cfg.parameter_names if p not in ctx.inf.fix]
    return [[p] for p in free] + ([free] if len(free) > 1 else [])


def toys(run_uri: str, toys: str) -> dict[str, Any]:
    """Toys A..B-1 at the expected point, each fitted; one block file."""
    from sbi_core.inference.scan import parse_range
    from sbi_core.inference.toys import fit_toy

    t0 = time.perf_counter()
    ctx = _context(run_uri)
    t = ctx.inf.toys
    if t.n == 0:
        raise InputError("toys: inference.toys.n is 0 (no toys configured)")
    a, b = parse_range(toys, t.n, "toys")
    pool = ctx.pool()
    gen = ctx.generator(pool)
    expected = ctx.expected_point()
    p = gen.vector(expected)
    tests = toy_tests(ctx)
    fits = []
    for i in range(a, b):
        toy = gen.toy(p, t.seed, i)
        fits.append(fit_toy(ctx.model(toy, pool), i, int(round(toy.weight.sum())), expected, tests,
                            fixed=ctx.inf.fix, bounds=ctx.inf.bounds).to_json())
    uri = ctx.layout.toy_block(a, b)
    storage.write_json(uri, {"range": [a, b], "seed": t.seed, "point": expected, "tests": [",".join(x) for x in tests],
                             "expected_events": gen.expected_events(p), "toys": fits})
    n_bad = sum(not f["valid"] for f in fits)
    return {"step": "toys", "run": ctx.layout.root, "toys": f"{a}:{b}", "block": uri, "n_toys": len(fits),
            "invalid": n_bad, "seconds": round(time.perf_counter() - t0, 3)}


# ---------------------------------------------------------------------------------------------- report
def report(run_uri: str) -> dict[str, Any]:
    """results.json and PNG plots from everything the inference steps wrote (see `report.py`)."""
    from sbi_core.inference import report as rep

    t0 = time.perf_counter()
    ctx = _context(run_uri)
    layout = ctx.layout
    hessian = storage.read_json(layout.hessian) if storage.exists(layout.hessian) else None
    lim = storage.read_json(layout.limits) if storage.exists(layout.limits) else None
    toy_summary = _toy_summary(ctx)
    results = rep.build_results(ctx.cfg, ctx.best, hessian, lim, toy_summary, dataset=ctx.info.to_json())
    if ctx.best.get("bootstrap_members"):
        from sbi_core.inference.bootstrap import summary

        boot = summary(layout, ctx.cfg, int(ctx.best["bootstrap_members"]))
        if boot:
            results["method_uncertainty"] = rep.method_uncertainty(boot, results)
    plots = {**rep.make_plots(results, lim, toy_summary, layout.plot), **rep.bootstrap_plots(results, layout.plot)}
    storage.write_json(layout.results, results)
    try:
        from sbi_core.tracking import log_fit  # learn-eval's MLflow helper, when present
    except ImportError:
        log_fit = None
    if log_fit is not None:
        try:
            log_fit(layout, ctx.cfg, results, [layout.results, *plots.values()])
        except Exception:  # noqa: BLE001 - tracking must never fail a step; the files are the record
            log.warning("MLflow logging of the fit failed", exc_info=True)
    return {"step": "report", "run": layout.root, "results": layout.results, "plots": plots,
            **rep.headline(results), "seconds": round(time.perf_counter() - t0, 3)}


def _toy_summary(ctx: _Context) -> dict[str, Any] | None:
    """Coverage and critical values of every configured test from the toy blocks (None without toys)."""
    from sbi_core.inference.blocks import toy_blocks
    from sbi_core.inference.toys import ToyFit, coverage, critical_value

    blocks = toy_blocks(ctx.cfg)
    if not blocks:
        return None
    fits, missing, point = [], [], None
    for block in blocks:
        a, b = (int(v) for v in block.split(":"))
        uri = ctx.layout.toy_block(a, b)
        if not storage.exists(uri):
            missing.append(block)
            continue
        rec = storage.read_json(uri)
        point = rec["point"]
        fits.extend(ToyFit.from_json(f) for f in rec["toys"])
    if missing:
        log.warning("report: toy blocks %s are missing; the toy summary uses the %d toys present", missing, len(fits))
    tests = [",".join(t) for t in toy_tests(ctx)]
    levels = list(ctx.inf.confidence_levels)
    return {
        "n": len(fits), "valid": sum(f.valid for f in fits), "missing_blocks": missing, "point": point,
        "tests": {key: {"coverage": [coverage(fits, key, lv) for lv in levels],
                        "critical_values": [critical_value(fits, key, lv) for lv in levels]} for key in tests},
        "dnll": {key: [f.dnll[key] for f in fits if f.valid and key in f.dnll] for key in tests},
        "values": {n: [f.values[n] for f in fits if f.valid] for n in ctx.best["names"]},
    }
