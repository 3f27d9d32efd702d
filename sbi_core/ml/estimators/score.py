"""SALLY: a local score estimator, x -> t_hat(x) = grad_theta log p(x|theta) at a fixed theta (the samples'
theta0). Its output is a vector of P summary statistics, optimal near that theta (use it for a local fit or
as observables of a histogram analysis)."""

from __future__ import annotations

from typing import ClassVar

import torch

from sbi_core.ml.estimators.base import Estimator
from sbi_core.ml.estimators.losses import score_mse
from sbi_core.ml.estimators.registry import register_estimator
from sbi_core.ml.mlp import MLP


@register_estimator
class Sally(Estimator):
    """SALLY: L = mean over samples and parameters of (t_hat(x) - t_xz)^2 (all samples are drawn at theta0)."""

    name: ClassVar[str] = "sally"
    parametrised: ClassVar[bool] = False
    output: ClassVar[str] = "score"
    uses: ClassVar[tuple[str, ...]] = ("x", "t_xz")
    description: ClassVar[str] = "local score regression"

    def loss(self, model: MLP, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return score_mse(model(batch["x"], None), batch["t_xz"])
