"""The whole-run steps as plain functions: configure a run, derive a run from another's events.

They sit on top of the stage rooms (configure checks every section and plans the work of every stage). The
data stage's own steps live in `sbi_core.data.steps` and are re-exported here for callers that drive a
whole run (tests, benches); run loading is `sbi_core.runs`, below every stage.
"""

from __future__ import annotations

import time
from typing import Any

import h5py

from sbi_core import storage
from sbi_core.analysis import load_analysis, validate_analysis
from sbi_core.config import (
    NOT_EVENT_FIELDS,
    apply_overrides,
    config_hash,
    config_to_yaml,
)
from sbi_core.data.format import simulator_header, write_header
from sbi_core.data.steps import combine, combine_groups, generate
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout
from sbi_core.ml.plan import plan_summary
from sbi_core.physics.registry import get_simulator_class, make_simulator
from sbi_core.plan import GenerationPlan, make_file_plan, make_plan
from sbi_core.runs import load_run, run_events


def configure(config_uri: str, run_uri: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Validate the config, write config.yaml, plan.json and setup.h5 under the run; return the shard plan."""
    t0 = time.perf_counter()
    cfg = load_analysis(config_uri, overrides)
    sim_cls = get_simulator_class(cfg.simulator.name)
    inputs = None
    if hasattr(sim_cls, "resolve_inputs"):  # a simulator that reads input files (lhe): one shard per file
        cfg, inputs = sim_cls.resolve_inputs(cfg, config_uri)
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
    if inputs is None:
        plan = make_plan(g.events, g.shards, g.shards_per_group, g.seed, digest)
    else:
        plan = make_file_plan(len(inputs), g.events, g.shards_per_group, g.seed, digest)
    sim = make_simulator(cfg)
    sampler = sim.sampler_kind() if hasattr(sim, "sampler_kind") else None
    with storage.atomic_write(layout.setup) as tmp, h5py.File(tmp, "w") as f:
        write_header(
            f,
            cfg,
            config_hash=digest,
            **simulator_header(cfg, sim),
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
        "samplers": [sampler] if sampler else [],  # a train-sampler task before generate when not empty
        **({"parton_densities": sim.provenance()["parton_densities"]} if hasattr(sim, "provenance") else {}),
        **plan_summary(cfg),
        "sizes_known": plan.sizes_known,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def derive(source_run: str, run_uri: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """A new run that reads the events of `source_run` with other stage settings (`--set training...`).

    Overrides may change only fields that do not determine the events (config.NOT_EVENT_FIELDS); nothing
    is simulated or copied: the new run's plan points at the source's events, and at the source's trained
    ensembles when it has some (what a learned likelihood reads unless the new run trains its own). Rerunning with the same
    arguments is a no-op; a run already derived with other settings is refused."""
    t0 = time.perf_counter()
    src_layout, cfg, plan = load_run(source_run)
    events = run_events(src_layout, plan)
    if not storage.exists(events):
        raise InputError(f"source run {src_layout.root} has no events file {events}: run combine --all first")
    new_cfg = validate_analysis(apply_overrides(cfg.model_dump(mode="json"), overrides or []), "--set")
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
    # The learned likelihood of the new run reads the source's ensembles (a sbi_infer run on a sbi_train run).
    networks = src_layout.root if storage.exists(src_layout.ensembles_index) else plan.networks_uri
    derived = GenerationPlan(**{**plan.to_json(), "events_uri": events, "networks_uri": networks})
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



__all__ = ["combine", "combine_groups", "configure", "derive", "generate", "load_run", "run_events"]
