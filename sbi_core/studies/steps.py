"""The study steps as plain functions: a study URI in, a small JSON-able summary out (`sbi-core study ...`).

One DAG run is one round:  plan -> work[item] (mapped) -> aggregate -> finish, or the next round's run.

Order of writes, so that a step killed at any moment and run again gives the same files:
- create: history.json, state.json, then study.yaml (the study exists once study.yaml does).
- plan: plan.json, once per round (a replanned round returns the stored plan).
- work: one file per item, written once (a rerun with the file present does nothing).
- aggregate: rounds/round-R/aggregate.json (the decision and the state it leads to), then history.json (rebuilt
  from every round's aggregate, so a round is never counted twice), then state.json, the commit point: until
  it is written the round is not aggregated, and a rerun recomputes the same bytes from the same inputs (the
  kind sees the history of the earlier rounds only).
- finish: plots, then results.json.
Every file is written atomically (`storage`), JSON with sorted keys. Bounds (max_rounds, the budget, the stop
flag) are applied here, after the kind's decision, so no kind can run past them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.studies.kinds import PointFailed
from sbi_core.studies.layout import StudyLayout
from sbi_core.studies.state import Decision, StudyState, WorkItem, WorkResult
from sbi_core.studies.study import Study, load_study, read_study_data, study_to_yaml, validate_study

log = logging.getLogger(__name__)

__all__ = ["aggregate", "create", "drive", "finish", "next_run_id", "plan", "show", "stop", "work"]

#: Test hook: the basename of a file (e.g. `state.json`); writing it pauses after the temporary is written,
#: with a `<temporary>.paused` file as the signal, until the process is killed (tests/studies/test_kill.py).
PAUSE_ENV = "SBI_STUDY_PAUSE_BEFORE_PUBLISH"


def _write_json(uri: str, obj: Any) -> None:
    """storage.write_json, with the test hook of PAUSE_ENV."""
    pause = os.environ.get(PAUSE_ENV)
    if not pause or uri.rsplit("/", 1)[-1] != pause:
        storage.write_json(uri, obj)
        return
    with storage.atomic_write(uri) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        tmp.with_name(tmp.name + ".paused").write_text("")
        while True:  # until SIGKILL
            time.sleep(0.05)


def _summary(study: Study, action: str, **fields: Any) -> dict[str, Any]:
    return {"step": "study", "action": action, "study": study.uri, "name": study.name, "kind": study.kind.name,
            **fields}


def next_run_id(name: str, round_: int) -> str:
    """The Airflow run id of a study's round: deterministic, so a retried branch never starts two runs."""
    return f"study-{name}-round-{round_:04d}"


def read_state(layout: StudyLayout) -> StudyState:
    if not storage.exists(layout.state):
        raise InputError(f"study {layout.root} has no state.json: run `sbi-core study --create` again")
    return StudyState.from_json(storage.read_json(layout.state))


def read_history(layout: StudyLayout) -> list[dict[str, Any]]:
    return list(storage.read_json(layout.history)) if storage.exists(layout.history) else []


def stop_reason(layout: StudyLayout) -> str | None:
    """The stop flag's reason, or None when the flag is not set."""
    if not storage.exists(layout.stop):
        return None
    try:
        flag = storage.read_json(layout.stop)
    except (ValueError, UnicodeDecodeError):
        flag = {}
    return str(flag.get("reason") or "stop flag set")


