"""The `hpo` study kind: Bayesian optimisation of network hyperparameters, segmented (several networks searched
side by side, each with its own searcher and history, in the same rounds).

Each round asks every segment's searcher (`sbi_core.search`, rebuilt from that segment's history; seeded by
the study seed and the segment's index) for `points_per_round` hyperparameter points; one work item per
(segment, point) trains that network of the source run on the run's own training sets with those
hyperparameters (`sbi_core.ml.trial.train_trial`: one network per task, the `gpu` profile) under
`trials/<item>/` of the study, and scores it: the best validation loss and, where the simulator has an exact
likelihood, the closure RMS of its log r against the exact one. `options.objective` picks which is minimised.
A segment has converged when `patience` rounds in a row improved its best value by less than `tolerance`
(relative); the study finishes when every segment has, or at its bounds (budget unit: trainings).

The results: per segment the best point, its value, the trial's files, a `training:` section YAML the
pipeline can use (`best/<segment>.yaml`: `sbi-core derive --from RUN --run NEW --set ...` takes the same values,
listed in `overrides`), the network registered in MLflow under `<analysis>.hpo.<segment>` with the alias
`options.alias`, and a plot of the best value against the trainings spent, per segment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from sbi_core import storage
from sbi_core.config_base import ConfigSection
from sbi_core.search.space import Dimension
from sbi_core.studies.kinds import PointFailed
from sbi_core.studies.state import Decision, StudyState, WorkItem, WorkResult
from sbi_core.studies.study import Study

__all__ = ["KIND", "Hpo", "HpoOptions"]

#: Seeds of the segments' searchers are spread by this multiplier of the segment index.
SEGMENT_SEED = 104_729


class HpoOptions(ConfigSection):
    """Settings of a hyperparameter search."""

    networks: list[str] | None = Field(
        default=None, min_length=1, title="Networks (segments)",
        description="Network ids of the source run searched side by side, e.g. alices-theta-nominal-m00 (default: "
        "member 0 of every head and variation of every method of the run).")
    space: dict[str, Dimension] = Field(
        min_length=1, title="Search space",
        description="Hyperparameters by name (layers, width, activation, learning_rate, batch_size, epochs, patience, "
        "weight_decay, alpha): {type: real|integer|categorical, low, high, log | choices}.")
    objective: Literal["val_loss", "closure_rms"] = Field(
        default="val_loss", title="Objective",
        description="val_loss: the best validation loss; closure_rms: the RMS of log r against the exact one "
        "(simulators with an exact likelihood).")
    searcher: Literal["bayes", "random"] = Field(default="bayes", title="Searcher",
                                                 description="bayes: Gaussian-process Bayesian optimisation "
                                                 "(scikit-optimize); random: uniform draws (the baseline).")
    initial_points: int = Field(default=4, ge=1, le=10_000, title="Initial points",
                                description="bayes: points of the initial Latin-hypercube design per segment.")
    acquisition: Literal["EI", "PI", "LCB"] = Field(default="EI", title="Acquisition",
                                                    description="bayes: the acquisition function.")
    patience: int = Field(default=2, ge=1, le=1000, title="Patience (rounds)",
                          description="Rounds in a row without a relative improvement above the tolerance after "
                          "which a segment has converged.")
    alias: str = Field(default="best", min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$",
                       title="MLflow alias", description="Alias of each segment's best network in the registry.")

    @field_validator("space")
    @classmethod
    def _known(cls, v: dict[str, Any]) -> dict[str, Any]:
        from sbi_core.ml.trial import TRIAL_PARAMETERS

        known = [k for k in TRIAL_PARAMETERS if k != "hidden"]  # a list of widths is not a dimension: layers, width
        unknown = sorted(set(v) - set(known))
        if unknown:
            raise ValueError(f"unknown hyperparameters {unknown} (searchable: {known})")
        return v


def _o(study: Study) -> HpoOptions:
    return study.options  # type: ignore[return-value]


def _segments(study: Study) -> list[str]:
    """The searched networks: the option, or member 0 of every (method, head, variation) of the run's plan."""
    from sbi_core.ml.plan import training_plan

    if _o(study).networks:
        return list(_o(study).networks)  # type: ignore[arg-type]
    ids = [nid for ids in training_plan(study.analysis)["networks"].values() for nid in ids]
    return [nid for nid in ids if nid.endswith("-m00")]


def _search_options(study: Study, segment: int) -> Any:
    from sbi_core.search import parse_search

    o = _o(study)
    return parse_search({"method": o.searcher, "space": {k: v.model_dump() for k, v in o.space.items()},
                         "initial_points": o.initial_points, "acquisition": o.acquisition,
                         "seed": (study.config.seed + SEGMENT_SEED * segment) % 2**31}, "options")


def _check(study: Study) -> list[tuple[str, str]]:
    from sbi_core.data.training_sets import parse_network_id
    from sbi_core.errors import InputError
    from sbi_core.ml.closure import ExactTargets
    from sbi_core.ml.plan import training_plan
    from sbi_core.physics.registry import make_simulator

    o = _o(study)
    if not study.config.run:
        return [("run", "a hyperparameter search needs the source run's URI (sampled)")]
    layout, cfg, _ = study.source
    planned = {nid for ids in training_plan(cfg)["networks"].values() for nid in ids}
    issues: list[tuple[str, str]] = []
    for i, nid in enumerate(o.networks or []):
        try:
            parse_network_id(nid)
        except InputError as exc:
            issues.append((f"options.networks[{i}]", str(exc)))
            continue
        if nid not in planned:
            issues.append((f"options.networks[{i}]", f"{nid} is not in the run's training plan"))
    if issues:
        return issues
    for nid in _segments(study):
        s = parse_network_id(nid)
        for split in ("train", "val", "test"):
            uri = layout.training_set(s.method, s.head, s.variation, split)
            if not storage.exists(uri):
                return [("run", f"{layout.root} has no {uri}: run `sbi-core sample --method {s.method}` on it first")]
    if o.objective == "closure_rms" and not ExactTargets.available_for(cfg, make_simulator(cfg)):
        return [("options.objective", f"closure_rms needs an exact likelihood; simulator {cfg.simulator.name!r} "
                 "has none (use val_loss)")]
    first = len(_segments(study)) * study.config.points_per_round
    if first > study.config.budget:
        return [("budget", f"{study.config.budget} trainings do not cover round 1: {len(_segments(study))} "
                 f"segments x {study.config.points_per_round} points = {first}")]
    return []


