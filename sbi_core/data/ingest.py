"""Ingest one LHE input file into its shard: stream, detector, observables, cuts; written in parts, resumable.

Order of work, so that a failure never loses finished work and never publishes a partial shard:
1. a shard that is already complete and verified is kept as it is (a retried task);
2. the parts under `RUN/ingest/shard-I/` (`RunLayout.ingest_part`) are checked in order; the first
   unreadable or foreign one and every one after it are removed;
3. the file is streamed from the first event no part covers (earlier events are parsed and skipped); each
   `part_events` events read become one part, written atomically with the passing events (raw LHE weights),
   the number of events read and the sum of their nominal weights (all of them, before cuts). Part k holds
   the file's events [k P, (k + 1) P) and draws its detector noise from SeedSequence(seed, spawn_key=(I, k)),
   so a resumed ingest writes exactly what an uninterrupted one would;
4. when the file ends (or the shard holds its planned maximum, `plan.shard_events[I]`), the parts are
   copied into the shard with the weights normalised: over every event read, the nominal weights sum to
   the file's `<init>` cross section times the file's `scale`, so the shard's weights estimate its process's
   fiducial cross section; the sealed shard is published atomically, then the parts are removed.
A malformed or truncated file fails in step 3 with an InputError naming the file and the event; the parts
before that event stay, and a rerun (once the file is complete) resumes after them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from sbi_core import storage
from sbi_core.data.format import (
    LATENT,
    OBSERVATIONS,
    SAMPLE_DATASETS,
    WEIGHTS,
    create_sample_datasets,
    inspect_event_file,
    raw_crc32,
    seal,
    simulator_header,
    weight_columns,
    write_header,
)
from sbi_core.errors import InputError, ShardError

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.layout import RunLayout
    from sbi_core.physics.base import EventBatch
    from sbi_core.physics.lhe import LHESimulator
    from sbi_core.physics.lhe_reader import LHEHeader
    from sbi_core.plan import GenerationPlan

log = logging.getLogger(__name__)
PART_FORMAT = "sbi-ingest-part"
#: Events converted at once inside a part: bounds memory when parts are large.
BATCH_EVENTS = 5_000


@dataclass(frozen=True)
class PartInfo:
    """What a complete part records (its attributes)."""

    uri: str
    n_events: int  # passing events stored
    n_read: int  # events of the file it covers
    nominal_sum: float  # sum of XWGTUP over the events it covers
    cross_section: float  # the file's <init> cross section, pb
    last: bool  # the file ended (or the shard was full) in this part


def part_rng(seed: int, file_index: int, part: int) -> np.random.Generator:
    """Detector noise of one part: independent of every other part and of where a resumed ingest started."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(file_index, part)))


def _read_part(uri: str, *, config_hash: str, file_index: int, part: int) -> PartInfo:
    """A part's record; ShardError when it is unreadable, foreign or incomplete."""
    try:
        with storage.local_copy(uri) as path, h5py.File(path, "r") as f:
            a = dict(f.attrs)
            if a.get("format") != PART_FORMAT:
                raise ShardError(uri, f"not an ingest part (format {a.get('format')!r})")
            if a.get("config_hash") != config_hash:
                raise ShardError(uri, "foreign: written for another config")
            if int(a.get("file_index", -1)) != file_index or int(a.get("part", -1)) != part:
                raise ShardError(uri, "holds another file's or part's events")
            if "n_events" not in a:
                raise ShardError(uri, "unsealed")
            n = int(a["n_events"])
            for name in SAMPLE_DATASETS:
                if f[name].shape[0] != n:
                    raise ShardError(uri, f"{name} has {f[name].shape[0]} rows, header records {n}")
            return PartInfo(uri, n, int(a["n_read"]), float(a["nominal_sum"]), float(a["cross_section"]),
                            bool(a["last"]))
    except ShardError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise ShardError(uri, f"unreadable ({exc})") from None


