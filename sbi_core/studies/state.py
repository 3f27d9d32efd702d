"""The records a study keeps between rounds: its state, a round's work items and results, a round's decision.

All are JSON (`to_json` / `from_json`), written with sorted keys, so the same inputs give the same bytes: a
rerun of a step can be compared byte for byte with an uninterrupted one. No wall-clock time goes into the
state or the history (a work result keeps its own duration and finishing time).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["ITEM_PATTERN", "STATUSES", "Decision", "StudyState", "WorkItem", "WorkResult"]

#: running: rounds go on; finished: the kind's answer is there (or a bound ended it); stopped: the stop flag;
#: failed: the kind cannot go on (e.g. every point of a round failed).
STATUSES = ("running", "finished", "stopped", "failed")
Status = Literal["running", "finished", "stopped", "failed"]
#: Work item ids name files and map-index labels.
ITEM_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


@dataclass(frozen=True)
class StudyState:
    """Where a study stands. `round` is the next round to plan (1 for a new study); `rounds` how many rounds
    were aggregated; `kind` the kind's own state (JSON); `summary` the headline figures of the last round."""

    round: int = 1
    status: Status = "running"
    reason: str = ""
    budget_used: float = 0.0
    rounds: int = 0
    kind: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")

    @property
    def running(self) -> bool:
        return self.status == "running"

    def evolve(self, **changes: Any) -> StudyState:
        """A copy with some fields changed (kinds update `kind` and leave the rest to the mechanism)."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "status": self.status, "reason": self.reason, "budget_used": self.budget_used,
                "rounds": self.rounds, "kind": self.kind, "summary": self.summary}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StudyState:
        return cls(int(d["round"]), d["status"], str(d.get("reason", "")), float(d.get("budget_used", 0.0)),
                   int(d.get("rounds", 0)), dict(d.get("kind", {})), dict(d.get("summary", {})))


@dataclass(frozen=True)
class WorkItem:
    """One unit of a round's work (one mapped task evaluates one or a batch of them).

    `id` names its result file (letters, digits, _ . -; unique in the round); `inputs` is what `evaluate` needs
    (JSON); `cost` is what it spends of the budget, in the kind's unit."""

    id: str
    inputs: dict[str, Any]
    cost: float = 1.0

    def __post_init__(self) -> None:
        if not ITEM_PATTERN.match(self.id):
            raise ValueError(f"work item id {self.id!r} must match {ITEM_PATTERN.pattern}")
        if not self.cost >= 0:
            raise ValueError(f"work item {self.id}: cost must be >= 0, got {self.cost}")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "inputs": self.inputs, "cost": self.cost}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WorkItem:
        return cls(str(d["id"]), dict(d["inputs"]), float(d.get("cost", 1.0)))


@dataclass(frozen=True)
class WorkResult:
    """What evaluating one item gave: `ok` and its `result`, or not ok and the `reason` (a failed point: an
    invalid fit, a diverged network). `seconds` and `finished` are for people; aggregates do not read them."""

    round: int
    item: WorkItem
    ok: bool
    result: dict[str, Any]
    reason: str = ""
    seconds: float = 0.0
    finished: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "item": self.item.to_json(), "ok": self.ok, "result": self.result,
                "reason": self.reason, "seconds": self.seconds, "finished": self.finished}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WorkResult:
        return cls(int(d["round"]), WorkItem.from_json(d["item"]), bool(d["ok"]), dict(d.get("result") or {}),
                   str(d.get("reason", "")), float(d.get("seconds", 0.0)), str(d.get("finished", "")))


@dataclass(frozen=True)
class Decision:
    """What a round's aggregate decided: go on (`continue`) or end (`finish`, with the status it ends in), why,
    and the round's headline figures (`summary`, shown by `study --show` and logged to MLflow)."""

    action: Literal["continue", "finish"]
    reason: str
    status: Status = "finished"
    summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ("continue", "finish"):
            raise ValueError(f"decision: expected continue or finish, got {self.action!r}")
        if self.action == "finish" and self.status == "running":
            raise ValueError("a finish decision needs a final status (finished, stopped or failed)")

    @classmethod
    def go_on(cls, reason: str, summary: Mapping[str, Any] | None = None) -> Decision:
        return cls("continue", reason, "running", dict(summary or {}))

    @classmethod
    def end(cls, reason: str, status: Status = "finished", summary: Mapping[str, Any] | None = None) -> Decision:
        return cls("finish", reason, status, dict(summary or {}))

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "status": self.status, "summary": self.summary}
