"""The final results of an `active_learning` study and its plot `plots/points.png` (every evaluated point,
coloured by its value; the best point, or each cycle's simulated point, marked).

excess: the point of the largest excess, its observed and expected figures, the evaluations it took, and the
points a grid of the same resolution (`tolerance` per parameter) would have needed. disagreement: per cycle the
largest disagreement, where it was and the closure RMS there (exact likelihood), the events simulated, and the
training run holding the last networks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sbi_core import storage
from sbi_core.studies.state import StudyState
from sbi_core.studies.study import Study

__all__ = ["grid_points", "report"]


def grid_points(space: dict[str, tuple[float, float]], resolution: float) -> int:
    """Points of a regular grid with spacing `resolution` over the space: prod(floor(width / resolution) + 1)."""
    return int(math.prod(math.floor((hi - lo) / resolution + 1e-9) + 1 for lo, hi in space.values()))


def _plot(uri: str, names: list[str], searches: list[dict[str, Any]], marks: list[dict[str, float]],
          label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.8))
    ok = [e for e in searches if e["ok"]]
    xs = [e["inputs"]["point"][names[0]] for e in ok]
    vals = [e["result"]["value"] for e in ok]
    if len(names) >= 2:
        ys = [e["inputs"]["point"][names[1]] for e in ok]
        sc = ax.scatter(xs, ys, c=vals, s=18, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=label)
        ax.plot([m[names[0]] for m in marks], [m[names[1]] for m in marks], "r*", ms=12, label="chosen")
        ax.set_ylabel(names[1])
    else:
        ax.plot(xs, vals, "o", ms=4)
        ax.set_ylabel(label)
        for m in marks:
            ax.axvline(m[names[0]], color="r", ls="--")
    ax.set_xlabel(names[0])
    fig.tight_layout()
    with storage.atomic_write(uri) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def report(study: Study, state: StudyState, history: Sequence[dict[str, Any]],
           space: dict[str, tuple[float, float]]) -> dict[str, Any]:
    o = study.options
    names = list(space)
    searches = [e for e in history if e["inputs"].get("phase", "search") in ("search", "polish")]
    plot = study.layout.plot("points")
    if o.objective == "excess":
        ok = [e for e in searches if e["ok"]]
        best = max(ok, key=lambda e: e["result"]["value"]) if ok else None
        out: dict[str, Any] = {
            "objective": "excess", "statistic": o.statistic, "evaluations": len(searches),
            "failed": sum(not e["ok"] for e in searches),
            "grid_points": grid_points(space, study.config.tolerance), "resolution": study.config.tolerance}
        if best is not None:
            out["best"] = {"point": best["inputs"]["point"], "value": best["result"]["value"],
                           "observed": best["result"].get("observed"), "expected": best["result"].get("expected")}
            out["headline"] = {"best_value": best["result"]["value"], "evaluations": len(searches),
                               "grid_points": out["grid_points"],
                               **{f"best_{k}": v for k, v in best["inputs"]["point"].items()}}
        _plot(plot, names, searches, [best["inputs"]["point"]] if best else [], "excess")
        return {**out, "plots": {"points": plot}}
    cycles = []
    for item in state.kind.get("history_max", []):
        c = int(item["cycle"])
        pts = [e for e in searches if e["inputs"].get("cycle") == c and e["ok"]]
        at = max(pts, key=lambda e: e["result"]["value"]) if pts else None
        cycles.append({"cycle": c, "max_disagreement": item["max"], "point": item["point"],
                       "closure_rms": at["result"].get("closure_rms") if at else None, "evaluations": len(pts)})
    _plot(plot, names, searches, [c["point"] for c in cycles], "disagreement")
    final_run = state.kind.get("run", study.config.run)
    headline = {"events": int(state.kind.get("events", 0)), "cycles": len(cycles)}
    if cycles:
        headline["last_max_disagreement"] = cycles[-1]["max_disagreement"]
    return {"objective": "disagreement", "method": o.method, "cycles": cycles, "events": headline["events"],
            "final_run": final_run, "sample_runs": [storage.join(study.uri, "runs", f"sample-c{c['cycle']:02d}")
                                                   for c in cycles if c["cycle"] < int(state.kind.get("cycle", 0))],
            "headline": headline, "plots": {"points": plot}}
