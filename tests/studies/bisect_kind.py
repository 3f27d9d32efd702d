"""A cheap study kind for the mechanism's tests, registered through SBI_STUDY_PLUGINS=tests.studies.bisect_kind.

`bisect` locates the root of f(x) = x - target in [lo, hi]: each round evaluates `points_per_round` points evenly
inside the current bracket (cost 1 each), the bracket shrinks to the two points around the sign change, and the
study finishes when the bracket is narrower than `tolerance`. `fail_at` lists x values (to 6 decimals) whose
evaluation fails (a failed point is recorded and skipped); `crash_at` ones whose evaluation raises a bug."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sbi_core.config_base import ConfigSection
from sbi_core.studies.kinds import PointFailed, register_kind
from sbi_core.studies.state import Decision, WorkItem


class BisectOptions(ConfigSection):
    target: float = Field(default=0.3)
    lo: float = 0.0
    hi: float = 1.0
    fail_at: list[float] = Field(default_factory=list)
    crash_at: list[float] = Field(default_factory=list)


class Bisect:
    name = "bisect"
    unit = "evaluations"
    options = BisectOptions

    def check(self, study):
        o = study.options
        return [] if o.lo < o.target < o.hi else [("options.target", f"must lie inside ({o.lo}, {o.hi})")]

    def _bracket(self, study, state):
        return state.kind.get("bracket", [study.options.lo, study.options.hi])

    def plan_round(self, study, state, history):
        lo, hi = self._bracket(study, state)
        n = study.config.points_per_round
        xs = [lo + (hi - lo) * (k + 1) / (n + 1) for k in range(n)]
        return [WorkItem(f"x{state.round:02d}-{k}", {"x": round(x, 12)}, 1.0) for k, x in enumerate(xs)]

    def evaluate(self, study, item):
        x = item.inputs["x"]
        if round(x, 6) in [round(v, 6) for v in study.options.crash_at]:
            raise RuntimeError(f"a bug at x={x}")
        if round(x, 6) in [round(v, 6) for v in study.options.fail_at]:
            raise PointFailed(f"f is undefined at x={x}")
        return {"f": x - study.options.target}

    def aggregate(self, study, state, history, results):
        lo, hi = self._bracket(study, state)
        points = sorted([(lo, lo - study.options.target), (hi, hi - study.options.target)]
                        + [(r.item.inputs["x"], r.result["f"]) for r in results if r.ok])
        for (xa, fa), (xb, fb) in zip(points, points[1:], strict=False):
            if fa <= 0 <= fb:
                lo, hi = xa, xb
                break
        entries = [{"point": r.item.id, "inputs": r.item.inputs, "ok": r.ok, "reason": r.reason, "result": r.result,
                    "metrics": {"f": r.result["f"]} if r.ok else {}} for r in results]
        summary = {"root": (lo + hi) / 2, "width": hi - lo}
        new = state.evolve(kind={"bracket": [lo, hi]})
        if not any(r.ok for r in results):
            return new, entries, Decision.end("every point of the round failed", "failed", summary)
        if hi - lo < study.config.tolerance:
            return new, entries, Decision.end(f"converged: bracket {hi - lo:.3g} < tolerance", "finished", summary)
        return new, entries, Decision.go_on(f"bracket [{lo:.4g}, {hi:.4g}]", summary)

    def finish(self, study, state, history):
        lo, hi = self._bracket(study, state)
        return {"headline": {"root": (lo + hi) / 2, "width": hi - lo}, "plots": {}}

    def describe(self, study, state) -> list[dict[str, Any]]:
        lo, hi = self._bracket(study, state)
        return [{"lo": lo, "hi": hi}]


register_kind(Bisect())
