"""Checks of the `training:` section against the rest of the analysis (run after the morphing basis is complete).

`sbi_core.analysis` calls `check_training(cfg)`; the section itself (`sbi_core.ml.options`) knows nothing of
the whole config, so the config module and the stage sections import in one direction only.
"""

from __future__ import annotations

from sbi_core.config import AnalysisConfig
from sbi_core.ml.options import TrainingConfig

__all__ = ["check_training"]


def check_training(cfg: AnalysisConfig) -> list[tuple[str, str]]:
    """Checks of the training section against the rest of the config: (field path, message) per problem."""
    issues: list[tuple[str, str]] = []
    training: TrainingConfig = cfg.training
    fixed = training.samples.theta_fixed
    if fixed is not None:
        names = cfg.parameter_names
        missing = [p for p in names if p not in fixed]
        extra = [k for k in fixed if k not in names]
        if missing:
            issues.append(("training.samples.theta_fixed", f"missing parameters {missing}"))
        if extra:
            issues.append(("training.samples.theta_fixed", f"unknown parameters {extra} (known: {names})"))
    if "benchmark_ratio" in training.methods and len(cfg.benchmarks) < 2:
        i = training.methods.index("benchmark_ratio")
        issues.append((f"training.methods[{i}]", "benchmark_ratio needs at least 2 benchmarks (one besides the "
                       "reference)"))
    return issues
