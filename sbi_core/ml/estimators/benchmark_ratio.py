"""The per-benchmark ratio estimator of the likelihood contract (docs/likelihood-model.md).

One network per basis benchmark b (the head), x only as input: log r_b(x) = log p(x|theta_b) / p(x|theta_ref),
a classifier of events at benchmark b (theta0 = theta_b, y = 0) against events at the reference (theta1,
y = 1). theta enters only through the morphing: dsigma(x|theta) = sum_b w_b(theta) sigma_b r_b(x) dsigma_ref.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from sbi_core.ml.estimators.base import Estimator, EstimatorConfig
from sbi_core.ml.estimators.losses import cross_entropy
from sbi_core.ml.estimators.registry import register_estimator
from sbi_core.ml.mlp import MLP


@dataclass(frozen=True)
class BenchmarkRatioConfig(EstimatorConfig):
    """labels: `joint` (default) uses ALICE's soft labels 1 / (1 + r_xz): the same minimiser as CARL's, much
    lower variance, needs the joint ratio (weights at the basis give it); `y` trains on the plain labels."""

    labels: Literal["y", "joint"] = "joint"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labels not in ("y", "joint"):
            raise ValueError(f"BenchmarkRatioConfig.labels: expected 'y' or 'joint', got {self.labels!r}")


@register_estimator
class BenchmarkRatio(Estimator):
    """L = -mean[ c log s_hat + (1 - c) log(1 - s_hat) ], s_hat = 1 / (1 + r_hat_b(x)), c = y (CARL) or
    c = 1 / (1 + r_xz) (labels = joint)."""

    name: ClassVar[str] = "benchmark_ratio"
    config_class: ClassVar[type[EstimatorConfig]] = BenchmarkRatioConfig
    parametrised: ClassVar[bool] = False
    output: ClassVar[str] = "log_ratio"
    description: ClassVar[str] = "classifier of one basis benchmark against the reference"

    @property
    def uses(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("x", "y", "log_r_xz") if self.config.labels == "joint" else ("x", "y")  # type: ignore[attr-defined]

    def loss(self, model: MLP, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        log_r = model(batch["x"], None)[:, 0]
        joint = self.config.labels == "joint"  # type: ignore[attr-defined]
        return cross_entropy(log_r, torch.sigmoid(-batch["log_r_xz"]) if joint else batch["y"])
