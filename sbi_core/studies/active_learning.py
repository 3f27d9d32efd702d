"""The `active_learning` study kind: Bayesian optimisation over the parameters of interest where each evaluation
is expensive, with two objectives (`options.objective`):

- `excess` (the iDDS use case: where do observed and expected results differ most?): each round asks
  `points_per_round` points of the searcher (`sbi_core.search`, rebuilt from the history), each evaluated on the
  source run's fitted dataset (`inference.excess.ExcessEvaluator`: the local significance of the point against
  the reference benchmark, or the CLs excess along its ray; observed and expected), maximised. It finishes when
  a round neither moved the best point by more than `tolerance` (parameter units) nor raised the best value by
  more than `min_gain`, then polishes (trust-region steps, `search.quadratic`): up to `polish_rounds` rounds,
  each a stencil of points around a centre (first the best point, with h = 4 x tolerance, halved each round down
  to the tolerance) whose fitted quadratic's peak is the next centre, until the peak lies within half the
  tolerance of the centre. Budget unit: evaluations (one per point).
- `disagreement` (where is the learned likelihood least certain?): cycles of three rounds, each one DAG run:
  search (`search_rounds` rounds of asked points, each the ensemble disagreement D(theta) of the current
  networks, `ml.disagreement`, with the closure RMS against the exact log r where the simulator has one);
  simulate (events drawn at the point of largest D: `sbi-core resample`, generate, combine, sample; with
  `source_samples_per_point`, samples at that point and at the next `source_points` - 1 points of largest D
  drawn from the source's events too, whose reference half then comes from events where the reference lives;
  a training run derived from the source with `training.warm_start` at the current one, its sets the union of
  the current sets and the new ones, `merge-samples`); train (one item per network of the method,
  warm-started). It finishes when the largest D of a search is below `tolerance`, or when the budget of
  simulated events is spent.
  Budget unit: simulated events (counted at the first search round after the networks trained on them, so the
  last simulation is always trained on and evaluated before the budget ends the study; a cycle only simulates
  when its events fit in the budget left).

The kind plans and aggregates here; a disagreement cycle's work items (D at a point, the simulation, a
retraining) are `sbi_core.studies.disagreement_cycle`.

Files under the study prefix: `runs/sample-cNN/` (events at the point of cycle NN), `runs/sample-cNN-source-II/`
(the source's events, sampled at the cycle's II-th point) and `runs/train-cNN/` (the networks of cycle NN; cycle
0's are the source run's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from sbi_core import storage
from sbi_core.config_base import ConfigSection
from sbi_core.studies.disagreement_cycle import cycle_seed, disagreement_at, full_point, simulate, train_network
from sbi_core.studies.kinds import PointFailed
from sbi_core.studies.state import Decision, StudyState, WorkItem, WorkResult
from sbi_core.studies.study import Study

__all__ = ["KIND", "ActiveLearning", "ActiveLearningOptions"]

PHASES = ("search", "simulate", "train")


class ActiveLearningOptions(ConfigSection):
    """Settings of an active-learning study."""

    objective: Literal["excess", "disagreement"] = Field(
        title="Objective", description="excess: the point of the largest excess of the run's data over the null; "
        "disagreement: simulate where the ensemble disagrees most, retrain, until it agrees everywhere.")
    parameters: list[str] | None = Field(
        default=None, min_length=1, title="Parameters searched",
        description="Parameters of interest spanning the searched space (default: every free one).")
    ranges: dict[str, tuple[float, float]] | None = Field(
        default=None, title="Ranges", description="Searched [low, high] per parameter (default: its range).")
    searcher: Literal["bayes", "random"] = Field(
        default="bayes", title="Searcher", description="bayes: Gaussian-process Bayesian optimisation "
        "(scikit-optimize); random: uniform draws (the baseline).")
    initial_points: int = Field(default=6, ge=1, le=10_000, title="Initial points",
                                description="bayes: points of the initial Latin-hypercube design.")
    acquisition: Literal["EI", "PI", "LCB"] = Field(default="EI", title="Acquisition",
                                                    description="bayes: the acquisition function.")
    statistic: Literal["local_significance", "cls"] = Field(
        default="local_significance", title="Excess statistic",
        description="excess: the local significance of the point against the null, or the CLs excess along its "
        "ray (Phi^-1(1 - CLs_exp) - Phi^-1(1 - CLs_obs)).")
    min_gain: float = Field(default=0.05, ge=0, le=1e6, title="Minimum gain",
                            description="excess: a round that raises the best value by less (and moves the best "
                            "point by less than the tolerance) ends the study.")
    polish_rounds: int = Field(default=4, ge=0, le=100, title="Polish rounds",
                               description="excess: after the search converges, rounds of a stencil around the "
                               "best point whose fitted quadratic's peak is the next centre (0: none).")
    method: str = Field(default="alices", title="Method",
                        description="disagreement: the estimator whose ensemble is searched and retrained (a "
                        "parametrised method, or benchmark_ratio).")
    search_rounds: int = Field(default=2, ge=1, le=100, title="Search rounds per cycle",
                               description="disagreement: rounds of asked points before the point of largest "
                               "disagreement is simulated.")
    events_per_point: int = Field(default=20_000, ge=10, le=10**10, title="Events per point",
                                  description="disagreement: events simulated at the chosen point.")
    shards_per_point: int | None = Field(default=None, ge=1, le=100_000, title="Shards per point",
                                         description="disagreement: shards of those events (default: as the "
                                         "source run's events per shard).")
    samples_per_point: int = Field(default=10_000, ge=10, le=10**9, title="Samples per point",
                                   description="disagreement: training samples drawn from them (train + val).")
    source_samples_per_point: int = Field(
        default=0, ge=0, le=10**9, title="Source samples per point",
        description="disagreement: training samples at the chosen point drawn from the source run's events as "
        "well (theta0 there; their reference half from events where the reference lives): no simulation, so "
        "not counted in the budget. 0: none.")
    source_points: int = Field(
        default=1, ge=1, le=100, title="Source-sampled points",
        description="disagreement: how many of the cycle's searched points, largest disagreement first (the "
        "chosen point is the first), get source_samples_per_point samples each.")
    sample_events: int = Field(default=20_000, ge=10, le=10**8, title="Events averaged over",
                               description="disagreement: test-split events of the source D(theta) is averaged "
                               "over.")
    weighting: Literal["events", "theta"] = Field(
        default="events", title="Disagreement weighting",
        description="disagreement: events: the members' spread averaged over the run's own events (what the "
        "closure RMS of the learning stage uses: D is its proxy); theta: weighted to p(x|theta).")
    retrain_epochs: int | None = Field(default=None, ge=1, le=100_000, title="Retraining epochs",
                                       description="disagreement: epochs of the warm-started retraining (default: "
                                       "the run's training.optimizer.epochs).")


# ---------------------------------------------------------------------------------------------- the space
def _o(study: Study) -> ActiveLearningOptions:
    return study.options  # type: ignore[return-value]


def _space(study: Study) -> dict[str, tuple[float, float]]:
    """The searched parameters and their [low, high], in the run's parameter order."""
    cfg, o = study.analysis, _o(study)
    free = [p for p in cfg.parameter_names if p not in cfg.inference.fix]
    names = [p for p in cfg.parameter_names if p in (o.parameters or free)]
    ranges = {p.name: tuple(p.range) for p in cfg.parameters}
    return {n: tuple((o.ranges or {}).get(n, ranges[n])) for n in names}  # type: ignore[misc]


