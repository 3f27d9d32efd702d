"""The whole-run steps as plain functions: configure a run, derive a run from another's events, resample a run
at a new parameter point, import a MadMiner event file.

They sit on top of the stage rooms (configure checks every section and plans the work of every stage). The
data stage's own steps live in `sbi_core.data.steps` and are re-exported here for callers that drive a
whole run (tests, benches); run loading is `sbi_core.runs`, below every stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from typing import Any

import h5py

from sbi_core import storage
from sbi_core.analysis import load_analysis, validate_analysis
from sbi_core.config import (
    NOT_EVENT_FIELDS,
    AnalysisConfig,
    apply_overrides,
    config_hash,
    config_to_yaml,
    flow_mapping,
)
from sbi_core.data.format import madminer_gaps_of, simulator_header, write_header
from sbi_core.data.steps import combine, combine_groups, generate
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout
from sbi_core.ml.plan import plan_summary
from sbi_core.physics.registry import get_simulator_class, make_simulator
from sbi_core.plan import GenerationPlan, make_file_plan, make_plan
from sbi_core.runs import load_run, read_plan, run_events

log = logging.getLogger(__name__)


def configure(config_uri: str, run_uri: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Validate the config, write config.yaml, plan.json and setup.h5 under the run; return the shard plan."""
    t0 = time.perf_counter()
    cfg = load_analysis(config_uri, overrides)
    sim_cls = get_simulator_class(cfg.simulator.name)
    inputs = None
    if hasattr(sim_cls, "resolve_inputs"):  # a simulator that reads input files (lhe): one shard per file
        cfg, inputs = sim_cls.resolve_inputs(cfg, config_uri)
    storage.check_within_root(run_uri or cfg.output, "--run" if run_uri else "output (the config's run URI)")
    layout = RunLayout(run_uri or cfg.output)
    _check_dataset_file(cfg)
    digest = config_hash(cfg)
    if storage.exists(layout.plan):
        previous = read_plan(layout.plan).config_hash
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
        madminer_notes = madminer_gaps_of(f)
    if madminer_notes:  # said once per run here, not at every shard
        log.warning("event files for MadMiner 0.9.6: %s (docs/data-format.md)", "; ".join(madminer_notes))
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
        "madminer_notes": madminer_notes,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _check_dataset_file(cfg: AnalysisConfig) -> None:
    """An observed-data file (`inference.dataset.uri`) must exist and be an events file now, not at the fit."""
    from sbi_core.data.format import inspect_event_file
    from sbi_core.errors import ShardError

    dataset = cfg.inference.dataset
    if dataset.kind != "file" or not dataset.uri:
        return
    try:
        with storage.open_for_inspection(dataset.uri) as src:
            inspect_event_file(src, dataset.uri)
    except FileNotFoundError:
        raise InputError(f"inference.dataset.uri: events file {dataset.uri} not found") from None
    except ShardError as exc:
        raise InputError(f"inference.dataset.uri: {exc.uri} is not a usable events file: {exc.reason}") from None


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
    _check_dataset_file(new_cfg)
    storage.check_within_root(run_uri, "--run")
    layout = RunLayout(run_uri)
    if layout.root == src_layout.root:
        raise InputError(f"derive: --run must differ from --from ({layout.root})")
    text = config_to_yaml(new_cfg)
    if storage.exists(layout.plan):
        same = storage.read_text(layout.config) == text if storage.exists(layout.config) else False
        if not same or read_plan(layout.plan).events_uri != events:
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
    values = flow_mapping({k: point[k] for k in names})
    sets = [f"generation.sampling_point={values}", f"generation.events={events}", f"generation.shards={n_shards}",
            f"generation.seed={sampling_seed(cfg.generation.seed, point) if seed is None else seed}",
            "training.samples.theta0=fixed", f"training.samples.theta_fixed={values}", *(overrides or [])]
    return {**configure(src_layout.config, run_uri, sets), "step": "resample", "source": src_layout.root,
            "point": {k: float(point[k]) for k in names}}




