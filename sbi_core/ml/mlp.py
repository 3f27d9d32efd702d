"""The multilayer perceptron every estimator trains, with its input standardisation stored inside.

The model maps (x, theta) -> outputs: x (n, n_x) observables, theta (n, n_theta) parameters for a
parametrised estimator (n_theta = 0: x only). Inputs are standardised with the mean and standard deviation
of the training set, held as buffers, so a saved model (and its export) carries everything it needs.

What to use when: `build_mlp(n_x, n_theta, n_out, hidden=..., activation=...)` for a new network;
`MLP.set_standardisation(x, theta)` once, from the training data, before training; `MLP.architecture`
is the dict `MLP(**architecture)` rebuilds it from (model.pt stores it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

#: Activations by config name (training.network.activation); export.py holds their numpy twins.
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU}
#: A standard deviation below this (a constant input column) is replaced by 1: the column is only centred.
MIN_STD = 1e-12


class MLP(nn.Module):
    """Standardise (x, theta), then Linear -> activation per hidden layer, then a linear output layer.

    forward(x (n, n_x), theta (n, n_theta) or None) -> (n, n_out). Shapes are checked, never broadcast.
    """

    def __init__(self, n_x: int, n_theta: int, n_out: int, hidden: Sequence[int], activation: str) -> None:
        super().__init__()
        if n_x < 1 or n_theta < 0 or n_out < 1:
            raise ValueError(f"MLP: need n_x >= 1, n_theta >= 0, n_out >= 1, got {n_x}, {n_theta}, {n_out}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP: unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"MLP: hidden must list at least one layer width >= 1, got {list(hidden)}")
        self.n_x, self.n_theta, self.n_out = int(n_x), int(n_theta), int(n_out)
        self.hidden = [int(h) for h in hidden]
        self.activation = activation
        self.register_buffer("x_mean", torch.zeros(self.n_x))
        self.register_buffer("x_std", torch.ones(self.n_x))
        self.register_buffer("theta_mean", torch.zeros(self.n_theta))
        self.register_buffer("theta_std", torch.ones(self.n_theta))
        layers: list[nn.Module] = []
        width = self.n_x + self.n_theta
        for h in self.hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, self.n_out))
        self.net = nn.Sequential(*layers)

    @property
    def architecture(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this network: MLP(**architecture)."""
        return {"n_x": self.n_x, "n_theta": self.n_theta, "n_out": self.n_out, "hidden": list(self.hidden),
                "activation": self.activation}

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @torch.no_grad()
    def set_standardisation(self, x: torch.Tensor, theta: torch.Tensor | None = None) -> None:
        """Store the mean and std of the training inputs (std < MIN_STD becomes 1)."""
        self._check(x, theta)
        self.x_mean.copy_(x.mean(dim=0))
        self.x_std.copy_(_safe_std(x))
        if self.n_theta:
            assert theta is not None
            self.theta_mean.copy_(theta.mean(dim=0))
            self.theta_std.copy_(_safe_std(theta))

    def _check(self, x: torch.Tensor, theta: torch.Tensor | None) -> None:
        if x.ndim != 2 or x.shape[1] != self.n_x:
            raise ValueError(f"MLP input x: expected shape (n, {self.n_x}), got {tuple(x.shape)}")
        if self.n_theta:
            if theta is None or theta.ndim != 2 or theta.shape != (x.shape[0], self.n_theta):
                got = None if theta is None else tuple(theta.shape)
                raise ValueError(f"MLP input theta: expected shape ({x.shape[0]}, {self.n_theta}), got {got}")
        elif theta is not None:
            raise ValueError("MLP input theta: this network takes x only (n_theta = 0), got a theta")

    def forward(self, x: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, theta)
        h = (x - self.x_mean) / self.x_std
        if self.n_theta:
            h = torch.cat([h, (theta - self.theta_mean) / self.theta_std], dim=1)
        return self.net(h)


def _safe_std(a: torch.Tensor) -> torch.Tensor:
    std = a.std(dim=0, unbiased=False) if a.shape[0] > 1 else torch.ones_like(a[0])
    return torch.where(std < MIN_STD, torch.ones_like(std), std)


def build_mlp(n_x: int, n_theta: int, n_out: int, *, hidden: Sequence[int], activation: str) -> MLP:
    """A new MLP from `training.network`-like arguments (hidden widths, activation name)."""
    return MLP(n_x, n_theta, n_out, hidden, activation)
