"""The `toy_limits` study kind: a frequentist CLs upper limit from toys (q~_mu), located by grid refinement.

Round 1 tests a coarse grid of values of the parameter of interest with `toys` toys of each hypothesis per
value (work items = values x toy batches of `toys_per_task`). Each aggregate adds the batches' counts up
(CLs and its Monte Carlo error per value), locates the crossing of CLs with 1 - CL (`cls_scan.locate_limit`)
and refines (`cls_scan.refine`): new values around the crossing, more toys where a value's error straddles
1 - CL, nothing more where a value is clearly excluded or allowed. The study finishes when the limit is
located to `tolerance` (in units of the parameter): twice its error (Monte Carlo and the fit's, together)
within it. It also ends when no new value and no more toys can help (every value near the limit at
`max_toys`, new values closer than a quarter of the tolerance to tested ones), or at a bound of the study. The results hold the
limit and its error, every tested value's CLs +- error, a plot, and the asymptotic limit of the same model.

Models (`options.model`):
- `run`: the study's source run: the observed data's likelihood arrays (its `inference.dataset`, the exact or
  learned or sally source), toys resampled from the run's events (`toys.ToyGenerator`), the run's fixed parameters and
  bounds; the other parameters (other POIs, nuisances) are profiled. The run needs `sbi-core dataset`,
  `likelihood` and `likelihood --join` done.
- `counting`: a one-bin counting experiment (`inference.counting`), no run needed: its exact CLs is known.
Both go through the same `calculators.ToyCalculator`: a model of your own only needs to be a `ToyModel`.
The toys of the value mu are drawn at the conditional fit of the observed data with the parameter held at mu
(signal+background) and at its null value (background-only), as RooStats and pyhf do. Toy i of value k and
hypothesis h draws from `calculators.toy_seed(study seed, k, h)`: any batch can be recomputed alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from sbi_core import storage
from sbi_core.config_base import ConfigSection
from sbi_core.studies.cls_scan import LimitEstimate, Refinement, ScanPoint, finite, locate_limit, refine
from sbi_core.studies.kinds import PointFailed
from sbi_core.studies.state import Decision, StudyState, WorkItem, WorkResult
from sbi_core.studies.study import Study

__all__ = ["KIND", "LOCATED_SIGMAS", "CountingOptions", "ToyLimitOptions", "ToyLimits"]

#: The limit is located to the tolerance when this many of its errors fit within it: limit +- tolerance then
#: holds the limit of infinitely many toys with ~95% probability.
LOCATED_SIGMAS = 2.0


class CountingOptions(ConfigSection):
    """A one-bin counting experiment: the observed count, the expected signal (at mu = 1) and background."""

    observed: int = Field(ge=0, le=10**9, title="Observed count", description="Events observed.")
    signal: float = Field(gt=0, le=1e12, title="Signal", description="Expected signal events at mu = 1.")
    background: float = Field(gt=0, le=1e12, title="Background", description="Expected background events.")


class ToyLimitOptions(ConfigSection):
    """Settings of a toy CLs upper-limit study."""

    model: Literal["run", "counting"] = Field(default="run", title="Model", description="run: the source run's "
                                              "likelihood and events; counting: the one-bin counting experiment "
                                              "of `counting` (no run).")
    poi: str | None = Field(default=None, title="Parameter of interest", description="The parameter the limit is "
                            "on (a parameter of interest of the run; mu for a counting experiment).")
    null: float = Field(default=0.0, ge=-1e12, le=1e12, title="Null value", description="Its background-only "
                        "value; it is bounded below there (q~ test statistic).")
    level: float = Field(default=0.95, gt=0, lt=1, title="Confidence level", description="CL of the upper limit "
                         "(CLs = 1 - level).")
    upper: float | None = Field(default=None, ge=-1e12, le=1e12, title="Upper end", description="The largest "
                                "value tested (default: the end of the parameter's range in the run's config).")
    grid: list[float] | None = Field(default=None, min_length=1, max_length=1000, title="Coarse grid",
                                     description="Values tested in round 1 (default: grid_points values evenly "
                                     "spaced above the null value up to the upper end).")
    grid_points: int = Field(default=6, ge=1, le=1000, title="Grid points",
                             description="Values of the default coarse grid.")
    toys: int = Field(default=200, ge=10, le=10**6, title="Toys per new value",
                      description="Toys of each hypothesis (s+b and b-only) at a newly tested value.")
    toys_per_task: int = Field(default=100, ge=1, le=10**6, title="Toys per task",
                               description="Toys of each hypothesis one mapped task computes.")
    max_toys: int = Field(default=3200, ge=10, le=10**7, title="Most toys per value",
                          description="Cap on the toys of each hypothesis at one value (toys double where the "
                          "CLs error straddles 1 - CL).")
    straddle: float = Field(default=2.0, gt=0, le=10, title="Straddle (sigmas)",
                            description="A value gets more toys when |CLs - (1 - CL)| is below this many MC errors.")
    source: Literal["exact", "learned", "sally"] | None = Field(default=None, title="Likelihood source",
                                                       description="Override of the run's inference.source.")
    counting: CountingOptions | None = Field(default=None, title="Counting experiment",
                                             description="For model counting: observed, signal, background.")

    @model_validator(mode="after")
    def _consistent(self) -> ToyLimitOptions:
        if self.model == "counting" and self.counting is None:
            raise ValueError("model counting needs the counting section (observed, signal, background)")
        if self.model == "run" and self.counting is not None:
            raise ValueError("the counting section is only used by model counting")
        if self.max_toys < self.toys:
            raise ValueError(f"max_toys ({self.max_toys}) must be at least toys ({self.toys})")
        return self


def _poi(study: Study) -> str:
    o: ToyLimitOptions = study.options  # type: ignore[assignment]
    return "mu" if o.model == "counting" else str(o.poi)


def _range(study: Study) -> tuple[float, float]:
    """(null, upper): the tested values lie in (null, upper]."""
    o: ToyLimitOptions = study.options  # type: ignore[assignment]
    if o.upper is not None or o.model == "counting":
        return o.null, float(o.upper if o.upper is not None else math.nan)
    hi = next(p.range[1] for p in study.analysis.parameters if p.name == o.poi)
    return o.null, float(hi)


def _grid(study: Study) -> list[float]:
    o: ToyLimitOptions = study.options  # type: ignore[assignment]
    null, upper = _range(study)
    if o.grid:
        return sorted({float(v) for v in o.grid})
    return [null + (upper - null) * (k + 1) / o.grid_points for k in range(o.grid_points)]


def _check_run(study: Study, o: ToyLimitOptions) -> list[tuple[str, str]]:
    if not study.config.run:
        return [("run", "model run needs the source run's URI")]
    cfg = study.analysis
    if o.poi is None:
        return [("options.poi", f"name the parameter of interest (the run's: {cfg.parameter_names})")]
    if o.poi not in cfg.parameter_names:
        return [("options.poi", f"unknown parameter {o.poi!r}; the run's parameters of interest: "
                 f"{cfg.parameter_names}")]
    if o.poi in cfg.inference.fix:
        return [("options.poi", f"{o.poi} is fixed in the run's inference.fix; a limit needs it free")]
    lo, hi = next(p.range for p in cfg.parameters if p.name == o.poi)
    issues = []
    if not lo <= o.null < hi:
        issues.append(("options.null", f"{o.null} lies outside {o.poi}'s range [{lo}, {hi}]"))
    if o.upper is not None and not lo < o.upper <= hi:
        issues.append(("options.upper", f"{o.upper} lies outside {o.poi}'s range [{lo}, {hi}]"))
    for v in o.grid or ():
        if not lo <= v <= hi:
            issues.append(("options.grid", f"{v} lies outside {o.poi}'s range [{lo}, {hi}]"))
    layout = study.source[0]
    source = o.source or cfg.inference.source
    kind = cfg.inference.dataset.kind
    for uri in (layout.dataset_info(kind), layout.likelihood(kind, source)):
        if not storage.exists(uri):
            issues.append(("run", f"{layout.root} has no {uri}: run `sbi-core dataset`, `likelihood --batch I` and "
                           f"`likelihood --join` on it first (source {source})"))
            break
    return issues


def _check(study: Study) -> list[tuple[str, str]]:
    o: ToyLimitOptions = study.options  # type: ignore[assignment]
    if o.model == "run":
        issues = _check_run(study, o)
    else:
        issues = [] if o.poi in (None, "mu") else [("options.poi", f"a counting experiment's parameter is mu, "
                                                                   f"not {o.poi!r}")]
        if o.upper is None:
            issues.append(("options.upper", "a counting experiment needs the upper end of the tested range"))
        elif o.counting is not None and o.null * o.counting.signal + o.counting.background <= 0:
            issues.append(("options.null", "the expected count at the null value must be positive"))
    if issues:
        return issues
    null, upper = _range(study)
    if not upper > null:
        return [("options.upper", f"{upper} must lie above the null value {null}")]
    bad = [v for v in (o.grid or ()) if not null < v <= upper]
    if bad:
        return [("options.grid", f"values {bad} lie outside the tested range ({null}, {upper}] (above the null "
                 "value, up to the upper end)")]
    first = len(_grid(study)) * 2 * o.toys
    if first > study.config.budget:
        return [("budget", f"{study.config.budget} toys do not cover round 1: {len(_grid(study))} values x 2 "
                 f"hypotheses x {o.toys} toys = {first}")]
    return []


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass
class _Context:
    calc: Any
    model: Any
    fixed: dict[str, float]
    bounds: dict[str, tuple[float, float]]
    start: dict[str, float]


_contexts: dict[str, _Context] = {}


def _run_model(study: Study, o: ToyLimitOptions) -> tuple[Any, dict[str, float], dict[str, Any], dict[str, float]]:
    """(ToyModel, fixed, bounds, start) of the source run: the observed NLL and toys from its events."""
    from sbi_core.inference.calculators import PoolToyModel
    from sbi_core.inference.datasets import DatasetInfo
    from sbi_core.inference.pool import load_pool
    from sbi_core.inference.steps import fit_start, load_model, model_from_arrays
    from sbi_core.inference.toys import ToyGenerator

    layout, cfg, plan = study.source
    if o.source and o.source != cfg.inference.source:
        cfg = cfg.model_copy(update={"inference": cfg.inference.model_copy(update={"source": o.source})})
    info = DatasetInfo.load(layout, cfg.inference.dataset.kind)
    observed = load_model(layout, cfg, info)
    pool = load_pool(layout, cfg, plan)
    mc = info.normalization == "mc"
    gen = ToyGenerator(pool, luminosity=info.luminosity, interpolation=cfg.inference.interpolation,
                       normalization=info.normalization)

    def make(arrays: Any) -> Any:
        return model_from_arrays(cfg, arrays, pool if mc else None, luminosity=info.luminosity)

    inf = cfg.inference
    start = storage.read_json(layout.fit)["values"] if storage.exists(layout.fit) else fit_start(cfg)
    bounds = {k: tuple(v) for k, v in inf.bounds.items() if k != o.poi}
    return PoolToyModel(gen, observed, make), dict(inf.fix), bounds, dict(start)


def _context(study: Study) -> _Context:
    """The study's toy calculator (built once per process: a mapped task evaluates several batches)."""
    if study.uri in _contexts:
        return _contexts[study.uri]
    from sbi_core.inference.calculators import ToyCalculator

    o: ToyLimitOptions = study.options  # type: ignore[assignment]
    null, upper = _range(study)
    if o.model == "counting":
        from sbi_core.inference.counting import CountingToyModel

        c = o.counting
        assert c is not None
        model: Any = CountingToyModel(c.observed, c.signal, c.background)
        fixed: dict[str, float] = {}
        bounds: dict[str, Any] = {}
        start: dict[str, float] = {"mu": null}
    else:
        model, fixed, bounds, start = _run_model(study, o)
    calc = ToyCalculator(model, _poi(study), null=null, upper=upper, fixed=fixed, bounds=bounds, start=start)
    _contexts[study.uri] = _Context(calc, model, fixed, bounds, start)
    return _contexts[study.uri]


