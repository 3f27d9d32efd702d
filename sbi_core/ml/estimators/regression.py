"""The regression family of parametrised ratio estimators: ROLR and RASCAL.

The network takes (x, theta0) and outputs log r_hat(x|theta0, theta1), theta1 the reference. The losses
regress the joint ratio directly; they are sensitive to large r_xz, hence the clip (MadMiner's log_r_clip).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from sbi_core.ml.estimators.base import Estimator, EstimatorConfig
from sbi_core.ml.estimators.classifiers import ScoreWeightConfig
from sbi_core.ml.estimators.losses import ratio_mse, score_mse
from sbi_core.ml.estimators.registry import register_estimator
from sbi_core.ml.mlp import MLP


@dataclass(frozen=True)
class RolrConfig(EstimatorConfig):
    """log_r_clip: log r_hat and log r_xz are clipped to [-log_r_clip, log_r_clip] in the loss (> 0)."""

    log_r_clip: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.log_r_clip > 0:
            raise ValueError(f"{type(self).__name__}.log_r_clip: must be > 0, got {self.log_r_clip}")


@dataclass(frozen=True)
class RascalConfig(RolrConfig, ScoreWeightConfig):
    """ROLR's clip plus alpha, the weight of the score term, and its units."""


@register_estimator
class Rolr(Estimator):
    """ROLR: L = mean[ (1 - y) (1/r_hat - 1/r_xz)^2 + y (r_hat - r_xz)^2 ] (logs clipped)."""

    name: ClassVar[str] = "rolr"
    config_class: ClassVar[type[EstimatorConfig]] = RolrConfig
    parametrised: ClassVar[bool] = True
    output: ClassVar[str] = "log_ratio"
    uses: ClassVar[tuple[str, ...]] = ("x", "theta0", "y", "log_r_xz")
    description: ClassVar[str] = "regression on the joint ratio"

    def loss(self, model: MLP, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        log_r = model(batch["x"], batch["theta0"])[:, 0]
        return ratio_mse(log_r, batch["log_r_xz"], batch["y"], self.config.log_r_clip)  # type: ignore[attr-defined]


@register_estimator
class Rascal(Estimator):
    """RASCAL: L = L_ROLR + alpha * mean[ (1 - y) |s * (t_hat(x|theta0) - t_xz)|^2 ] / P, t_hat by autograd,
    s = theta0's standard deviation (score_units standardised) or 1 (raw), as in ALICES."""

    name: ClassVar[str] = "rascal"
    config_class: ClassVar[type[EstimatorConfig]] = RascalConfig
    parametrised: ClassVar[bool] = True
    output: ClassVar[str] = "log_ratio"
    uses: ClassVar[tuple[str, ...]] = ("x", "theta0", "y", "log_r_xz", "t_xz")
    needs_input_grad: ClassVar[bool] = True
    description: ClassVar[str] = "ROLR plus the joint score"

    def loss(self, model: MLP, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.config
        theta = batch["theta0"].detach().requires_grad_(True)
        log_r = model(batch["x"], theta)[:, 0]
        (t_hat,) = torch.autograd.grad(log_r.sum(), theta, create_graph=True)
        mse = ratio_mse(log_r, batch["log_r_xz"], batch["y"], cfg.log_r_clip)  # type: ignore[attr-defined]
        score = score_mse(t_hat, batch["t_xz"], 1.0 - batch["y"], cfg.score_scale(model))  # type: ignore[attr-defined]
        return mse + cfg.alpha * score  # type: ignore[attr-defined]
