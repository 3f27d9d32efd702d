"""The data stage's steps as plain functions: generate shards, combine them (map-reduce).

The command line (`sbi_core.data.commands`) and tests call these; each returns a small JSON-able summary.
"""

from __future__ import annotations

import time
from typing import Any

from sbi_core.data.combine import combine_files
from sbi_core.data.generate import generate_shard
from sbi_core.layout import RunLayout
from sbi_core.plan import GenerationPlan
from sbi_core.runs import configured_plan, load_run

__all__ = ["combine", "combine_groups", "generate"]


def generate(run_uri: str, shards: list[int]) -> dict[str, Any]:
    """Generate the given shards of a configured run, one file each."""
    t0 = time.perf_counter()
    layout, cfg, plan = load_run(run_uri)
    for i in shards:
        plan.check_shard(i)
    results = [generate_shard(cfg, plan, i, layout.shard(i), layout.sampler) for i in shards]
    provenance = next((r["provenance"] for r in results if r.get("provenance")), {})
    return {
        "step": "generate",
        "run": layout.root,
        "shards": results,
        "n_events": sum(r["n_events"] for r in results),
        **provenance,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def combine(run_uri: str, group: int | None) -> dict[str, Any]:
    """Combine a group's shards (group=G) or all groups into the run's events file (group=None)."""
    layout, plan = configured_plan(run_uri)
    return _combine_one(layout, plan, group)


def combine_groups(run_uri: str, groups: list[int]) -> dict[str, Any]:
    """Combine several groups, one after another (a batched task when groups outnumber the fan-out limit).

    One group gives that group's summary; several give `group: null` and the total. Either way
    `groups` lists each group's summary."""
    t0 = time.perf_counter()
    layout, plan = configured_plan(run_uri)
    for g in groups:
        plan.check_group(g)
    results = [_combine_one(layout, plan, g) for g in groups]
    if len(results) == 1:
        return {**results[0], "groups": results}
    return {
        "step": "combine",
        "run": layout.root,
        "group": None,
        "groups": results,
        "n_events": sum(r["n_events"] for r in results),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _combine_one(layout: RunLayout, plan: GenerationPlan, group: int | None) -> dict[str, Any]:
    if group is not None:
        plan.check_group(group)
        members = plan.groups[group]
        inputs = [layout.shard(i) for i in members]
        expected = plan.expected_shard_events(members)
        output, kind = layout.group(group), "group"
    else:
        inputs = [layout.group(g) for g in range(len(plan.groups))]
        expected = plan.expected_group_events()
        output, kind = layout.events, "combined"
    summary = combine_files(inputs, output, config_hash=plan.config_hash, expected_events=expected, kind=kind)
    return {"step": "combine", "run": layout.root, "group": group, **summary}