def _batch(calc: Any, mu: float, hyp: str, toys: range, seed: int, at: dict[str, float], q_obs: float) -> dict:
    from sbi_core.inference.calculators import TIE

    stats_ = calc.toy_statistics(mu, hyp, toys, seed, at=at)
    qs = [s.q for s in stats_ if s.valid]
    bad = [s for s in stats_ if not s.valid]
    return {"n": len(qs), "k": sum(q >= q_obs - TIE for q in qs), "invalid": len(bad), "q": qs,
            "invalid_reasons": sorted({s.message for s in bad})[:5]}


# ---------------------------------------------------------------------------------------------- the kind
class ToyLimits:
    """The toy CLs upper-limit kind (see the module doc)."""

    name = "toy_limits"
    unit = "toys"
    options = ToyLimitOptions

    def check(self, study: Study) -> list[tuple[str, str]]:
        return _check(study)

    @staticmethod
    def _points(state: StudyState) -> dict[int, ScanPoint]:
        return {int(p["index"]): ScanPoint.from_json(p) for p in state.kind.get("points", [])}

    def plan_round(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]]) -> list[WorkItem]:
        o: ToyLimitOptions = study.options  # type: ignore[assignment]
        points = self._points(state)
        if not points:
            todo = [(k, mu, 0, o.toys) for k, mu in enumerate(_grid(study))]
        else:
            nxt = Refinement.from_json(state.kind.get("next", {}))
            todo = [(k, mu, 0, o.toys) for k, mu in nxt.new]
            todo += [(k, points[k].mu, points[k].allocated, n) for k, n in nxt.more]
        items = []
        for k, mu, start, n in todo:
            for a in range(start, start + n, o.toys_per_task):
                b = min(start + n, a + o.toys_per_task)
                items.append(WorkItem(f"p{k:03d}-t{a:06d}", {"point": k, "mu": mu, "toys": [a, b]}, 2.0 * (b - a)))
        return items

    def evaluate(self, study: Study, item: WorkItem) -> dict[str, Any]:
        from sbi_core.inference.calculators import toy_seed

        ctx = _context(study)
        calc, poi = ctx.calc, _poi(study)
        k, mu = int(item.inputs["point"]), float(item.inputs["mu"])
        a, b = (int(v) for v in item.inputs["toys"])
        q_obs, ok, msg = calc.observed_statistic(mu)
        if not ok or not math.isfinite(q_obs):
            raise PointFailed(f"the observed data's fit at {poi} = {mu:.6g} is not valid: {msg}")
        at = {}
        for hyp, value in (("sb", mu), ("b", calc.null)):
            at[hyp], ok, msg = calc.generating_point(value)
            if not ok:
                raise PointFailed(f"the conditional fit at {poi} = {value:.6g} (where {hyp} toys are drawn) is not "
                                  f"valid: {msg}")
        seed = study.config.seed
        return {"mu": mu, "q_obs": q_obs, "generating": at,
                "sb": _batch(calc, mu, "sb", range(a, b), toy_seed(seed, k, 0), at["sb"], q_obs),
                "b": _batch(calc, mu, "b", range(a, b), toy_seed(seed, k, 1), at["b"], q_obs)}

    def aggregate(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]],
                  results: Sequence[WorkResult]) -> tuple[StudyState, list[dict[str, Any]], Decision]:
        o: ToyLimitOptions = study.options  # type: ignore[assignment]
        points = {k: p.to_json() for k, p in self._points(state).items()}
        touched: dict[int, list[WorkResult]] = {}
        for res in results:
            k = int(res.item.inputs["point"])
            p = points.setdefault(k, ScanPoint(k, float(res.item.inputs["mu"])).to_json())
            p["allocated"] = max(p["allocated"], int(res.item.inputs["toys"][1]))
            touched.setdefault(k, []).append(res)
            if not res.ok:
                p["failed"] = res.reason
                continue
            r = res.result
            p["q_obs"] = finite(r["q_obs"])
            for h in ("sb", "b"):
                p[f"n_{h}"] += int(r[h]["n"])
                p[f"k_{h}"] += int(r[h]["k"])
        tested = [ScanPoint.from_json(p) for p in points.values()]
        alpha = 1.0 - o.level
        est = locate_limit(tested, alpha)
        entries = [self._entry(ScanPoint.from_json(points[k]), rs) for k, rs in sorted(touched.items())]
        decision, nxt = self._decide(study, tested, est, alpha)
        kind = {"points": [points[k] for k in sorted(points)], "limit": est.to_json(), "next": nxt.to_json()}
        return state.evolve(kind=kind), entries, decision

    @staticmethod
    def _entry(p: ScanPoint, results: Sequence[WorkResult]) -> dict[str, Any]:
        toys = [list(r.item.inputs["toys"]) for r in results]
        if p.failed:
            return {"point": f"p{p.index:03d}", "inputs": {"mu": p.mu, "toys": toys}, "ok": False, "reason": p.failed,
                    "result": {}, "metrics": {}}
        cls, err = p.cls
        invalid = sum(r.result[h]["invalid"] for r in results if r.ok for h in ("sb", "b"))
        result = {"cls": finite(cls), "cls_error": finite(err), "toys": p.n_sb + p.n_b, "invalid_toys": invalid}
        return {"point": f"p{p.index:03d}", "inputs": {"mu": p.mu, "toys": toys}, "ok": True, "reason": "",
                "result": result, "metrics": {"mu": p.mu, "cls": cls, "cls_error": err}}

    def _decide(self, study: Study, tested: list[ScanPoint], est: LimitEstimate,
                alpha: float) -> tuple[Decision, Refinement]:
        o: ToyLimitOptions = study.options  # type: ignore[assignment]
        poi = _poi(study)
        null, upper = _range(study)
        toys = sum(p.n_sb + p.n_b for p in tested)
        summary = {"limit": finite(est.value), "error": finite(est.error), "status": est.status,
                   "bracket": [finite(est.lo), finite(est.hi)], "values": len(tested), "toys": toys}
        if not any(p.usable for p in tested):
            reasons = sorted({p.failed for p in tested if p.failed})[:3]
            return Decision.end(f"every tested value failed: {reasons}", "failed", summary), Refinement()
        if est.fitted and LOCATED_SIGMAS * est.error <= study.config.tolerance:
            return Decision.end(f"converged: {poi} < {est.value:.5g} +- {est.error:.2g} at {o.level:g} CL (located to "
                                f"the tolerance {study.config.tolerance:g}: {LOCATED_SIGMAS:g} errors within it)",
                                "finished", summary), Refinement()
        nxt = refine(tested, est, alpha=alpha, null=null, upper=upper, tolerance=study.config.tolerance,
                     new_points=study.config.points_per_round, max_toys=o.max_toys, straddle=o.straddle)
        if nxt.empty:
            where = (f"{poi} < {est.value:.5g} +- {est.error:.2g}" if est.status == "located" else est.method)
            return Decision.end(f"cannot refine further ({nxt.why}): {where}", "finished", summary), nxt
        where = (f"{poi} < {est.value:.5g} +- {est.error:.2g} ({est.method})" if est.status == "located"
                 else est.method)
        return Decision.go_on(f"{where}; next: {nxt.why}", summary), nxt

    def finish(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from sbi_core.studies.toy_limit_report import report

        return report(study, state, _context, _poi(study), _range(study))

    def describe(self, study: Study, state: StudyState) -> list[dict[str, Any]]:
        o: ToyLimitOptions = study.options  # type: ignore[assignment]
        alpha = 1.0 - o.level
        window = set((state.kind.get("limit") or {}).get("window", []))
        rows = []
        for p in sorted(self._points(state).values(), key=lambda p: p.mu):
            if p.failed:
                rows.append({"point": f"p{p.index:03d}", _poi(study): p.mu, "toys": 0, "CLs": None, "error": None,
                             "status": f"failed: {p.failed}"})
                continue
            cls, err = p.cls
            status = ("excluded" if cls + o.straddle * err < alpha else "allowed" if cls - o.straddle * err > alpha
                      else "straddles")
            rows.append({"point": f"p{p.index:03d}", _poi(study): p.mu, "toys": p.n_sb + p.n_b, "CLs": cls,
                         "error": err, "status": status + (" (in fit)" if p.index in window else "")})
        return rows


KIND = ToyLimits()