def _existing_parts(layout: RunLayout, config_hash: str, index: int) -> list[PartInfo]:
    """The complete parts of file `index`, in order; an unreadable one and all after it are removed."""
    parts: list[PartInfo] = []
    k = 0
    while storage.exists(uri := layout.ingest_part(index, k)):
        try:
            parts.append(_read_part(uri, config_hash=config_hash, file_index=index, part=k))
        except ShardError as exc:
            log.warning("%s; it and the parts after it are read again", exc)
            while storage.exists(layout.ingest_part(index, k)):
                storage.remove(layout.ingest_part(index, k))
                k += 1
            break
        k += 1
    return parts


def _weight_table(events: EventBatch, sampling: int) -> np.ndarray:
    """(n, B + 2K) weight columns as stored (`format.weight_columns`), still in raw LHE units."""
    n = len(events)
    w = events.weights
    nuis = (w[:, sampling, None, None] * events.nuisance_weights).reshape(n, -1)
    return np.hstack([w, nuis])


def _write_part(uri: str, *, config_hash: str, file_index: int, part: int, first_event: int, n_read: int,
                nominal_sum: float, header: LHEHeader, last: bool, arrays: dict[str, np.ndarray]) -> PartInfo:
    n = int(arrays[OBSERVATIONS].shape[0])
    with storage.atomic_write(uri) as tmp, h5py.File(tmp, "w") as f:
        for name in SAMPLE_DATASETS:  # temporary files: stored plainly, read back whole
            f.create_dataset(name, data=arrays[name])
        attrs = f.attrs
        attrs.update({"format": PART_FORMAT, "config_hash": config_hash, "file_index": file_index, "part": part,
                      "first_event": first_event, "n_read": n_read, "nominal_sum": nominal_sum,
                      "cross_section": header.cross_section, "input_uri": header.uri, "last": last})
        attrs["n_events"] = n  # last: a part without it is unsealed
    return PartInfo(uri, n, n_read, nominal_sum, header.cross_section, last)


def ingest_file(cfg: AnalysisConfig, plan: GenerationPlan, layout: RunLayout, index: int) -> dict[str, Any]:
    """Ingest input file `index` of an lhe run into `layout.shard(index)`; return its summary (see module doc)."""
    from sbi_core.physics.lhe import LHESimulator

    plan.check_shard(index)
    t0 = time.perf_counter()
    sim = LHESimulator(cfg)
    spec = sim.options.files[index]
    uri = layout.shard(index)
    done = _finished_shard(uri, plan.config_hash)
    if done is not None:
        for part in _existing_parts(layout, plan.config_hash, index):
            storage.remove(part.uri)
        return _summary(index, spec.uri, uri, done["n_events"], done["n_generated"], done["cross_section"],
                        resumed=0, parts=0, skipped=True, t0=t0)
    parts = _existing_parts(layout, plan.config_hash, index)
    resumed = len(parts)
    cap = plan.shard_events[index]
    kept = sum(p.n_events for p in parts)
    if not (parts and (parts[-1].last or kept >= cap)):
        parts += _read_parts(sim, cfg, plan, layout, index, spec.uri, parts, cap)
    n_events, n_read, xsec = _assemble(sim, cfg, plan, uri, index, spec.scale, parts)
    for part in parts:
        storage.remove(part.uri)
    if not storage.is_remote(uri):  # empty part directories (an object store has none)
        parts_dir = os.path.dirname(layout.ingest_part(index, 0))
        for directory in (parts_dir, os.path.dirname(parts_dir)):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
    return _summary(index, spec.uri, uri, n_events, n_read, xsec, resumed=resumed, parts=len(parts), skipped=False,
                    t0=t0)


