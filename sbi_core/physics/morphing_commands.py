"""`sbi-core morphing`: the morphing basis of a config and its figures of merit (see `sbi_core.physics.basis`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `sbi-core morphing`."""
    from sbi_core.cli_helpers import add_set_option

    s = sub.add_parser("morphing", help="the morphing basis of a config: monomials, condition number, "
                                        "expected sum of squared weights, and an optimised alternative")
    s.add_argument("--config", required=True, help="analysis config YAML (path or URI)")
    add_set_option(s)
    s.set_defaults(handler=lambda a: morphing_summary(a.config, a.overrides))


def morphing_summary(config_uri: str, overrides: list[str]) -> dict[str, Any]:
    """The resolved basis (the config's, completed when `morphing.basis: optimised`) with its figures, next
    to the basis the optimiser picks when only the sampling benchmark is fixed."""
    import numpy as np

    from sbi_core.analysis import load_analysis
    from sbi_core.physics.basis import basis_report, config_powers, optimise_basis

    cfg = load_analysis(config_uri, overrides)
    powers = config_powers(cfg)
    ranges = np.array([p.range for p in cfg.parameters], dtype=np.float64)
    matrix = np.array(cfg.benchmark_matrix(), dtype=np.float64)
    resolved = basis_report(powers, matrix, ranges, cfg.morphing.seed)
    sampling = matrix[cfg.benchmark_names.index(cfg.sampling_benchmark)][None, :]
    alternative = optimise_basis(powers, ranges, sampling, candidates=cfg.morphing.candidates, seed=cfg.morphing.seed)
    return {
        "step": "morphing",
        "parameters": cfg.parameter_names,
        "components": powers.tolist(),
        "basis": {name: cfg.benchmarks[i].values for i, name in enumerate(cfg.benchmark_names)},
        "basis_mode": cfg.morphing.basis,
        "condition_number": resolved.condition_number,
        "expected_squared_weights": resolved.expected_squared_weights,
        "optimised": {**alternative.to_json(), "fixed": [cfg.sampling_benchmark]},
    }
