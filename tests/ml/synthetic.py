"""Synthetic training data with an exact answer, for the learning tests (not a conftest: helpers only).

Model: x (n, 5) ~ N(m(theta), I) with m(theta) = (theta_0, theta_1, 0, 0, 0); theta1 (the reference) = 0.
Then log r(x|theta0, 0) = m . x - |m|^2 / 2 and t(x|theta0) = x[:, :2] - theta0 exactly, and (no latent
variables) the joint ratio and score equal them.
"""

from __future__ import annotations

import numpy as np
import torch


def exact_log_r(x: np.ndarray, theta0: np.ndarray) -> np.ndarray:
    return (x[:, :2] * theta0).sum(axis=1) - (theta0**2).sum(axis=1) / 2


def gaussian_set(n: int, seed: int) -> dict[str, np.ndarray]:
    """x, theta0, theta1, y, log_r_xz, t_xz as float32 arrays (half y = 0 at theta0, half y = 1 at 0)."""
    rng = np.random.default_rng(seed)
    theta0 = rng.uniform(-1, 1, (n, 2))
    y = (np.arange(n) % 2).astype(np.float64)
    mean = np.zeros((n, 5))
    mean[:, :2] = np.where(y[:, None] == 0, theta0, 0.0)
    x = mean + rng.standard_normal((n, 5))
    out = {"x": x, "theta0": theta0, "theta1": np.zeros((n, 2)), "y": y, "log_r_xz": exact_log_r(x, theta0),
           "t_xz": x[:, :2] - theta0}
    return {k: v.astype(np.float32) for k, v in out.items()}


def tensors(data: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in data.items()}