def _read_parts(sim: LHESimulator, cfg: AnalysisConfig, plan: GenerationPlan, layout: RunLayout, index: int,
                input_uri: str, done: list[PartInfo], cap: int) -> list[PartInfo]:
    """Stream the file from the first event the parts `done` do not cover; write the rest as new parts."""
    from sbi_core.physics.lhe_reader import open_lhe

    size = sim.options.part_events
    sampling = cfg.benchmark_names.index(cfg.sampling_benchmark)
    kept = sum(p.n_events for p in done)
    new: list[PartInfo] = []
    with open_lhe(input_uri) as stream:
        k = len(done)
        if k:
            log.info("%s: resuming after %d complete parts (%d events)", input_uri, k, k * size)
            stream.skip(k * size)
            if stream.events_read < k * size:  # the file is shorter than the parts say: it changed
                raise InputError(f"LHE file {input_uri} has {stream.events_read} events, fewer than its "
                                 f"{k} finished parts cover ({k * size}): remove {layout.ingest_part(index, 0)} "
                                 "and the parts after it to start again")
        while True:
            first = stream.events_read
            rng = part_rng(plan.seed, index, k)
            chunks: list[dict[str, np.ndarray]] = []
            n_read = 0
            nominal_sum = 0.0
            last = False
            while n_read < size:
                batch = stream.read_batch(min(BATCH_EVENTS, size - n_read), weight_ids=sim.weight_ids,
                                          max_particles=sim.options.max_particles)
                if batch is None:
                    break
                conv = sim.convert(batch, stream.header, rng)
                events, read = conv.events, len(batch)
                if kept + len(events) >= cap:  # the shard is full: stop at the event that fills it
                    take = cap - kept
                    read = int(conv.passing[take - 1]) + 1
                    events = events.select(np.arange(take))
                    last = True
                nominal_sum += float(batch.nominal[:read].sum())
                n_read += read
                kept += len(events)
                chunks.append({OBSERVATIONS: events.observations, WEIGHTS: _weight_table(events, sampling),
                               LATENT: events.latent})
                if last:
                    break
            if n_read < size:
                last = True  # the file ended
            if n_read == 0:
                if not done and not new:
                    raise InputError(f"LHE file {input_uri} holds no events")
                # the previous part ended exactly at the end of the file: mark it by an empty last part
            arrays = {name: (np.concatenate([c[name] for c in chunks]) if chunks else
                             np.empty((0, _width(sim, cfg, name)))) for name in SAMPLE_DATASETS}
            new.append(_write_part(layout.ingest_part(index, k), config_hash=plan.config_hash, file_index=index,
                                   part=k, first_event=first, n_read=n_read, nominal_sum=nominal_sum,
                                   header=stream.header, last=last, arrays=arrays))
            log.info("%s: part %d: %d of %d events pass", input_uri, k, new[-1].n_events, n_read)
            k += 1
            if last:
                return new


def _width(sim: LHESimulator, cfg: AnalysisConfig, name: str) -> int:
    return {OBSERVATIONS: len(cfg.observables), WEIGHTS: len(weight_columns(cfg)), LATENT: len(sim.latent_names)}[name]


def _assemble(sim: LHESimulator, cfg: AnalysisConfig, plan: GenerationPlan, uri: str, index: int, scale: float,
              parts: list[PartInfo]) -> tuple[int, int, float]:
    """Copy the parts into the sealed shard with normalised weights; return (events, events read, sigma)."""
    n_total = sum(p.n_events for p in parts)
    n_read = sum(p.n_read for p in parts)
    nominal_sum = sum(p.nominal_sum for p in parts)
    xsec = parts[0].cross_section
    input_uri = sim.options.files[index].uri
    if n_total == 0:
        raise InputError(f"LHE file {input_uri}: none of its {n_read} events passes the cuts and has every "
                         "observable defined: check cuts, observables and the detector acceptance")
    if not (np.isfinite(nominal_sum) and nominal_sum > 0 and xsec > 0):
        raise InputError(f"LHE file {input_uri}: cannot normalise: <init> cross section {xsec} pb, nominal "
                         f"weights sum to {nominal_sum}")
    norm = xsec * scale / nominal_sum
    widths = {name: _width(sim, cfg, name) for name in SAMPLE_DATASETS}
    header = {"config_hash": plan.config_hash, **simulator_header(cfg, sim), "kind": "shard", "seed": plan.seed,
              "shards": [index]}
    with storage.atomic_write(uri) as tmp, h5py.File(tmp, "w", libver=("v110", "latest")) as f:
        write_header(f, cfg, chunk_rows=plan.chunk_rows, **header)
        create_sample_datasets(f, widths, n_total, plan.chunk_rows)
        # Whole chunks at a time: a chunk written in pieces would be compressed once per piece.
        pending: dict[str, list[np.ndarray]] = {name: [] for name in SAMPLE_DATASETS}
        offset = n_pending = 0
        for part in parts:
            if part.n_events == 0:
                continue
            with storage.local_copy(part.uri) as path, h5py.File(path, "r") as src:
                for name in SAMPLE_DATASETS:
                    pending[name].append(src[name][()] * (norm if name == WEIGHTS else 1.0))
            n_pending += part.n_events
            if n_pending >= plan.chunk_rows:
                offset, n_pending = _write_rows(f, pending, offset, plan.chunk_rows)
        _write_rows(f, pending, offset, 1)
        f.attrs.update({"input_uri": input_uri, "cross_section_pb": xsec, "weight_norm": norm,
                        "input_scale": scale})
        seal(f, n_generated=n_read)
    return n_total, n_read, xsec


