"""The whole-run steps as plain functions: configure a run, derive a run from another's events, resample a run
at a new parameter point.

They sit on top of the stage rooms (configure checks every section and plans the work of every stage). The
data stage's own steps live in `sbi_core.data.steps` and are re-exported here for callers that drive a
whole run (tests, benches); run loading is `sbi_core.runs`, below every stage.
"""

from __future__ import annotations

import hashlib
import json
import math
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
        "sizes_known": plan.sizes_known,
        "seconds": round(time.perf_counter() - t0, 3),
    }


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


def sampling_seed(seed: int, point: dict[str, float]) -> int:
    """The generation seed of a resampled run: a digest of the source's seed and the point (a new stream for
    every point, the same one for the same point)."""
    key = json.dumps({"seed": int(seed), "point": {k: float(v) for k, v in sorted(point.items())}}, sort_keys=True)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "little")


def resample(source_run: str, run_uri: str, point: dict[str, float], events: int, shards: int | None = None,
             seed: int | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Configure a new run with the source's analysis whose events are drawn at `point`
    (generation.sampling_point: the basis, the benchmarks and the reference are unchanged) and whose training
    samples put theta0 at that point (training.samples.theta0: fixed): what active learning simulates.

    `events` events in `shards` shards (default: the source's events per shard), seed `sampling_seed(source
    seed, point)` unless given; `overrides` as configure's. Then generate, combine and sample it as any run,
    and `sbi-core merge-samples` adds its training sets to another run's. Returns configure's summary."""
    src_layout, cfg, _ = load_run(source_run)
    names = cfg.parameter_names
    if sorted(point) != sorted(names):
        raise InputError(f"resample: --at must give every parameter {names}, got {sorted(point)}")
    if isinstance(events, bool) or not isinstance(events, int) or events < 1:
        raise InputError(f"resample: --events must be a positive integer, got {events!r}")
    per_shard = max(1, cfg.generation.events // cfg.generation.shards)
    n_shards = shards if shards is not None else max(1, math.ceil(events / per_shard))
    values = "{" + ", ".join(f"{k}: {float(point[k])!r}" for k in names) + "}"
    sets = [f"generation.sampling_point={values}", f"generation.events={events}", f"generation.shards={n_shards}",
            f"generation.seed={sampling_seed(cfg.generation.seed, point) if seed is None else seed}",
            "training.samples.theta0=fixed", f"training.samples.theta_fixed={values}", *(overrides or [])]
    return {**configure(src_layout.config, run_uri, sets), "step": "resample", "source": src_layout.root,
            "point": {k: float(point[k]) for k in names}}


__all__ = ["combine", "combine_groups", "configure", "derive", "generate", "load_run", "resample", "run_events",
           "sampling_seed"]
