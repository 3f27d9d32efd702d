"""The loss terms of the MadMiner estimator family, as plain functions of tensors (tested by hand).

Conventions (MadMiner's): a training sample has x drawn from p(x|theta0) (label y = 0) or from
p(x|theta1) (y = 1); the estimated ratio is r(x) = p(x|theta0) / p(x|theta1); the classifier output
s = 1 / (1 + r) estimates P(y = 1 | x). Joint quantities of the simulation: r_xz = r(x, z|theta0, theta1)
and t_xz = grad_theta log p(x, z|theta) at theta0. Every function returns a scalar mean over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias


def _check(name: str, a: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(a.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(a.shape)}")


def cross_entropy(log_r_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = -mean[ target log s + (1 - target) log(1 - s) ],  s = 1 / (1 + exp(log_r_hat)).

    With target = y this is CARL's loss; with target = 1 / (1 + r_xz) it is ALICE's "improved" cross-entropy.
    Computed from the logit -log_r_hat (no log of a rounded probability). Shapes: (n,) and (n,)."""
    _check("target", target, tuple(log_r_hat.shape))
    return F.binary_cross_entropy_with_logits(-log_r_hat, target)


def ratio_mse(
    log_r_hat: torch.Tensor, log_r_xz: torch.Tensor, y: torch.Tensor, log_r_clip: float = 10.0
) -> torch.Tensor:
    """ROLR: L = mean[ (1 - y) (1/r_hat - 1/r_xz)^2 + y (r_hat - r_xz)^2 ], both logs clipped to +-log_r_clip.

    A sample from theta1 (y = 1) regresses r (E[r_xz | x] = r(x) under p(z|x, theta1)); one from theta0
    regresses 1/r. Shapes: (n,) each."""
    _check("log_r_xz", log_r_xz, tuple(log_r_hat.shape))
    _check("y", y, tuple(log_r_hat.shape))
    lh = torch.clamp(log_r_hat, -log_r_clip, log_r_clip)
    lt = torch.clamp(log_r_xz, -log_r_clip, log_r_clip)
    num = (1.0 - y) * (torch.exp(-lh) - torch.exp(-lt))
    den = y * (torch.exp(lh) - torch.exp(lt))
    return (num * num).mean() + (den * den).mean()


def score_mse(t_hat: torch.Tensor, t_xz: torch.Tensor, mask: torch.Tensor | None = None,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """L = mean over samples and parameters of [ m (s_p (t_hat - t_xz))^2 ], m = mask (1 - y for a parametrised
    ratio: the joint score at theta0 is an unbiased target only for samples drawn at theta0), or 1; s = scale.

    scale (P,): the standard deviation of theta0 over the training set turns a score in theta units into one in
    standardised units, t' = t * std for theta' = (theta - mean) / std (MadMiner's `scale_parameters`), so the
    score term weighs every parameter alike whatever its range; None: raw units.
    Shapes: t_hat, t_xz (n, P); mask (n,) or None; scale (P,) or None."""
    _check("t_xz", t_xz, tuple(t_hat.shape))
    diff = t_hat - t_xz
    if scale is not None:
        _check("scale", scale, (t_hat.shape[1],))
        diff = diff * scale
    if mask is not None:
        _check("mask", mask, (t_hat.shape[0],))
        diff = diff * mask[:, None]
    return (diff * diff).mean()