def _search_options(study: Study, cycle: int = 0) -> Any:
    from sbi_core.search import parse_search

    o = _o(study)
    space = {n: {"type": "real", "low": lo, "high": hi} for n, (lo, hi) in _space(study).items()}
    return parse_search({"method": o.searcher, "space": space, "initial_points": o.initial_points,
                         "acquisition": o.acquisition, "seed": (study.config.seed + 7919 * cycle) % 2**31},
                        "options")


def _check(study: Study) -> list[tuple[str, str]]:
    o = _o(study)
    if not study.config.run:
        return [("run", "an active-learning study needs the source run's URI")]
    cfg = study.analysis
    free = [p for p in cfg.parameter_names if p not in cfg.inference.fix]
    issues: list[tuple[str, str]] = []
    for p in o.parameters or []:
        if p not in cfg.parameter_names:
            issues.append(("options.parameters", f"unknown parameter {p!r}; the run's parameters: "
                           f"{cfg.parameter_names}"))
        elif p not in free:
            issues.append(("options.parameters", f"{p} is fixed in the run's inference.fix"))
    ranges = {p.name: p.range for p in cfg.parameters}
    for p, (lo, hi) in (o.ranges or {}).items():
        if p not in (o.parameters or free):
            issues.append((f"options.ranges.{p}", f"{p!r} is not a searched parameter ({o.parameters or free})"))
        elif not ranges[p][0] <= lo < hi <= ranges[p][1]:
            issues.append((f"options.ranges.{p}", f"[{lo}, {hi}] must be increasing and inside {p}'s range "
                           f"{list(ranges[p])}"))
    if issues:
        return issues
    return _check_excess(study) if o.objective == "excess" else _check_disagreement(study)


