"""The pool: the run's own events as likelihood arrays, the source of every toy and Asimov dataset.

Expected results (Asimov intervals, the background-only Asimov data of CLs limits) and toys all resample
these arrays (`toys.ToyGenerator`): nothing is simulated or evaluated again. The pool's `weight` is each
event's weight at the reference benchmark in pb (the run's weight column of the sampling benchmark), so the
contract's per-event rate at any (theta, nu) follows by morphing. It is the same MC sample whose weighted sum
is the NLL's normalisation when `inference.normalization` is "mc": the likelihood step has then computed its
arrays already (`RunLayout.likelihood("mc", source)`), and the pool is that file.

What to use when:
- `pool_info(layout, cfg, plan)`: the pool as a dataset (`datasets.DatasetInfo`, name "pool"): the run's
  events with "asimov" weights at the reference benchmark and luminosity 1, i.e. the reference weight column.
- `build_pool(layout, cfg, plan)`: the normalisation sample's arrays when the likelihood step made them; else
  compute the arrays batch by batch with the configured source (exact densities or the learned networks,
  `exact.likelihood_batch`) and write them once to `RunLayout.likelihood("pool", source)`; a second call finds
  the file and returns at once.
- `load_pool(layout, cfg, plan)`: the arrays in memory (built first when missing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sbi_core import storage

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.data.likelihood_arrays import LikelihoodArrays
    from sbi_core.inference.datasets import DatasetInfo
    from sbi_core.layout import RunLayout
    from sbi_core.plan import GenerationPlan

__all__ = ["POOL", "build_pool", "load_pool", "pool_arrays", "pool_info"]

POOL = "pool"
MC_PART = "mc"  # the likelihood step's normalisation sample (`datasets.MC_PART`): the run's events, MC weights


def pool_info(layout: RunLayout, cfg: AnalysisConfig, plan: GenerationPlan) -> DatasetInfo:
    """The run's events as a dataset weighted L x (weight at the reference benchmark)."""
    import h5py

    from sbi_core.data.format import OBSERVATIONS
    from sbi_core.errors import InputError
    from sbi_core.inference.datasets import DatasetInfo, column_cross_sections, fiducial_cross_sections
    from sbi_core.runs import run_events

    events_uri = run_events(layout, plan)
    if not storage.exists(events_uri):
        raise InputError(f"run {layout.root} has no events file {events_uri}: run `sbi-core combine --all` first")
    xsec, xsec_var = fiducial_cross_sections(events_uri, cfg)
    with storage.open_for_inspection(events_uri) as src, h5py.File(src, "r") as f:
        n_events = int(f[OBSERVATIONS].shape[0])
    ref = np.asarray(cfg.benchmark_matrix()[cfg.benchmark_names.index(cfg.sampling_benchmark)], dtype=np.float64)
    return DatasetInfo(
        name=POOL, kind=POOL, events=events_uri, n_events=n_events, weights="asimov",
        theta=ref.tolist(), luminosity=1.0, reference=cfg.sampling_benchmark,
        xsec=xsec.tolist(), xsec_var=xsec_var.tolist(), batch_rows=cfg.inference.chunk_rows,
        config_hash=plan.config_hash,
        columns=column_cross_sections(events_uri, cfg) if cfg.inference.source == "exact" else None,
    )


def pool_arrays(layout: RunLayout, cfg: AnalysisConfig, plan: GenerationPlan) -> LikelihoodArrays:
    """Compute the pool's arrays (every batch, in order) with the configured source; nothing is written."""
    from sbi_core.data.likelihood_arrays import concatenate
    from sbi_core.inference.exact import likelihood_batch

    info = pool_info(layout, cfg, plan)
    return concatenate([likelihood_batch(layout, cfg, info, b) for b in range(info.n_batches)])


def build_pool(layout: RunLayout, cfg: AnalysisConfig, plan: GenerationPlan) -> str:
    """The pool's likelihood file, computed and written (atomically) only when it is not there yet."""
    from sbi_core.data.likelihood_arrays import write_arrays

    mc = layout.likelihood(MC_PART, cfg.inference.source)
    if storage.exists(mc):
        return mc
    uri = layout.likelihood(POOL, cfg.inference.source)
    if storage.exists(uri):
        return uri
    arrays = pool_arrays(layout, cfg, plan)
    with storage.atomic_write(uri) as tmp:
        write_arrays(tmp, arrays, chunk_rows=min(cfg.inference.chunk_rows, 65536))
    return uri


def load_pool(layout: RunLayout, cfg: AnalysisConfig, plan: GenerationPlan) -> LikelihoodArrays:
    """The pool's arrays in memory (built first when missing)."""
    from sbi_core.data.likelihood_arrays import read_arrays

    uri = build_pool(layout, cfg, plan)
    with storage.local_copy(uri) as path:
        return read_arrays(path, where=uri)
