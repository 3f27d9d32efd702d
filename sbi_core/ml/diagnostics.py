"""Diagnostics of learned likelihood ratios as numbers: ROC, calibration, closure RMS. Plain arrays in, floats out.

What to use when:
- `classifier_probability(log_r)`: the classifier output s = 1/(1 + r) = P(y = 1 | x) that a ratio implies
  (MadMiner's convention: y = 0 for x ~ p(x|theta0), y = 1 for x ~ p(x|theta1), r = p(x|theta0)/p(x|theta1),
  balanced classes).
- `roc(log_r, y)`: false and true positive rates and the area under the curve, treating the theta0 sample
  (y = 0) as the "positive" class, so a good ratio has AUC > 0.5. Written with numpy (ties handled as
  scikit-learn's roc_curve / roc_auc_score do): importing scikit-learn costs seconds in every report task.
- `calibration(log_r, y, bins)`: the reliability curve (mean predicted P(y=1|x) per bin against the observed
  fraction of y = 1) and the expected calibration error, sum over bins of (count/n) |observed - predicted|.
- `rms(learned, exact)`: closure figure: root mean square of learned - exact over finite pairs.
- `trivial_rms(exact)`: the same figure for the guess log r = 0 (what an untrained ratio predicts).

Shapes are a contract: every function takes 1-D arrays of equal length and fails loudly otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _vectors(**arrays: np.ndarray) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=np.float64) for a in arrays.values()]
    n = out[0].shape
    for name, a in zip(arrays, out, strict=True):
        if a.ndim != 1 or a.shape != n:
            shapes = {k: np.shape(v) for k, v in arrays.items()}
            raise ValueError(f"{name}: expected 1-D arrays of one length, got {shapes}")
    return out


def classifier_probability(log_r: np.ndarray) -> np.ndarray:
    """s(x) = 1 / (1 + r(x)) = P(y = 1 | x) for balanced classes, computed stably from log r."""
    (lr,) = _vectors(log_r=log_r)
    return 0.5 * (1.0 - np.tanh(0.5 * lr))  # = sigmoid(-log r) without overflow


@dataclass(frozen=True)
class Roc:
    """A ROC curve: false and true positive rates (positive = the theta0 sample, y = 0) and its area."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc(log_r: np.ndarray, y: np.ndarray, max_points: int = 200) -> Roc:
    """ROC of log r as a score for y = 0: one point per distinct score (tied scores move both rates at once, so
    the trapezoidal AUC counts a tied pair as 1/2, the Mann-Whitney statistic); the curve is thinned to at most
    max_points points for plotting, the AUC uses all. AUC NaN when only one class is present."""
    lr, yy = _vectors(log_r=log_r, y=y)
    positive = yy == 0
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return Roc(np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan"))
    order = np.argsort(-lr, kind="stable")
    score, pos = lr[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(score) != 0), score.size - 1]  # last row of each distinct score
    tpr = np.r_[0.0, np.cumsum(pos)[last] / n_pos]
    fpr = np.r_[0.0, np.cumsum(~pos)[last] / n_neg]
    auc = float(np.trapezoid(tpr, fpr))
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return Roc(fpr, tpr, auc)


@dataclass(frozen=True)
class Calibration:
    """Reliability curve: per non-empty bin of predicted P(y=1|x), the mean prediction, the observed fraction of
    y = 1 and the count; `error` is the expected calibration error (count-weighted mean |observed - predicted|)."""

    predicted: np.ndarray
    observed: np.ndarray
    counts: np.ndarray
    error: float


def calibration(log_r: np.ndarray, y: np.ndarray, bins: int = 10) -> Calibration:
    """Reliability curve of s = 1/(1 + r) against the labels, `bins` equal-width bins on [0, 1]."""
    lr, yy = _vectors(log_r=log_r, y=y)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    s = classifier_probability(lr)
    index = np.clip((s * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_s = np.bincount(index, weights=s, minlength=bins)
    sum_y = np.bincount(index, weights=yy, minlength=bins)
    used = counts > 0
    predicted = sum_s[used] / counts[used]
    observed = sum_y[used] / counts[used]
    n = counts.sum()
    error = float(np.sum(counts[used] * np.abs(observed - predicted)) / n) if n else float("nan")
    return Calibration(predicted, observed, counts[used], error)


def rms(learned: np.ndarray, exact: np.ndarray) -> float:
    """sqrt(mean((learned - exact)^2)) over the pairs where both are finite; NaN if none is."""
    a, b = _vectors(learned=learned, exact=exact)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2))) if ok.any() else float("nan")


def trivial_rms(exact: np.ndarray) -> float:
    """RMS of the guess log r = 0 (an untrained ratio) against exact: the scale a learned RMS is read against."""
    (b,) = _vectors(exact=exact)
    return rms(np.zeros_like(b), b)
