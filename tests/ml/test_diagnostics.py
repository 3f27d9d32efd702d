"""Diagnostics against closed forms (two Gaussians with a known ratio) and the plots on synthetic arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from sbi_core.ml import diagnostics, plots

MU = 0.5


def two_gaussians(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x ~ N(+MU, 1) for y = 0 (theta0), N(-MU, 1) for y = 1 (theta1): exact log r(x) = 2 MU x."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0.0, 1.0], n // 2)
    x = rng.standard_normal(n) + np.where(y == 0, MU, -MU)
    return x, y, 2 * MU * x


def test_roc_auc_matches_the_closed_form():
    x, y, log_r = two_gaussians(40000)
    exact_auc = norm.cdf(math.sqrt(2) * MU)  # P(x0 > x1) with x0 - x1 ~ N(2 MU, 2)
    r = diagnostics.roc(log_r, y)
    assert abs(r.auc - exact_auc) < 0.01, (r.auc, exact_auc)
    assert r.fpr[0] == 0 and r.tpr[-1] == 1 and r.fpr.size <= 200 and np.all(np.diff(r.fpr) >= 0)
    assert diagnostics.roc(-log_r, y).auc == pytest.approx(1 - r.auc)  # a ratio upside down
    assert math.isnan(diagnostics.roc(log_r[:10], np.zeros(10)).auc)  # one class only
    # Ties count 1/2 (Mann-Whitney): positives (y = 0) score 1 and 0, the negative 1 -> AUC = (0.5 + 0) / 2.
    tied = diagnostics.roc(np.array([1.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    assert tied.auc == 0.25 and tied.fpr.tolist() == [0, 1, 1] and tied.tpr.tolist() == [0, 0.5, 1]


def test_calibration_of_the_exact_ratio_is_good_and_of_a_distorted_one_bad():
    x, y, log_r = two_gaussians(40000, seed=1)
    good = diagnostics.calibration(log_r, y, bins=10)
    bad = diagnostics.calibration(3 * log_r, y, bins=10)
    # Exact ratio: each bin's observed fraction has a binomial error <~ 0.5/sqrt(count); ECE ~ 0.005 here.
    assert good.error < 0.015 and bad.error > 0.08, (good.error, bad.error)
    assert good.counts.sum() == 40000 and np.all(np.diff(good.predicted) > 0)
    np.testing.assert_allclose(diagnostics.classifier_probability(np.array([0.0, 800.0, -800.0])), [0.5, 0.0, 1.0])


def test_rms_and_shapes():
    assert diagnostics.rms(np.array([1.0, 2.0, np.nan]), np.array([0.0, 0.0, 1.0])) == pytest.approx(math.sqrt(2.5))
    assert diagnostics.trivial_rms(np.array([3.0, -4.0])) == pytest.approx(math.sqrt(12.5))
    with pytest.raises(ValueError, match="1-D arrays of one length"):
        diagnostics.rms(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="1-D"):
        diagnostics.roc(np.zeros((3, 1)), np.zeros(3))


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_plots_write_png_files(tmp_path):
    x, y, log_r = two_gaussians(2000)
    hist = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.1 / (e + 1)} for e in range(5)]
    plots.training_curves({"alices/theta/nominal": {"alices-theta-nominal-m00": hist,
                                                     "alices-theta-nominal-m01": hist[:3]}}, tmp_path / "t.png")
    cal = diagnostics.calibration(log_r, y)
    roc = diagnostics.roc(log_r, y)
    plots.calibration_curves({"alices": [plots.Curve("theta", cal.predicted, cal.observed, cal.error)]},
                             tmp_path / "c.png")
    plots.roc_curves({"alices": [plots.Curve("theta", roc.fpr, roc.tpr, roc.auc)]}, tmp_path / "r.png")
    panels = [plots.ScatterPanel(f"theta {i}", log_r, log_r + 0.1 * i, 0.1 * i) for i in range(30)]  # > MAX_PANELS
    plots.closure_scatter(panels, tmp_path / "s.png", suptitle="alices")
    plots.closure_scatter([], tmp_path / "none.png")
    plots.training_curves({}, tmp_path / "empty.png")
    for name in ("t", "c", "r", "s", "none", "empty"):
        assert _is_png(tmp_path / f"{name}.png"), name
