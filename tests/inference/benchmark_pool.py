"""Exact likelihood arrays of the shared `small_run` (6000 benchmark events) for the statistics tests.

The pool is computed in memory (nothing is written into the read-only session run) once per process. Toys
and Asimov data resample it, and every NLL uses it as its MC normalisation sample (the pipeline's default,
`inference.normalization: mc`), so toys are exactly the model's. Toys of TOY_LUMINOSITY (1/pb) have ~380
events at the config's true values (cW, cHW) = (0.3, -0.2)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

TOY_LUMINOSITY = 60.0
TRUTH = {"cW": 0.3, "cHW": -0.2}


@lru_cache(maxsize=2)
def exact_pool(run: Path):
    from sbi_core import steps
    from sbi_core.inference.pool import pool_arrays

    layout, cfg, plan = steps.load_run(str(run))
    return pool_arrays(layout, cfg, plan)


def generator(run: Path):
    from sbi_core.inference.toys import ToyGenerator

    return ToyGenerator(exact_pool(run), luminosity=TOY_LUMINOSITY, interpolation="polyexp", normalization="mc")


def model(arrays, run: Path):
    """The pipeline's NLL of a toy or Asimov dataset, normalised by the pool (one compilation per size class)."""
    from sbi_core.inference.nll import NLLModel

    return NLLModel.from_arrays(arrays, luminosity=TOY_LUMINOSITY, normalization=exact_pool(run),
                                interpolation="polyexp", chunk_rows=4096)
