"""The pipeline steps as plain functions: URIs in, a small JSON-able summary out.

The command line (`sbi_core.cli`) and tests call these; Airflow calls the command line.
"""

from __future__ import annotations

import time
from typing import Any

import h5py

from sbi_core import storage
from sbi_core.config import (
    NOT_EVENT_FIELDS,
    AnalysisConfig,
    apply_overrides,
    config_hash,
    config_to_yaml,
    load_config,
    validate_config,
)
from sbi_core.data.combine import combine_files
from sbi_core.data.format import simulator_header, write_header
from sbi_core.data.generate import generate_shard
from sbi_core.data.plan import GenerationPlan, make_plan
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout
from sbi_core.ml.plan import plan_summary
from sbi_core.physics.registry import make_simulator


def configure(config_uri: str, run_uri: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Validate the config, write config.yaml, plan.json and setup.h5 under the run; return the shard plan."""
    t0 = time.perf_counter()
    cfg = load_config(config_uri, overrides)
    layout = RunLayout(run_uri or cfg.output)
    digest = config_hash(cfg)
    if storage.exists(layout.plan):
        previous = storage.read_json(layout.plan).get("config_hash")
        if previous != digest:
            raise InputError(
                f"run {layout.root} already holds another analysis (config hash {str(previous)[:12]}, "
                f"this one {digest[:12]}): choose a new run URI; nothing was written"
            )
    g = cfg.generation
    plan = make_plan(g.events, g.shards, g.shards_per_group, g.seed, digest)
    with storage.atomic_write(layout.setup) as tmp, h5py.File(tmp, "w") as f:
        write_header(
            f,
            cfg,
            config_hash=digest,
            **simulator_header(cfg, make_simulator(cfg)),
            kind="setup",
            chunk_rows=plan.chunk_rows,
            seed=g.seed,
        )
    storage.write_text(layout.config, config_to_yaml(cfg))
    storage.write_json(layout.plan, plan.to_json())  # last: its presence means "configured"
    return {
        "step": "configure",
        "run": layout.root,
        "config": layout.config,
        "setup": layout.setup,
        "plan": layout.plan,
        "config_hash": digest,
        "events": plan.events,
        "n_shards": plan.n_shards,
        "shards": list(range(plan.n_shards)),
        "groups": plan.groups,
        "n_groups": len(plan.groups),
        **plan_summary(cfg),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def load_run(run_uri: str) -> tuple[RunLayout, AnalysisConfig, GenerationPlan]:
    """A configured run's layout, config and plan; InputError when the run was never configured."""
    layout, plan = _configured_plan(run_uri)
    cfg = load_config(layout.config)
    if config_hash(cfg) != plan.config_hash:
        raise InputError(f"{layout.config} does not match {layout.plan} (config hash differs): reconfigure the run")
    return layout, cfg, plan


def run_events(layout: RunLayout, plan: GenerationPlan) -> str:
    """The events file a run's later stages read: its own events.h5, or its source run's when derived."""
    return plan.events_uri or layout.events


def derive(source_run: str, run_uri: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """A new run that reads the events of `source_run` with other stage settings (`--set training...`).

    Overrides may change only fields that do not determine the events (config.NOT_EVENT_FIELDS); nothing
    is simulated or copied: the new run's plan points at the source's events. Rerunning with the same
    arguments is a no-op; a run already derived with other settings is refused."""
    t0 = time.perf_counter()
    src_layout, cfg, plan = load_run(source_run)
    events = run_events(src_layout, plan)
    if not storage.exists(events):
        raise InputError(f"source run {src_layout.root} has no events file {events}: run combine --all first")
    new_cfg = validate_config(apply_overrides(cfg.model_dump(mode="json"), overrides or []), "--set")
    if config_hash(new_cfg) != plan.config_hash:
        before, after = cfg.model_dump(mode="json"), new_cfg.model_dump(mode="json")
        changed = sorted(k for k in before if before[k] != after[k])
        raise InputError(f"--set changes what determines the events ({', '.join(changed)}): derive changes only "
                         f"{sorted(NOT_EVENT_FIELDS)}; configure a new run to change the events")
    layout = RunLayout(run_uri)
    if layout.root == src_layout.root:
        raise InputError(f"derive: --run must differ from --from ({layout.root})")
    text = config_to_yaml(new_cfg)
    if storage.exists(layout.plan):
        same = storage.read_text(layout.config) == text if storage.exists(layout.config) else False
        if not same or storage.read_json(layout.plan).get("events_uri") != events:
            raise InputError(f"run {layout.root} exists with other settings or another source: choose a new run URI")
    storage.write_text(layout.config, text)
    derived = GenerationPlan(**{**plan.to_json(), "events_uri": events})
    storage.write_json(layout.plan, derived.to_json())  # last: its presence means "configured"
    return {
        "step": "derive",
        "run": layout.root,
        "source": src_layout.root,
        "events": events,
        "config_hash": plan.config_hash,
        **plan_summary(new_cfg),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def generate(run_uri: str, shards: list[int]) -> dict[str, Any]:
    """Generate the given shards of a configured run, one file each."""
    t0 = time.perf_counter()
    layout, cfg, plan = load_run(run_uri)
    for i in shards:
        plan.check_shard(i)
    results = [generate_shard(cfg, plan, i, layout.shard(i)) for i in shards]
    return {
        "step": "generate",
        "run": layout.root,
        "shards": results,
        "n_events": sum(r["n_events"] for r in results),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def combine(run_uri: str, group: int | None) -> dict[str, Any]:
    """Combine a group's shards (group=G) or all groups into the run's events file (group=None)."""
    layout, plan = _configured_plan(run_uri)
    return _combine_one(layout, plan, group)


def combine_groups(run_uri: str, groups: list[int]) -> dict[str, Any]:
    """Combine several groups, one after another (a batched task when groups outnumber the fan-out limit).

    One group gives that group's summary; several give `group: null` and the total. Either way
    `groups` lists each group's summary."""
    t0 = time.perf_counter()
    layout, plan = _configured_plan(run_uri)
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
        expected = [plan.shard_events[i] for i in members]
        output, kind = layout.group(group), "group"
    else:
        inputs = [layout.group(g) for g in range(len(plan.groups))]
        expected = [plan.group_events(g) for g in range(len(plan.groups))]
        output, kind = layout.events, "combined"
    summary = combine_files(inputs, output, config_hash=plan.config_hash, expected_events=expected, kind=kind)
    return {"step": "combine", "run": layout.root, "group": group, **summary}


def _configured_plan(run_uri: str) -> tuple[RunLayout, GenerationPlan]:
    """A run's layout and plan; InputError when the run was never configured."""
    layout = RunLayout(run_uri)
    if not storage.exists(layout.plan):
        raise InputError(f"run {layout.root} is not configured (no plan.json): run `sbi-core configure` first")
    return layout, GenerationPlan.from_json(storage.read_json(layout.plan))
