"""`study --show` as text: where a study stands and why, its rounds, the kind's table, the history.

History entries follow one convention (every kind writes them so): `round`, `point` (an id), `inputs`, `ok`,
`reason` (why a point failed), `result` and `metrics` (numbers, also logged to MLflow).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_table", "format_value", "render"]


def format_value(v: Any) -> str:
    """Numbers with 4 significant digits, mappings as compact JSON, None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, Mapping | list | tuple):
        return json.dumps(_rounded(v), separators=(",", ":"))
    return str(v)


def _rounded(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.4g}")
    if isinstance(v, Mapping):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_rounded(x) for x in v]
    return v


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, max_width: int = 60) -> str:
    """A plain-text table of `rows` (dicts) with the given columns, cells cut at max_width characters."""
    cells = [[format_value(r.get(c)) for c in columns] for r in rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(x.rstrip() for x in out)


def _status_line(state: Any, pending: Mapping[str, Any] | None, stop: str | None) -> str:
    if state.running:
        if pending:
            waiting = f" (waiting for {', '.join(pending['waiting'])})" if pending["waiting"] else ""
            line = f"running: round {pending['round']} planned, {pending['done']} of {pending['items']} items done{waiting}"
        else:
            line = f"running: round {state.round} not planned yet"
        return line + (f"; stop flag set ({stop}): it ends at the next aggregate" if stop else "")
    return f"{state.status} after {state.rounds} round(s): {state.reason}"


def render(study: Any, state: Any, rounds: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]],
           points: Sequence[Mapping[str, Any]], pending: Mapping[str, Any] | None, stop: str | None,
           has_results: bool) -> str:
    """The whole `study --show` text."""
    cfg = study.config
    pct = 100.0 * state.budget_used / cfg.budget
    lines = [
        f"Study {study.name}  (kind {study.kind.name}; {study.uri})",
        f"  status : {_status_line(state, pending, stop)}",
        f"  budget : {state.budget_used:g} of {cfg.budget} {study.unit} used ({pct:.0f}%); rounds "
        f"{state.rounds} of at most {cfg.max_rounds}; tolerance {cfg.tolerance:g}",
    ]
    if cfg.run:
        lines.append(f"  run    : {cfg.run}")
    if state.summary:
        lines.append(f"  latest : {format_value(state.summary)}")
    if has_results:
        lines.append(f"  results: {study.layout.results}")
    if rounds:
        rows = [{"round": r["round"], "items": len(r["items"]), "failed": len(r["failed"]), "cost": r["cost"],
                 "decision": r["decision"]["action"], "reason": r["decision"]["reason"]} for r in rounds]
        lines += ["", "Rounds", format_table(rows, ["round", "items", "failed", "cost", "decision", "reason"],
                                             max_width=100)]
    if points:
        lines += ["", f"Points ({study.kind.name})", format_table(points, list(points[0]))]
    if history:
        rows = [{"round": e.get("round"), "point": e.get("point"), "inputs": e.get("inputs"),
                 "result": e.get("result") if e.get("ok", True) else f"FAILED: {e.get('reason')}"} for e in history]
        lines += ["", f"History ({len(history)} entries)", format_table(rows, ["round", "point", "inputs", "result"],
                                                                         max_width=90)]
    return "\n".join(lines)
