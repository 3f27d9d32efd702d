"""The `train-sampler` step: train a run's phase-space sampler once, before its generate shards.

Order of work: load the run (its config and plan agree); nothing to do when the config's simulator samples
without a trained proposal (drell_yan_eft with `sampler: vegas`, every other simulator); keep a sampler
file that is already there, complete and trained for this config (a retried task); otherwise train and
write the file atomically (`sampler_file.write_sampler`), so a shard never reads half a file. A corrupt or
foreign file in the run's place is replaced, and the summary says so.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.physics.registry import make_simulator
from sbi_core.physics.sampler_file import SamplerArtifact, read_sampler, write_sampler
from sbi_core.runs import load_run

__all__ = ["train_sampler"]

log = logging.getLogger(__name__)


def train_sampler(run_uri: str, sampler: str | None = None) -> dict[str, Any]:
    """Train the run's sampler (or keep the valid one there); `sampler`, when given, must be the config's."""
    t0 = time.perf_counter()
    layout, cfg, plan = load_run(run_uri)
    sim = make_simulator(cfg)
    kind = sim.sampler_kind() if hasattr(sim, "sampler_kind") else None
    if sampler is not None and sampler != kind:
        raise InputError(f"--sampler {sampler}: the config of run {layout.root} asks for {kind or 'no trained'} sampler")
    summary: dict[str, Any] = {"step": "train-sampler", "run": layout.root, "sampler": kind}
    if kind is None:
        return {**summary, "trained": False, "uri": None, "note": "the config's sampler needs no training",
                "seconds": round(time.perf_counter() - t0, 3)}
    replaced = None
    if storage.exists(layout.sampler):
        try:
            art = read_sampler(layout.sampler, config_hash=plan.config_hash, kind=kind)
            log.info("train-sampler: %s is complete and fits this run, kept", layout.sampler)
            return {**summary, **_figures(art, layout.sampler), "trained": False, "kept": True,
                    "seconds": round(time.perf_counter() - t0, 3)}
        except InputError as exc:
            log.warning("train-sampler: replacing %s: %s", layout.sampler, exc)
            replaced = str(exc)
    art = write_sampler(layout.sampler, sim.train_sampler(), config_hash=plan.config_hash)
    return {**summary, **_figures(art, layout.sampler), "trained": art.meta["training"].get("reused_from") is None,
            "kept": False, "replaced": replaced, **getattr(sim, "provenance", dict)(),
            "seconds": round(time.perf_counter() - t0, 3)}


def _figures(art: SamplerArtifact, uri: str) -> dict[str, Any]:
    """The summary's figures of a sampler file: efficiency beside vegas's, variance, overweights, training."""
    point, vegas = art.meta.get("point", {}), art.meta.get("vegas", {})
    keys = ("efficiency", "relative_variance", "overweight_rate", "overweight_excess", "w_max", "fractions")
    return {"uri": uri, "sha256": art.sha256, "config_hash": art.config_hash,
            **{k: point.get(k) for k in keys},
            "efficiency_vegas": vegas.get("efficiency"), "relative_variance_vegas": vegas.get("relative_variance"),
            "training": art.meta.get("training"), "parton_densities": art.meta.get("parton_densities")}