# ---------------------------------------------------------------------------------------------- create
def create(study_uri: str, config_uri: str | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Validate a study config (against its source run) and create the study; an existing study with the same
    config is left as it is (no config given: just check that it exists); another config is refused."""
    layout = StudyLayout(study_uri)
    if config_uri is None and not overrides:
        study = load_study(study_uri)
        return _summary(study, "create", created=False, **_where(layout))
    data, source = read_study_data(config_uri, overrides)
    study = validate_study(data, source, layout)
    text = study_to_yaml(study)
    if storage.exists(layout.config):
        if storage.read_text(layout.config) != text:
            raise InputError(f"study {layout.root} exists with another config ({layout.config}); pick another "
                             "study URI, or give no config to continue it")
        return _summary(study, "create", created=False, **_where(layout))
    _write_json(layout.history, [])
    _write_json(layout.state, StudyState().to_json())
    storage.write_text(layout.config, text)
    return _summary(study, "create", created=True, config=layout.config, budget=study.config.budget,
                    unit=study.unit, max_rounds=study.config.max_rounds, **_where(layout))


def _where(layout: StudyLayout) -> dict[str, Any]:
    state = read_state(layout)
    return {"round": state.round, "status": state.status, "reason": state.reason, "budget_used": state.budget_used}


# ---------------------------------------------------------------------------------------------- plan
def plan(study_uri: str, round_: int | None = None) -> dict[str, Any]:
    """Plan round `round_` (default: the study's current round); a round already planned keeps its plan."""
    study = load_study(study_uri)
    layout = study.layout
    state = read_state(layout)
    r = state.round if round_ is None else int(round_)
    if storage.exists(layout.plan(r)):
        record = storage.read_json(layout.plan(r))
    elif r != state.round:
        raise InputError(f"study {layout.root} is at round {state.round}: round {r} cannot be planned now")
    else:
        record = _new_plan(study, state, r)
        _write_json(layout.plan(r), record)
    items = [i["id"] for i in record["items"]]
    return _summary(study, "plan", round=r, items=items, n_items=len(items), cost=record["cost"],
                    ended=record["ended"], status=state.status)


def _new_plan(study: Study, state: StudyState, r: int) -> dict[str, Any]:
    """The round's items, cut to the budget left; none when the study has ended or its stop flag is set."""
    ended = "" if state.running else f"the study is {state.status}: {state.reason}"
    stop = stop_reason(study.layout)
    if stop and not ended:
        ended = f"stopped: {stop}"
    items: list[WorkItem] = []
    if not ended:
        items = list(study.kind.plan_round(study, state, _history_before(read_history(study.layout), r)))
        ids = [i.id for i in items]
        if len(set(ids)) != len(ids):
            raise ValueError(f"kind {study.kind.name}: round {r} plans duplicate item ids {ids}")
        left = study.config.budget - state.budget_used
        kept, spent = [], 0.0
        for item in items:  # in the kind's priority order
            if spent + item.cost > left + 1e-9:
                break
            kept.append(item)
            spent += item.cost
        if len(kept) < len(items):
            log.info("round %d: %d of %d items fit the budget left (%g %s)", r, len(kept), len(items), left,
                     study.unit)
        if not kept:
            ended = (f"budget spent: {left:g} {study.unit} left, the next item needs {items[0].cost:g}" if items
                     else f"nothing left to do: the kind planned no work for round {r}")
        items = kept
    return {"round": r, "items": [i.to_json() for i in items], "cost": sum(i.cost for i in items), "ended": ended}


def _history_before(history: list[dict[str, Any]], r: int) -> list[dict[str, Any]]:
    return [e for e in history if int(e["round"]) < r]


def _read_plan(layout: StudyLayout, r: int) -> list[WorkItem]:
    if not storage.exists(layout.plan(r)):
        raise InputError(f"study {layout.root}: round {r} is not planned: run `sbi-core study --plan` first")
    return [WorkItem.from_json(i) for i in storage.read_json(layout.plan(r))["items"]]


# ---------------------------------------------------------------------------------------------- work
def work(study_uri: str, round_: int, item_ids: Sequence[str]) -> dict[str, Any]:
    """Evaluate items of a round's plan, one result file each; an item whose result exists is not redone.

    A point the kind cannot evaluate (`PointFailed`: an invalid fit, a diverged network) is recorded with its
    reason and is not an error; any other exception fails the task (Airflow retries it)."""
    study = load_study(study_uri)
    layout = study.layout
    items = {i.id: i for i in _read_plan(layout, round_)}
    unknown = [i for i in item_ids if i not in items]
    if unknown:
        raise InputError(f"study {layout.root}: round {round_} has no items {unknown} (its items: {sorted(items)})")
    done = []
    for item_id in item_ids:
        uri = layout.work(round_, item_id)
        if storage.exists(uri):
            rec = storage.read_json(uri)
            done.append({"item": item_id, "ok": rec["ok"], "reason": rec["reason"], "skipped": True})
            continue
        t0 = time.perf_counter()
        try:
            result, ok, reason = study.kind.evaluate(study, items[item_id]), True, ""
        except PointFailed as exc:
            result, ok, reason = {}, False, str(exc)
            log.warning("round %d item %s failed: %s", round_, item_id, reason)
        finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        rec = WorkResult(round_, items[item_id], ok, result, reason, round(time.perf_counter() - t0, 3), finished)
        _write_json(uri, rec.to_json())
        done.append({"item": item_id, "ok": ok, "reason": reason, "skipped": False})
    return _summary(study, "work", round=round_, items=done, failed=sum(not d["ok"] for d in done))


# ---------------------------------------------------------------------------------------------- aggregate
def aggregate(study_uri: str, round_: int) -> dict[str, Any]:
    """Fold round `round_`'s results into the state and history and decide: continue or finish (see the module
    doc for the order of writes). A round aggregated already returns its stored decision."""
    study = load_study(study_uri)
    layout = study.layout
    state = read_state(layout)
    r = int(round_)
    if r < state.round and storage.exists(layout.aggregate(r)):
        return _aggregate_summary(study, storage.read_json(layout.aggregate(r)), repeated=True)
    if r != state.round:
        raise InputError(f"study {layout.root} is at round {state.round}: round {r} cannot be aggregated")
    items = _read_plan(layout, r)
    missing = [i.id for i in items if not storage.exists(layout.work(r, i.id))]
    if missing:
        raise InputError(f"study {layout.root}: round {r} items {missing} have no result: run `sbi-core study "
                         f"--work --study {layout.root} --round {r} --item ID` for them")
    results = [WorkResult.from_json(storage.read_json(layout.work(r, i.id))) for i in items]
    history = _history_before(read_history(layout), r)
    if results:
        new_state, entries, decision = study.kind.aggregate(study, state, history, results)
    else:  # an empty round: the study had ended, was stopped, or nothing was left to do within the budget
        new_state, entries = state, []
        status = state.status if not state.running else "stopped" if stop_reason(layout) else "finished"
        decision = Decision.end(storage.read_json(layout.plan(r))["ended"], status, state.summary)
    cost = sum(res.item.cost for res in results)
    new_state, decision = _bounded(study, new_state.evolve(budget_used=state.budget_used + cost), decision, r)
    record = {"round": r, "items": [res.item.id for res in results], "failed": [res.item.id for res in results
              if not res.ok], "cost": cost, "decision": decision.to_json(), "state": new_state.to_json(),
              "entries": [{**e, "round": r} for e in entries], "seconds": round(sum(res.seconds for res in results), 3)}
    _write_json(layout.aggregate(r), record)
    _write_json(layout.history, _rebuild_history(layout, r))
    _write_json(layout.state, new_state.to_json())
    from sbi_core import tracking

    tracking.log_study_round(study.uri, study.name, study.config.model_dump(mode="json"), record)
    return _aggregate_summary(study, record, repeated=False)


def _bounded(study: Study, state: StudyState, decision: Decision, r: int) -> tuple[StudyState, Decision]:
    """Apply the stop flag, max_rounds and the budget to the kind's decision; the state after round r."""
    cfg = study.config
    stop = stop_reason(study.layout)
    if decision.action == "continue":
        if stop:
            decision = Decision.end(f"stopped: {stop}", "stopped", decision.summary)
        elif r >= cfg.max_rounds:
            decision = Decision.end(f"max_rounds reached ({r} of {cfg.max_rounds}); last: {decision.reason}",
                                    "finished", decision.summary)
        elif state.budget_used >= cfg.budget:
            decision = Decision.end(f"budget spent ({state.budget_used:g} of {cfg.budget} {study.unit}); last: "
                                    f"{decision.reason}", "finished", decision.summary)
    status = "running" if decision.action == "continue" else decision.status
    reason = "" if decision.action == "continue" else decision.reason
    return state.evolve(round=r + 1, rounds=r, status=status, reason=reason, summary=decision.summary), decision


def _rebuild_history(layout: StudyLayout, r: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k in range(1, r + 1):
        if storage.exists(layout.aggregate(k)):
            out.extend(storage.read_json(layout.aggregate(k))["entries"])
    return out


def _aggregate_summary(study: Study, record: dict[str, Any], *, repeated: bool) -> dict[str, Any]:
    d, r = record["decision"], int(record["round"])
    return _summary(study, "aggregate", round=r, decision=d["action"], status=record["state"]["status"],
                    reason=d["reason"], summary=d["summary"], budget_used=record["state"]["budget_used"],
                    failed=record["failed"], next_round=r + 1, next_run_id=next_run_id(study.name, r + 1),
                    repeated=repeated)


# ---------------------------------------------------------------------------------------------- finish
def finish(study_uri: str) -> dict[str, Any]:
    """The final results (results.json) and plots of a study that has ended; rerunning rewrites them."""
    study = load_study(study_uri)
    layout = study.layout
    state = read_state(layout)
    if state.running:
        raise InputError(f"study {layout.root} is still running (round {state.round}): it finishes after the "
                         "aggregate that ends it (`sbi-core study --stop` ends it at the next one)")
    history = read_history(layout)
    results = study.kind.finish(study, state, history)
    record = {"study": study.uri, "name": study.name, "kind": study.kind.name, "status": state.status,
              "reason": state.reason, "rounds": state.rounds, "budget": study.config.budget,
              "budget_used": state.budget_used, "unit": study.unit, "points": len(history), **results}
    _write_json(layout.results, record)
    from sbi_core import tracking

    tracking.log_study_results(study.uri, study.name, study.config.model_dump(mode="json"), record,
                               [p for p in results.get("plots", {}).values()] + [layout.results])
    return _summary(study, "finish", status=state.status, reason=state.reason, rounds=state.rounds,
                    results=layout.results, headline=results.get("headline", {}), plots=results.get("plots", {}))


# ---------------------------------------------------------------------------------------------- drive
def drive(study_uri: str) -> dict[str, Any]:
    """Run a study's remaining rounds in this process, one after another (what one DAG run per round does,
    without Airflow: a laptop, the tests, the benchmarks), then finish it. Idempotent like its steps."""
    layout = StudyLayout(study_uri)
    state = read_state(layout)
    while state.running:
        planned = plan(study_uri, state.round)
        if planned["items"]:
            work(study_uri, state.round, planned["items"])
        aggregate(study_uri, state.round)
        state = read_state(layout)
    return finish(study_uri)


# ---------------------------------------------------------------------------------------------- show, stop
def show(study_uri: str) -> dict[str, Any]:
    """Where a study stands and why it stopped, its rounds and its history, as tables on stderr; the same as
    the JSON summary."""
    from sbi_core.studies.table import render

    study = load_study(study_uri)
    layout = study.layout
    state = read_state(layout)
    history = read_history(layout)
    rounds = [storage.read_json(layout.aggregate(k)) for k in range(1, state.round) if storage.exists(layout.aggregate(k))]
    pending = _pending(layout, state)
    points = study.kind.describe(study, state)
    stop = stop_reason(layout)
    text = render(study, state, rounds, history, points, pending, stop,
                  storage.exists(layout.results))
    print(text, flush=True)
    return _summary(study, "show", status=state.status, reason=state.reason, round=state.round,
                    rounds=state.rounds, budget=study.config.budget, budget_used=state.budget_used,
                    unit=study.unit, stop_flag=stop, pending=pending, summary=state.summary,
                    history=len(history), results=layout.results if storage.exists(layout.results) else None)


def _pending(layout: StudyLayout, state: StudyState) -> dict[str, Any] | None:
    """The current round's progress when it is planned but not aggregated."""
    if not state.running or not storage.exists(layout.plan(state.round)):
        return None
    ids = [i["id"] for i in storage.read_json(layout.plan(state.round))["items"]]
    done = [i for i in ids if storage.exists(layout.work(state.round, i))]
    return {"round": state.round, "items": len(ids), "done": len(done), "waiting": sorted(set(ids) - set(done))[:20]}


def stop(study_uri: str, reason: str = "") -> dict[str, Any]:
    """Set the stop flag: the study ends (status stopped) at its next aggregate, and plans no more work."""
    study = load_study(study_uri)
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    storage.write_json(study.layout.stop, {"reason": reason or f"stop requested at {at}", "at": at})
    state = read_state(study.layout)
    return _summary(study, "stop", flag=study.layout.stop, status=state.status, round=state.round,
                    reason=reason or f"stop requested at {at}")
