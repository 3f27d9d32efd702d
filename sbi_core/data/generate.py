"""Generate one shard: simulate at the sampling benchmark, apply cuts until the shard is full, write it.

The random stream of shard i is `SeedSequence(seed, spawn_key=(i,))`: independent of every other
shard and of how many shards run at once. Weights are normalised so that summing them over the whole
run (all shards) estimates the fiducial cross section at each benchmark.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core import storage
from sbi_core.data.format import (
    LATENT,
    OBSERVATIONS,
    WEIGHTS,
    EventFileInfo,
    EventFileWriter,
    simulator_header,
    verify_complete,
    weight_columns,
)
from sbi_core.errors import InputError, ShardError
from sbi_core.physics.base import EventBatch, Simulator
from sbi_core.physics.cuts import cut_mask
from sbi_core.physics.registry import make_simulator
from sbi_core.physics.sampler_file import read_sampler

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.plan import GenerationPlan

log = logging.getLogger(__name__)
MAX_BATCH = 65_536
#: Give up when cuts keep fewer than one event in this many (a misconfigured cut, not physics).
MIN_ACCEPTANCE = 1e-4


def shard_rng(seed: int, index: int) -> np.random.Generator:
    """The shard's own random stream, derived from (run seed, shard index)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def simulate_passing(
    sim: Simulator, cfg: AnalysisConfig, n_keep: int, rng: np.random.Generator
) -> tuple[EventBatch, int]:
    """Exactly n_keep events passing the cuts, and how many were simulated to get them."""
    kept: list[EventBatch] = []
    n_kept = n_generated = 0
    while n_kept < n_keep:
        need = n_keep - n_kept
        acceptance = n_kept / n_generated if n_kept else 1.0
        size = min(MAX_BATCH, math.ceil(need / max(acceptance, 0.01) * 1.05) + 16)
        batch = sim.simulate(size, rng)
        passing = np.flatnonzero(cut_mask(cfg, batch.observations))
        if len(passing) >= need:
            # Stop at the event that fills the shard: the events after it were never "generated".
            passing = passing[:need]
            n_generated += int(passing[-1]) + 1
        else:
            n_generated += size
        kept.append(batch.select(passing))
        n_kept += len(passing)
        if n_generated > 10_000 and n_kept < MIN_ACCEPTANCE * n_generated:
            raise InputError(f"cuts keep {n_kept} of {n_generated} simulated events (< {MIN_ACCEPTANCE:g}): check cuts")
    return EventBatch(
        *(
            np.concatenate([getattr(b, f) for b in kept])
            for f in ("observations", "latent", "weights", "nuisance_weights")
        )
    ), n_generated


def generate_shard(cfg: AnalysisConfig, plan: GenerationPlan, index: int, uri: str,
                   sampler_uri: str | None = None) -> dict[str, Any]:
    """Simulate shard `index` of the plan and write it atomically to uri; return its summary.

    A shard that uri already holds complete and verified (a retried batch task) is kept as it is. A simulator
    whose sampler is trained once per run (`sampler_kind()` not None) draws from the run's sampler file at
    sampler_uri, refused (InputError naming it) when corrupt or trained for another config."""
    plan.check_shard(index)
    t0 = time.perf_counter()
    n_keep = plan.shard_events[index]
    done = _finished_shard(uri, plan.config_hash, n_keep)
    if done is not None:
        storage.remove_stale_temporaries(uri)  # a writer killed after it published leaves its temporary
        log.info("shard %d: %s is complete and verified, not regenerated", index, uri)
        return _summary(index, uri, n_keep, done.n_generated, skipped=True, t0=t0)
    sim = make_simulator(cfg)
    kind = sim.sampler_kind() if hasattr(sim, "sampler_kind") else None
    if kind is not None:
        if sampler_uri is None:
            raise ValueError(f"simulator {cfg.simulator.name!r} draws from a trained sampler: pass its file")
        sim.load_sampler(read_sampler(sampler_uri, config_hash=plan.config_hash, kind=kind), sampler_uri)
    batch, n_generated = simulate_passing(sim, cfg, n_keep, shard_rng(plan.seed, index))
    # Each shard's weights sum to (its share of the run's events) x the fiducial cross section.
    scale = n_keep / (n_generated * plan.events)
    widths = {
        OBSERVATIONS: batch.observations.shape[1],
        WEIGHTS: len(weight_columns(cfg)),
        LATENT: batch.latent.shape[1],
    }
    header = {
        "config_hash": plan.config_hash,
        **simulator_header(cfg, sim),
        "kind": "shard",
        "seed": plan.seed,
        "shards": [index],
    }
    with storage.atomic_stream(uri) as tmp:
        writer = EventFileWriter(tmp, cfg, chunk_rows=plan.chunk_rows, widths=widths, n_rows=n_keep, header=header)
        writer.append(batch, scale)
        writer.close(n_generated)
    provenance = sim.provenance() if hasattr(sim, "provenance") else {}
    return {**_summary(index, uri, n_keep, n_generated, skipped=False, t0=t0), "provenance": provenance}


def _summary(index: int, uri: str, n_keep: int, n_generated: int, *, skipped: bool, t0: float) -> dict[str, Any]:
    return {
        "index": index,
        "uri": uri,
        "n_events": n_keep,
        "n_generated": n_generated,
        "acceptance": round(n_keep / n_generated, 6),
        "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _finished_shard(uri: str, config_hash: str, n_keep: int) -> EventFileInfo | None:
    """The shard's info when uri already holds exactly this shard (a retried batch task); None otherwise."""
    if not storage.exists(uri):
        return None
    try:
        with storage.open_read(uri) as handle:  # remote shards are checked in place, not downloaded
            return verify_complete(handle, uri, config_hash=config_hash, expected_events=n_keep)
    except ShardError as exc:
        log.warning("shard file exists but will be regenerated: %s", exc)
        return None
