"""Joint likelihood ratio and joint score of an event from its weights at the basis benchmarks, through morphing.

This is how MadMiner augments its samples, and it needs no simulator likelihood: with w_z(theta) the event's
weight at theta (morphed from its basis weights) and sigma(theta) the fiducial cross section (the same
morphing of the weight totals),

    p(x, z|theta) = w_z(theta) / sigma(theta) x p_gen(x, z)      (p_gen: whatever the events were drawn from)
    r(x, z|theta0, theta1) = [w_z(theta0) / sigma(theta0)] / [w_z(theta1) / sigma(theta1)]
    t(x, z|theta0)         = grad w_z(theta0) / w_z(theta0) - grad sigma(theta0) / sigma(theta0).

A hypothesis may also carry a per-event factor m (a weight-type nuisance variation's ratio, or the cut
mask of observables moved by a nuisance): then w_z -> w_z m and sigma = sum_i w_i m_i (the `totals` given).

What to use when: `MorphedWeights` once per events file (morphing from the file's header; exact unit
coefficients at the basis points, so a benchmark's weight is its column bit for bit); `weights_at` /
`row_weights` per chunk (element-wise, so a row's value never depends on how rows are chunked);
`joint_log_ratio` and `joint_score` on the sampled rows.
"""

from __future__ import annotations

import numpy as np

from sbi_core.physics.morphing import Morphing

_EPS = np.finfo(np.float64).eps


class MorphedWeights:
    """Morphing coefficients alpha(theta) (weights at theta = basis weights @ alpha) and their gradients."""

    def __init__(self, morphing: Morphing) -> None:
        self.morphing = morphing
        self.basis = morphing.basis

    @property
    def n_basis(self) -> int:
        return int(self.basis.shape[0])

    def _rows(self, thetas: np.ndarray) -> np.ndarray:
        t = np.asarray(thetas, dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != self.morphing.n_params:
            raise ValueError(f"thetas: expected shape (n, {self.morphing.n_params}), got {t.shape}")
        return t

    def alpha(self, thetas: np.ndarray) -> np.ndarray:
        """(n, B) coefficients; rows at a basis point are exactly that point's unit vector."""
        t = self._rows(thetas)
        out = self.morphing.basis_coefficients(t).reshape(t.shape[0], self.n_basis)
        for b in range(self.n_basis):
            at_b = np.all(t == self.basis[b], axis=1)
            out[at_b] = 0.0
            out[at_b, b] = 1.0
        return out

    def alpha_gradient(self, thetas: np.ndarray) -> np.ndarray:
        """(n, B, P) d alpha_b / d theta_p."""
        t = self._rows(thetas)
        return self.morphing.basis_gradient(t).reshape(t.shape[0], self.n_basis, t.shape[1])


def weights_at(wb: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """sum_k wb[:, k] coefs[k], element by element (the same bits whatever the number of rows):
    wb (n, K) weight columns; coefs (K,) -> (n,), or (K, H) -> (n, H), one column per hypothesis
    (column-major, so that per-hypothesis running sums over events read contiguous memory)."""
    if wb.ndim != 2 or coefs.ndim not in (1, 2) or coefs.shape[0] != wb.shape[1]:
        raise ValueError(f"weights_at: wb (n, K) and coefs (K,) or (K, H) expected, got {wb.shape}, {coefs.shape}")
    acc = np.zeros((wb.shape[0], *coefs.shape[1:]), order="F")
    tmp = np.empty_like(acc)
    for k in range(wb.shape[1]):
        if np.any(coefs[k] != 0.0):
            col = np.ascontiguousarray(wb[:, k])
            np.multiply(col if coefs.ndim == 1 else col[:, None], coefs[k], out=tmp)
            acc += tmp
    return acc


def row_weights(wb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """sum_b wb[i, b] alpha[i, b] per row i, element by element: wb and alpha (n, B) -> (n,)."""
    if wb.ndim != 2 or alpha.shape != wb.shape:
        raise ValueError(f"row_weights: wb and alpha must both be (n, B), got {wb.shape}, {alpha.shape}")
    acc = np.zeros(wb.shape[0])
    for b in range(wb.shape[1]):
        acc = acc + wb[:, b] * alpha[:, b]
    return acc


def _floored(wb: np.ndarray, alpha: np.ndarray, w: np.ndarray) -> np.ndarray:
    """w where it is above the rounding error of its morphing sum, else that bound (so log w stays finite).

    An exact morphing gives w >= 0 wherever the model's weights are non-negative; what comes out below its
    own rounding bound is zero within the arithmetic."""
    bound = wb.shape[1] * _EPS * row_weights(np.abs(wb), np.abs(alpha))
    return np.maximum(w, np.maximum(bound, np.finfo(np.float64).tiny))


def joint_log_ratio(
    wb: np.ndarray,
    alpha0: np.ndarray,
    sigma0: np.ndarray,
    alpha1: np.ndarray,
    sigma1: np.ndarray,
    modifier0: np.ndarray | None = None,
) -> np.ndarray:
    """log r(x, z|theta0, theta1) per row: wb (n, B) basis weights, alpha0/alpha1 (n, B), sigma0/sigma1 (n,)
    fiducial cross sections of the hypotheses, modifier0 (n,) the numerator's per-event factor (or None)."""
    n = wb.shape[0]
    for name, arr, shape in (("alpha0", alpha0, wb.shape), ("alpha1", alpha1, wb.shape), ("sigma0", sigma0, (n,)),
                             ("sigma1", sigma1, (n,))):
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    w0 = row_weights(wb, alpha0)
    if modifier0 is not None:
        if modifier0.shape != (n,):
            raise ValueError(f"modifier0: expected shape ({n},), got {modifier0.shape}")
        w0 = w0 * modifier0
    w0 = _floored(wb, alpha0, w0)
    w1 = _floored(wb, alpha1, row_weights(wb, alpha1))
    return (np.log(w0) - np.log(w1)) - (np.log(sigma0) - np.log(sigma1))


def joint_score(wb: np.ndarray, alpha0: np.ndarray, grad_alpha0: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """t(x, z|theta0) per row, (n, P): wb (n, B), alpha0 (n, B), grad_alpha0 (n, B, P), totals (B,) the
    numerator hypothesis' basis totals (sum_i w_ib m_i), so sigma(theta) = totals @ alpha(theta).

    A per-event factor m that does not depend on theta cancels in grad w / w; it enters through totals."""
    n, b = wb.shape
    if alpha0.shape != (n, b) or grad_alpha0.ndim != 3 or grad_alpha0.shape[:2] != (n, b) or totals.shape != (b,):
        raise ValueError(f"joint_score: shapes wb {wb.shape}, alpha0 {alpha0.shape}, grad_alpha0 "
                         f"{grad_alpha0.shape}, totals {totals.shape} do not match")
    w0 = _floored(wb, alpha0, row_weights(wb, alpha0))
    grad_w = np.einsum("nb,nbp->np", wb, grad_alpha0)
    sigma = alpha0 @ totals
    grad_sigma = np.einsum("b,nbp->np", totals, grad_alpha0)
    return grad_w / w0[:, None] - grad_sigma / sigma[:, None]