def _trials(study: Study, history: Sequence[dict[str, Any]], segment: str) -> list[Any]:
    from sbi_core.search import Trial

    return [Trial(dict(e["inputs"]["params"]), e["result"].get("value") if e["ok"] else None, e.get("reason", ""))
            for e in history if e["inputs"].get("segment") == segment]


def _best(entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [e for e in entries if e["ok"] and e["result"].get("value") is not None]
    return min(ok, key=lambda e: e["result"]["value"]) if ok else None


class Hpo:
    """The hyperparameter-search kind (see the module doc)."""

    name = "hpo"
    unit = "trainings"
    options = HpoOptions

    def check(self, study: Study) -> list[tuple[str, str]]:
        return _check(study)

    def plan_round(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]]) -> list[WorkItem]:
        from sbi_core.search import make_searcher

        items = []
        done = set(state.kind.get("converged", []))
        for j, seg in enumerate(_segments(study)):
            if seg in done:
                continue
            asked = make_searcher(_search_options(study, j), _trials(study, history, seg)).ask(
                study.config.points_per_round)
            for i, params in enumerate(asked):
                item = f"r{state.round:03d}-s{j:02d}-p{i:02d}"
                items.append(WorkItem(item, {"segment": seg, "params": params,
                                             "out": storage.join(study.uri, "trials", item)}, 1.0))
        return items

    def evaluate(self, study: Study, item: WorkItem) -> dict[str, Any]:
        from sbi_core.ml.trial import train_trial

        o = _o(study)
        rec = train_trial(str(study.config.run), item.inputs["segment"], item.inputs["params"], item.inputs["out"])
        if rec["status"] != "ok":
            raise PointFailed(str(rec["error"]))
        value = rec.get(o.objective)
        if value is None or not math.isfinite(value):
            raise PointFailed(f"no {o.objective} for this network ({rec['network']})")
        return {"value": float(value), **{k: rec[k] for k in ("val_loss", "closure_rms", "epochs", "best_epoch",
                                                                "n_parameters", "training", "seconds")}}

    def aggregate(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]],
                  results: Sequence[WorkResult]) -> tuple[StudyState, list[dict[str, Any]], Decision]:
        o = _o(study)
        entries = [{"point": r.item.id, "inputs": r.item.inputs, "ok": r.ok, "reason": r.reason, "result": r.result,
                    "metrics": {k: r.result[k] for k in ("value", "val_loss", "closure_rms")
                                if isinstance(r.result.get(k), int | float)} if r.ok else {}} for r in results]
        if not any(r.ok for r in results) and not any(e["ok"] for e in history):
            return state, entries, Decision.end(f"every training failed: {sorted({r.reason for r in results})[:3]}",
                                                "failed")
        stale = dict(state.kind.get("stale", {}))
        best: dict[str, Any] = {}
        converged = set(state.kind.get("converged", []))
        for seg in _segments(study):
            old, new = _best([e for e in history if e["inputs"]["segment"] == seg]), _best(
                [e for e in [*history, *entries] if e["inputs"]["segment"] == seg])
            if new is None:
                continue
            best[seg] = {"value": new["result"]["value"], "params": new["inputs"]["params"], "trial": new["point"],
                         "out": new["inputs"]["out"]}
            if seg in converged or not any(e["inputs"]["segment"] == seg for e in entries):
                continue
            gain = math.inf if old is None else (old["result"]["value"] - new["result"]["value"]) / max(
                abs(old["result"]["value"]), 1e-300)
            stale[seg] = 0 if gain > study.config.tolerance else int(stale.get(seg, 0)) + 1
            if stale[seg] >= o.patience:
                converged.add(seg)
        kind = {"best": best, "stale": stale, "converged": sorted(converged)}
        summary = {f"best_{seg}": b["value"] for seg, b in best.items()}
        summary["trainings"] = len(history) + len(entries)
        if converged >= set(_segments(study)):
            return (state.evolve(kind=kind), entries,
                    Decision.end(f"converged: every segment's best improved by less than {study.config.tolerance:g} "
                                 f"(relative) in {o.patience} rounds in a row", "finished", summary))
        left = sorted(set(_segments(study)) - converged)
        return state.evolve(kind=kind), entries, Decision.go_on(f"{len(left)} segment(s) still improving", summary)

    def finish(self, study: Study, state: StudyState, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from sbi_core.studies.hpo_report import report

        return report(study, state, history, _segments(study))

    def describe(self, study: Study, state: StudyState) -> list[dict[str, Any]]:
        rows = []
        for seg in _segments(study):
            b = state.kind.get("best", {}).get(seg)
            rows.append({"segment": seg, "best": None if b is None else b["value"],
                         "params": None if b is None else b["params"], "trial": None if b is None else b["trial"],
                         "status": "converged" if seg in state.kind.get("converged", []) else "searching"})
        return rows


KIND = Hpo()