def _check_excess(study: Study) -> list[tuple[str, str]]:
    layout, cfg, _ = study.source
    kind = cfg.inference.dataset.kind
    for uri, step in ((layout.likelihood(kind, cfg.inference.source), "likelihood --join"), (layout.fit, "fit")):
        if not storage.exists(uri):
            return [("run", f"{layout.root} has no {uri}: run `sbi-core dataset`, `likelihood` and `fit` on it "
                     f"first (missing: {step})")]
    return []


def _check_disagreement(study: Study) -> list[tuple[str, str]]:
    from sbi_core.data.training_sets import BENCHMARK_METHODS, PARAMETRIZED_METHODS, method_heads
    from sbi_core.physics.registry import get_simulator_class

    o = _o(study)
    layout, cfg, _ = study.source
    if o.method not in cfg.training.methods:
        return [("options.method", f"{o.method!r} is not in the run's training.methods {cfg.training.methods}")]
    if o.method not in PARAMETRIZED_METHODS + BENCHMARK_METHODS:
        return [("options.method", f"{o.method!r} has no log r(x|theta) to disagree on: use a parametrised method "
                 f"{list(PARAMETRIZED_METHODS)} or benchmark_ratio")]
    if cfg.training.members < 2:
        return [("run", f"the run trains {cfg.training.members} member per network: a disagreement needs "
                 "training.members >= 2")]
    if not getattr(get_simulator_class(cfg.simulator.name), "samples_anywhere", False):
        return [("run", f"simulator {cfg.simulator.name!r} cannot draw events at a point (generation."
                 "sampling_point): no new simulation for active learning")]
    missing = [nid for head in method_heads(o.method, cfg) for nid in
               [f"{o.method}-{head}-nominal-m{m:02d}" for m in range(cfg.training.members)]
               if not storage.exists(layout.network_file(nid, "result.json"))]
    if missing:
        return [("run", f"{layout.root} has untrained networks {missing[:4]}: train the source run's "
                 f"{o.method} networks first")]
    if o.events_per_point > study.config.budget:
        return [("budget", f"{study.config.budget} events do not cover one point ({o.events_per_point} events)")]
    return []


