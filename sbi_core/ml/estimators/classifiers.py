"""The cross-entropy family of parametrised ratio estimators: CARL, ALICE, ALICES.

The network takes (x, theta0) and outputs log r_hat(x|theta0, theta1), theta1 the reference; the classifier
decision function is s_hat = 1 / (1 + r_hat). Use CARL when only labels are available, ALICE when the joint
ratio r_xz is (it lowers the variance a lot), ALICES when the joint score t_xz is too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from sbi_core.ml.estimators.base import Estimator, EstimatorConfig
from sbi_core.ml.estimators.losses import cross_entropy, score_mse
from sbi_core.ml.estimators.registry import register_estimator
from sbi_core.ml.mlp import MLP

#: Units of the score term: standardised (theta' = (theta - mean) / std over the training set's theta0, the
#: score t' = t * std: MadMiner's default `scale_parameters=True`) or raw (theta's own units).
SCORE_UNITS = ("standardised", "raw")


@dataclass(frozen=True)
class ScoreWeightConfig(EstimatorConfig):
    """alpha: weight of the score term (MadMiner's alpha), >= 0; score_units: the units that term is measured in
    (`standardised`, the default, as MadMiner; `raw`: theta's own units, so alpha_raw = alpha * std^2 per
    parameter compares with a standardised alpha)."""

    alpha: float = 1.0
    score_units: Literal["standardised", "raw"] = "standardised"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.alpha >= 0:
            raise ValueError(f"{type(self).__name__}.alpha: must be >= 0, got {self.alpha}")
        if self.score_units not in SCORE_UNITS:
            raise ValueError(f"{type(self).__name__}.score_units: expected one of {SCORE_UNITS}, "
                             f"got {self.score_units!r}")

    def score_scale(self, model: MLP) -> torch.Tensor | None:
        """Per-parameter factor of the score difference: theta0's standard deviation (the network's stored
        standardisation) in standardised units, None in raw units."""
        return model.theta_std if self.score_units == "standardised" else None


@register_estimator
class Carl(Estimator):
    """CARL: L = -mean[ y log s_hat + (1 - y) log(1 - s_hat) ],  s_hat = 1 / (1 + r_hat(x|theta0, theta1))."""

    name: ClassVar[str] = "carl"
    parametrised: ClassVar[bool] = True
    output: ClassVar[str] = "log_ratio"
    uses: ClassVar[tuple[str, ...]] = ("x", "theta0", "y")
    description: ClassVar[str] = "calibrated classifier (labels only)"

    def loss(self, model: MLP, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return cross_entropy(model(batch["x"], batch["theta0"])[:, 0], batch["y"])


@register_estimator
class Alice(Estimator):
    """ALICE: L = -mean[ s_xz log s_hat + (1 - s_xz) log(1 - s_hat) ],  s_xz = 1 / (1 + r_xz)."""

    name: ClassVar[str] = "alice"
    parametrised: ClassVar[bool] = True
    output: ClassVar[str] = "log_ratio"
    uses: ClassVar[tuple[str, ...]] = ("x", "theta0", "log_r_xz")
    description: ClassVar[str] = "improved cross-entropy with the joint ratio"

    def loss(self, model: MLP, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return cross_entropy(model(batch["x"], batch["theta0"])[:, 0], torch.sigmoid(-batch["log_r_xz"]))


@register_estimator
class Alices(Estimator):
    """ALICES: L = L_ALICE + alpha * mean[ (1 - y) |s * (t_hat(x|theta0) - t_xz)|^2 ] / P,
    t_hat = grad_theta0 log r_hat (autograd; the joint score is a target only for samples drawn at theta0),
    s = theta0's standard deviation (score_units standardised, MadMiner's) or 1 (raw)."""

    name: ClassVar[str] = "alices"
    config_class: ClassVar[type[EstimatorConfig]] = ScoreWeightConfig
    parametrised: ClassVar[bool] = True
    output: ClassVar[str] = "log_ratio"
    uses: ClassVar[tuple[str, ...]] = ("x", "theta0", "y", "log_r_xz", "t_xz")
    needs_input_grad: ClassVar[bool] = True
    description: ClassVar[str] = "ALICE plus the joint score"

    def loss(self, model: MLP, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        theta = batch["theta0"].detach().requires_grad_(True)
        log_r = model(batch["x"], theta)[:, 0]
        (t_hat,) = torch.autograd.grad(log_r.sum(), theta, create_graph=True)
        xe = cross_entropy(log_r, torch.sigmoid(-batch["log_r_xz"]))
        cfg = self.config
        score = score_mse(t_hat, batch["t_xz"], 1.0 - batch["y"], cfg.score_scale(model))  # type: ignore[attr-defined]
        return xe + cfg.alpha * score  # type: ignore[attr-defined]