#: What an import's --set may not change: the events file is built from them (parameter ranges, true values,
#: descriptions, training and inference may change).
_IMPORTED = ("parameter_names", "benchmarks", "observable_names", "cuts", "nuisance", "simulator", "morphing",
             "generation")


def import_madminer(file_uri: str, run_uri: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """A run from a MadMiner 0.9.6 event file (`sbi_core.data.madminer_import`): config.yaml naming the `madminer`
    simulator, setup.h5, events.h5, then plan.json (last); the pipeline continues with sample, train and the fit.

    --set changes the generated config (e.g. `parameters[0].true_value=0.5`, `training.methods=[alices]`), not
    the imported columns. Rerunning with the same file and settings keeps a complete run; a run holding another
    analysis is refused. Bad or partial files are InputErrors naming the HDF5 group."""
    from sbi_core.data import madminer_import as mmi
    from sbi_core.data.format import verify_complete

    t0 = time.perf_counter()
    layout = RunLayout(run_uri)
    if not storage.exists(file_uri):
        raise InputError(f"MadMiner file {file_uri} not found")
    with storage.local_copy(file_uri) as path:
        mm = mmi.read_madminer(path, file_uri)
        base = validate_analysis(mmi.analysis_dict(mm, layout.root), file_uri)
        cfg = validate_analysis(apply_overrides(base.model_dump(mode="json"), overrides or []), "--set")
        changed = [k for k in _IMPORTED if getattr(cfg, k) != getattr(base, k)]
        if changed:
            raise InputError(f"--set may not change what the import reads from the MadMiner file: {changed}")
        digest = config_hash(cfg)
        plan = make_plan(mm.kept, 1, 1, cfg.generation.seed, digest)
        if storage.exists(layout.plan):
            if storage.read_json(layout.plan).get("config_hash") != digest:
                raise InputError(f"run {layout.root} already holds another analysis: choose a new run URI; nothing "
                                 "was written")
            with storage.local_copy(layout.events) as events:
                verify_complete(events, layout.events, config_hash=digest, expected_events=mm.kept)
            return _import_summary(layout, mm, cfg, plan, t0, skipped=True)
        header = {"config_hash": digest, **simulator_header(cfg, make_simulator(cfg)), "seed": plan.seed}
        with storage.atomic_write(layout.setup) as tmp, h5py.File(tmp, "w") as f:
            write_header(f, cfg, kind="setup", chunk_rows=plan.chunk_rows, **header)
        with storage.atomic_write(layout.events) as tmp:
            mmi.write_events(path, mm, cfg, plan, tmp, {**header, "kind": "combined", "shards": [0]})
    storage.write_text(layout.config, config_to_yaml(cfg))
    storage.write_json(layout.plan, plan.to_json())  # last: its presence means "configured"
    return _import_summary(layout, mm, cfg, plan, t0, skipped=False)


def _import_summary(layout: RunLayout, mm: Any, cfg: Any, plan: GenerationPlan, t0: float, *, skipped: bool
                    ) -> dict[str, Any]:
    return {
        "step": "import-madminer",
        "run": layout.root,
        "file": mm.uri,
        "config": layout.config,
        "events": layout.events,
        "config_hash": plan.config_hash,
        "n_events": mm.kept,
        "dropped_nonfinite": mm.dropped_nonfinite,
        "dropped_benchmarks": mm.dropped_benchmarks,
        "unused_benchmarks": mm.unused_benchmarks,
        "sampling_benchmark": cfg.sampling_benchmark,
        "nuisance": {n.name: str(n.kind) for n in cfg.nuisance},
        "renamed": cfg.simulator.options.get("renamed", {}),
        **plan_summary(cfg),
        "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 3),
    }


__all__ = ["combine", "combine_groups", "configure", "derive", "generate", "import_madminer", "load_run",
           "resample", "run_events", "sampling_seed"]