# ---------------------------------------------------------------------------------------------- history
def _trials(study: Study, history: Sequence[dict[str, Any]], cycle: int | None) -> list[Any]:
    """The searcher's trials: the evaluated points (of one cycle, for disagreement), failed ones with None."""
    from sbi_core.search import Trial

    names = list(_space(study))
    out = []
    for e in history:
        inp = e.get("inputs", {})
        if inp.get("phase", "search") != "search" or (cycle is not None and inp.get("cycle") != cycle):
            continue
        value = e["result"].get("value") if e.get("ok") else None
        out.append(Trial({n: float(inp["point"][n]) for n in names}, value, e.get("reason", "")))
    return out


def _ask(study: Study, history: Sequence[dict[str, Any]], cycle: int | None, n: int) -> list[dict[str, float]]:
    from sbi_core.search import make_searcher

    options = _search_options(study, cycle or 0)
    return make_searcher(options, _trials(study, history, cycle), "maximize").ask(n)  # type: ignore[return-value]


def _ranked(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluated entries, largest value first (ties in their order)."""
    ok = [e for e in entries if e.get("ok") and e["result"].get("value") is not None]
    return sorted(ok, key=lambda e: -e["result"]["value"])


def _best(entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    ranked = _ranked(entries)
    return ranked[0] if ranked else None


def _distance(a: dict[str, float], b: dict[str, float]) -> float:
    return math.sqrt(sum((a[k] - b[k]) ** 2 for k in a))


# ---------------------------------------------------------------------------------------------- evaluation
_evaluators: dict[tuple[str, str], Any] = {}
def _excess(study: Study, point: dict[str, float]) -> dict[str, Any]:
    from sbi_core.inference.excess import ExcessEvaluator

    o = _o(study)
    key = (str(study.config.run), o.statistic)
    if key not in _evaluators:
        _evaluators[key] = ExcessEvaluator(str(study.config.run), o.statistic)
    ev = _evaluators[key]
    full = {k: v for k, v in full_point(study, point).items() if k in ev.free}
    try:
        res = ev.evaluate(full)
    except (ValueError, ArithmeticError) as exc:
        raise PointFailed(f"the fits at {point} failed: {type(exc).__name__}: {exc}") from None
    if not res.valid:
        raise PointFailed(f"a fit at {point} is not valid: {res.message}")
    return res.to_json()


# ---------------------------------------------------------------------------------------------- the kind
class ActiveLearning:
    """The active-learning kind (see the module doc)."""

    name = "active_learning"
    unit = "events"
    options = ActiveLearningOptions

    def unit_for(self, study: Study) -> str:
        """What the budget counts for this study: evaluations (excess) or simulated events (disagreement)."""
        return "evaluations" if _o(study).objective == "excess" else "events"

    def check(self, study: Study) -> list[tuple[str, str]]:
        return _check(study)

    # ------------------------------------------------------------------ plan
    def plan_round(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]]) -> list[WorkItem]:
        o, k = _o(study), state.kind
        n = study.config.points_per_round
        if o.objective == "excess":
            if k.get("phase") == "polish":
                from sbi_core.search.quadratic import stencil

                seen = [e["inputs"]["point"] for e in history]
                return [WorkItem(f"r{state.round:03d}-s{i:02d}", {"phase": "polish", "point": p}, 1.0)
                        for i, p in enumerate(q for q in stencil(k["centre"], k["h"], _space(study)) if q not in seen)]
            return [WorkItem(f"r{state.round:03d}-p{i:02d}", {"phase": "search", "point": p}, 1.0)
                    for i, p in enumerate(_ask(study, history, None, n))]
        cycle, phase = int(k.get("cycle", 0)), k.get("phase", "search")
        run = k.get("run", study.config.run)
        if phase == "search":
            points = _ask(study, history, cycle, n)
            q, r = divmod(int(k.get("pending_events", 0)), len(points))  # the last simulation's events, counted
            return [WorkItem(f"c{cycle:02d}-r{state.round:03d}-p{i:02d}",  # when its networks are first evaluated
                             {"phase": "search", "cycle": cycle, "point": p, "run": run}, float(q + (i < r)))
                    for i, p in enumerate(points)]
        if phase == "simulate":
            return [WorkItem(f"c{cycle:02d}-simulate", {
                "phase": "simulate", "cycle": cycle, "point": k["chosen"], "base": run,
                "source_points": k.get("source_points", [k["chosen"]]),
                "seed": cycle_seed(study, cycle),
                "sample_run": storage.join(study.uri, "runs", f"sample-c{cycle:02d}"),
                "next_run": storage.join(study.uri, "runs", f"train-c{cycle + 1:02d}")}, 0.0)]
        return [WorkItem(f"c{cycle:02d}-train-{nid}", {"phase": "train", "cycle": cycle, "run": k["next_run"],
                                                       "network": nid}, 0.0) for nid in k["networks"]]

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, study: Study, item: WorkItem) -> dict[str, Any]:
        phase = item.inputs.get("phase", "search")
        if _o(study).objective == "excess":
            return _excess(study, item.inputs["point"])
        if phase == "search":
            try:
                return disagreement_at(study, item.inputs["run"], item.inputs["point"])
            except (ValueError, ArithmeticError) as exc:
                raise PointFailed(f"disagreement at {item.inputs['point']}: {type(exc).__name__}: {exc}") from None
        if phase == "simulate":
            return simulate(study, item.inputs)
        return train_network(item.inputs)

    # ------------------------------------------------------------------ aggregate
    def aggregate(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]],
                  results: Sequence[WorkResult]) -> tuple[StudyState, list[dict[str, Any]], Decision]:
        entries = [self._entry(res) for res in results]
        if _o(study).objective == "excess":
            return self._aggregate_excess(study, state, history, entries)
        phase = state.kind.get("phase", "search")
        if phase == "search":
            return self._aggregate_search(study, state, history, entries)
        if phase == "simulate":
            res = results[0]
            if not res.ok:
                return state, entries, Decision.end(f"the simulation at {res.item.inputs['point']} failed: "
                                                    f"{res.reason}", "failed", state.summary)
            kind = {**state.kind, "phase": "train", "next_run": res.result["next_run"],
                    "networks": res.result["networks"], "events": int(state.kind.get("events", 0))
                    + int(res.result["events"]), "pending_events": int(res.result["events"])}
            return (state.evolve(kind=kind), entries,
                    Decision.go_on(f"simulated {res.result['events']} events at {res.result['point']}; retraining "
                                   f"{len(res.result['networks'])} networks", {**state.summary, "events": kind["events"]}))
        ok = [r for r in results if r.ok]
        if not ok:
            return state, entries, Decision.end(f"every network of cycle {state.kind.get('cycle', 0)} failed: "
                                                f"{sorted({r.reason for r in results})[:3]}", "failed", state.summary)
        cycle = int(state.kind.get("cycle", 0)) + 1
        kind = {**state.kind, "phase": "search", "cycle": cycle, "search_round": 0, "run": state.kind["next_run"]}
        kind["cycles"] = [*state.kind.get("cycles", []), {"cycle": cycle - 1, "chosen": state.kind.get("chosen"),
                                                          "run": state.kind["next_run"]}]
        return (state.evolve(kind=kind), entries,
                Decision.go_on(f"cycle {cycle - 1}: {len(ok)} of {len(results)} networks retrained", state.summary))

    @staticmethod
    def _entry(res: WorkResult) -> dict[str, Any]:
        inp = res.item.inputs
        metrics: dict[str, Any] = {}
        if res.ok and inp.get("phase", "search") == "search":
            metrics = {k: v for k, v in res.result.items() if k in ("value", "disagreement", "closure_rms")
                       and isinstance(v, int | float)}
            metrics.update({k: float(v) for k, v in inp["point"].items()})
        elif res.ok and inp["phase"] == "train":
            metrics = {"best_val_loss": res.result["best_val_loss"]}
        return {"point": res.item.id, "inputs": inp, "ok": res.ok, "reason": res.reason, "result": res.result,
                "metrics": metrics}

    def _aggregate_excess(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]],
                          entries: list[dict[str, Any]]) -> tuple[StudyState, list[dict[str, Any]], Decision]:
        before, after = _best(history), _best([*history, *entries])
        n = len(history) + len(entries)
        if after is None:
            if not any(e["ok"] for e in entries) and len(entries) == n:
                return state, entries, Decision.end(f"every point failed: {sorted({e['reason'] for e in entries})[:3]}",
                                                    "failed")
            return state, entries, Decision.go_on("no point evaluated yet")
        best = {"point": after["inputs"]["point"], "value": after["result"]["value"]}
        summary = {"best_value": best["value"], **{f"best_{k}": v for k, v in best["point"].items()}, "points": n}
        kind = {"best": best, "evaluations": n}
        o, tol = _o(study), study.config.tolerance
        where = ", ".join(f"{k} = {v:.4g}" for k, v in best["point"].items())
        polishing = state.kind.get("phase") == "polish"
        if not polishing and before is not None and len(_trials(study, history, None)) >= o.initial_points:
            moved = _distance(after["inputs"]["point"], before["inputs"]["point"])
            gain = after["result"]["value"] - before["result"]["value"]
            if moved <= tol and gain <= o.min_gain:
                polishing = True
                why = (f"the search converged (the last round moved the best by {moved:.3g} <= {tol:g} and gained "
                       f"{gain:.3g} <= {o.min_gain:g})")
        if not polishing:
            return state.evolve(kind=kind), entries, Decision.go_on(f"best {best['value']:.4g} at {where}", summary)
        if state.kind.get("phase") != "polish":
            if o.polish_rounds == 0:
                return state.evolve(kind=kind), entries, Decision.end(f"converged: largest excess {best['value']:.4g}"
                                                                      f" at {where} ({why})", "finished", summary)
            centre, h = best["point"], 4.0 * tol
            return (state.evolve(kind={**kind, "phase": "polish", "centre": centre, "h": h, "polished": 0}), entries,
                    Decision.go_on(f"{why}: polishing around {where} (h = {h:g})", summary))
        done, centre, h = int(state.kind["polished"]) + 1, state.kind["centre"], float(state.kind["h"])
        peak = self._polish_peak(study, [*history, *entries], centre, h)
        move = None if peak is None else _distance(peak, centre)
        if peak is None or move <= tol / 2 or done >= o.polish_rounds:
            reason = ("the quadratic through the stencil has no peak" if peak is None else
                      f"the stencil's peak is {move:.3g} <= {tol / 2:g} from its centre" if move <= tol / 2
                      else f"{done} polish rounds done")
            return (state.evolve(kind={**kind, "polished": done}), entries,
                    Decision.end(f"converged: largest excess {best['value']:.4g} at {where} ({reason})", "finished",
                                 summary))
        nxt = max(h / 2.0, tol)
        return (state.evolve(kind={**kind, "phase": "polish", "centre": peak, "h": nxt, "polished": done}), entries,
                Decision.go_on(f"polish round {done}: the peak moved by {move:.3g}; next stencil around {peak} "
                               f"(h = {nxt:g})", summary))

    @staticmethod
    def _polish_peak(study: Study, entries: Sequence[dict[str, Any]], centre: dict[str, float],
                     h: float) -> dict[str, float] | None:
        """The peak of the quadratic through the evaluated points of the stencil around `centre` (within h)."""
        from sbi_core.search.quadratic import quadratic_peak

        near = [e for e in entries if e.get("ok") and e["result"].get("value") is not None
                and _distance(e["inputs"]["point"], centre) <= h * math.sqrt(2) * (1 + 1e-9)]
        # the local significance's q = Z |Z| is the profile likelihood ratio itself: quadratic near its peak
        square = _o(study).statistic == "local_significance"
        values = [float(e["result"]["value"]) * (abs(float(e["result"]["value"])) if square else 1.0) for e in near]
        return quadratic_peak([e["inputs"]["point"] for e in near], values, centre, max_step=2.0 * h)


    def _aggregate_search(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]],
                          entries: list[dict[str, Any]]) -> tuple[StudyState, list[dict[str, Any]], Decision]:
        o = _o(study)
        cycle = int(state.kind.get("cycle", 0))
        mine = [e for e in [*history, *entries] if e["inputs"].get("phase") == "search"
                and e["inputs"].get("cycle") == cycle]
        k = int(state.kind.get("search_round", 0)) + 1
        best = _best(mine)
        if best is None:
            if all(not e["ok"] for e in entries):
                return state, entries, Decision.end(f"every point of cycle {cycle} failed: "
                                                    f"{sorted({e['reason'] for e in entries})[:3]}", "failed")
        summary = {"cycle": cycle, "events": int(state.kind.get("events", 0))}
        if best is not None:
            summary.update({"max_disagreement": best["result"]["value"],
                            **{f"at_{p}": v for p, v in best["inputs"]["point"].items()}})
            if best["result"].get("closure_rms") is not None:
                summary["closure_rms_at_max"] = best["result"]["closure_rms"]
        kind = {**state.kind, "search_round": k, "pending_events": 0}
        if k < o.search_rounds or best is None:
            return state.evolve(kind=kind), entries, Decision.go_on(f"cycle {cycle}: search round {k} of "
                                                                   f"{o.search_rounds}", summary)
        d = best["result"]["value"]
        kind["history_max"] = [*state.kind.get("history_max", []), {"cycle": cycle, "max": d,
                                                                   "point": best["inputs"]["point"]}]
        if d < study.config.tolerance:
            return (state.evolve(kind=kind), entries,
                    Decision.end(f"converged: the largest disagreement of cycle {cycle} is {d:.4g} < "
                                 f"{study.config.tolerance:g}", "finished", summary))
        used = int(state.kind.get("events", 0))
        if used + o.events_per_point > study.config.budget:
            return (state.evolve(kind=kind), entries,
                    Decision.end(f"budget: {used} of {study.config.budget} events used, another point needs "
                                 f"{o.events_per_point}; largest disagreement {d:.4g}", "finished", summary))
        points = [e["inputs"]["point"] for e in _ranked(mine)]  # the chosen (best) point first
        points = [q for i, q in enumerate(points) if q not in points[:i]][: o.source_points]
        kind.update(phase="simulate", chosen=best["inputs"]["point"], source_points=points)
        return (state.evolve(kind=kind), entries,
                Decision.go_on(f"cycle {cycle}: largest disagreement {d:.4g} at {best['inputs']['point']}: simulate "
                               "there", summary))

    # ------------------------------------------------------------------ finish, describe
    def finish(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from sbi_core.studies.active_learning_report import report

        return report(study, state, history, _space(study))

    def describe(self, study: Study, state: StudyState) -> list[dict[str, Any]]:
        from sbi_core.studies.steps import read_history

        rows = []
        for e in read_history(study.layout):
            inp = e["inputs"]
            if inp.get("phase", "search") not in ("search", "polish"):
                continue
            row = {"point": e["point"], **{k: v for k, v in inp["point"].items()},
                   "value": e["result"].get("value") if e["ok"] else None}
            if "closure_rms" in e["result"]:
                row["closure_rms"] = e["result"]["closure_rms"]
            row["status"] = "ok" if e["ok"] else f"failed: {e['reason']}"
            rows.append(row)
        return sorted(rows, key=lambda r: -math.inf if r["value"] is None else -r["value"])[:30]


KIND = ActiveLearning()
