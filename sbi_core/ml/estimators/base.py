"""What every estimator is: a typed config, the network it trains, and its loss.

An estimator family is a subclass of `Estimator` registered with `register_estimator` (see registry.py).
It declares whether its network takes theta0 as an input (`parametrised`), what the network outputs
(`output`: `log_ratio`, one number per event, or `score`, P numbers per event), which training tensors its
loss reads (`uses`: the trainer batches only those), and the loss itself.

Parametrised ratio estimators take (x, theta0) and output log r(x|theta0, theta1) with theta1 the reference
(fixed): their score t(x|theta0) = grad_theta0 log r is computed by autograd (`score`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from sbi_core.ml.mlp import MLP, build_mlp

#: Tensors a training set provides (sbi_core.data.training_sets.TrainingSet), by name.
TENSOR_NAMES = ("x", "theta0", "y", "log_r_xz", "t_xz")


@dataclass(frozen=True)
class EstimatorConfig:
    """Options shared by every method (none yet); each family subclasses it with its own fields."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{type(self).__name__}.{name}: must be finite, got {value}")


class Estimator(ABC):
    """One method of the family. Instances are cheap: they hold only the typed config."""

    name: ClassVar[str]
    config_class: ClassVar[type[EstimatorConfig]] = EstimatorConfig
    parametrised: ClassVar[bool]
    output: ClassVar[Literal["log_ratio", "score"]]
    uses: ClassVar[tuple[str, ...]]
    #: True when the loss differentiates the network w.r.t. its input theta0 (a score term).
    needs_input_grad: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, config: EstimatorConfig | None = None) -> None:
        config = config if config is not None else self.config_class()
        if type(config) is not self.config_class:
            raise TypeError(f"{self.name}: expected a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @classmethod
    def from_training(cls, training: Any) -> Estimator:
        """The estimator with its config taken from the `training:` section (fields it does not name keep
        their defaults; `alpha` feeds the score weight of the methods that have one)."""
        fields = cls.config_class.__dataclass_fields__
        kwargs = {k: getattr(training, k) for k in fields if hasattr(training, k)}
        return cls(cls.config_class(**kwargs))

    def n_outputs(self, n_params: int) -> int:
        """Width of the network output: 1 for a log ratio, n_params for a score."""
        return n_params if self.output == "score" else 1

    def build_model(self, n_x: int, n_params: int, *, hidden: list[int], activation: str) -> MLP:
        """A fresh network for this method (theta0 is an input only for parametrised methods)."""
        return build_mlp(n_x, n_params if self.parametrised else 0, self.n_outputs(n_params),
                         hidden=hidden, activation=activation)

    @abstractmethod
    def loss(self, model: MLP, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar training loss of a batch (keys: `uses`)."""

    # ---- evaluation helpers shared by the trainer, the ensemble and the tests
    def log_ratio(self, model: MLP, x: torch.Tensor, theta0: torch.Tensor | None = None) -> torch.Tensor:
        """log r(x|theta0, theta1) (n,): the network output for ratio estimators."""
        if self.output != "log_ratio":
            raise ValueError(f"{self.name} estimates a score, not a likelihood ratio")
        return model(x, theta0 if self.parametrised else None)[:, 0]

    def score(
        self, model: MLP, x: torch.Tensor, theta0: torch.Tensor | None = None, *, create_graph: bool = False
    ) -> torch.Tensor:
        """t(x|theta0) (n, P): the output of a score estimator, or grad_theta0 log r of a parametrised ratio."""
        if self.output == "score":
            return model(x, None)
        if not self.parametrised or theta0 is None:
            raise ValueError(f"{self.name}: the score needs a parametrised estimator and theta0")
        with torch.enable_grad():
            theta = theta0.detach().requires_grad_(True)
            log_r = model(x, theta)[:, 0]
            (grad,) = torch.autograd.grad(log_r.sum(), theta, create_graph=create_graph)
        return grad
