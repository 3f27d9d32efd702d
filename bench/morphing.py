"""morphing: expected sum of squared morphing weights over the ranges of configs/benchmark.yaml, for the
optimised basis (only the sampling benchmark fixed) against the hand-picked pentagon shipped in the config.

The figure is not a time: ratio = optimised / hand-picked (< 1: the optimised basis morphs with less noise).
Several optimiser seeds give the spread of the search; the hand-picked value is the same in every repeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.common import Figure, emit

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "benchmark.yaml"


def run(quick: bool) -> list[dict[str, Any]]:
    from sbi_core.analysis import validate_analysis
    from sbi_core.physics.basis import basis_report, config_powers, optimise_basis

    cfg = validate_analysis(yaml.safe_load(CONFIG.read_text()))
    powers = config_powers(cfg)
    ranges = np.array([p.range for p in cfg.parameters], dtype=np.float64)
    basis = np.array(cfg.benchmark_matrix())
    given = basis_report(powers, basis, ranges)
    sampling = basis[cfg.benchmark_names.index(cfg.sampling_benchmark)][None, :]
    seeds = range(2 if quick else 5)
    reports = [optimise_basis(powers, ranges, sampling, candidates=cfg.morphing.candidates, seed=s) for s in seeds]
    fig = Figure(
        name="morphing",
        sizes={"config": CONFIG.name, "parameters": len(cfg.parameters), "components": len(powers),
               "candidates": cfg.morphing.candidates},
        ours=[r.expected_squared_weights for r in reports],
        baseline=[given.expected_squared_weights],
        ours_label="optimised E[sum w^2]",
        baseline_label="hand-picked E[sum w^2]",
        target="< 1",
        extra={"condition_optimised": round(reports[0].condition_number, 3),
               "condition_hand_picked": round(given.condition_number, 3)},
    )
    record = fig.record()
    emit(record)
    return [record]