def _write_rows(f: h5py.File, pending: dict[str, list[np.ndarray]], offset: int, multiple: int) -> tuple[int, int]:
    """Write the pending rows' largest multiple of `multiple` at offset; keep the rest pending. (new offset, rest)"""
    n = sum(len(a) for a in pending[OBSERVATIONS])
    take = n - n % multiple
    for name, arrays in pending.items():
        block = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        f[name][offset : offset + take] = block[:take]
        pending[name] = [block[take:]]
    return offset + take, n - take


def _finished_shard(uri: str, config_hash: str) -> dict[str, Any] | None:
    """The shard's counts when uri already holds it complete and verified (a retried task); None otherwise."""
    if not storage.exists(uri):
        return None
    try:
        with storage.local_copy(uri) as path:
            info = inspect_event_file(path, uri, config_hash=config_hash)
            with h5py.File(path, "r") as f:
                for name in SAMPLE_DATASETS:
                    if raw_crc32(f[name]) != int(f[name].attrs["raw_crc32"]):
                        raise ShardError(uri, f"corrupt: {name} chunk bytes do not match their recorded CRC")
                xsec = float(f.attrs.get("cross_section_pb", np.nan))
    except ShardError as exc:
        log.warning("shard file exists but will be written again: %s", exc)
        return None
    return {"n_events": info.n_events, "n_generated": info.n_generated, "cross_section": xsec}


def _summary(index: int, input_uri: str, uri: str, n_events: int, n_read: int, xsec: float, *, resumed: int,
             parts: int, skipped: bool, t0: float) -> dict[str, Any]:
    seconds = time.perf_counter() - t0
    return {
        "index": index,
        "input": input_uri,
        "uri": uri,
        "n_events": n_events,
        "n_read": n_read,
        "acceptance": round(n_events / n_read, 6) if n_read else None,
        "cross_section_pb": xsec,
        "parts": parts,
        "resumed_parts": resumed,
        "skipped": skipped,
        "seconds": round(seconds, 3),
    }


def ingest_lhe(run_uri: str, files: list[int]) -> dict[str, Any]:
    """The `ingest-lhe` step: ingest the given input files of a configured lhe run, one shard each."""
    from sbi_core.runs import load_run

    t0 = time.perf_counter()
    layout, cfg, plan = load_run(run_uri)
    if cfg.simulator.name != "lhe":
        raise InputError(f"run {layout.root} uses simulator {cfg.simulator.name!r}: ingest-lhe needs simulator "
                         "'lhe' (use `sbi-core generate` for generators)")
    if plan.events_uri is not None:
        raise InputError(f"run {layout.root} is derived from another run's events: nothing to ingest")
    for i in files:
        if not 0 <= i < plan.n_shards:
            raise InputError(f"--file {i} is outside the run's input files (0..{plan.n_shards - 1})")
    results = [ingest_file(cfg, plan, layout, i) for i in files]
    seconds = time.perf_counter() - t0
    n_read = sum(r["n_read"] for r in results)
    return {
        "step": "ingest-lhe",
        "run": layout.root,
        "files": results,
        "n_events": sum(r["n_events"] for r in results),
        "n_read": n_read,
        "events_per_second": round(n_read / seconds, 1) if seconds > 0 else None,
        "seconds": round(seconds, 3),
    }
