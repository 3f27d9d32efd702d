"""Wilks thresholds, CLs tail probabilities and intervals/contours read off scans, against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sbi_core.inference.asymptotics import expected_cls, qtilde_tail_probabilities, wilks_threshold
from sbi_core.inference.intervals import contours_from_grid, interval_from_scan, region_contains


def test_wilks_thresholds_are_half_the_chi2_quantiles():
    assert wilks_threshold(stats.norm.cdf(1) - stats.norm.cdf(-1)) == pytest.approx(0.5, rel=1e-12)
    assert wilks_threshold(0.95) == pytest.approx(1.920729, rel=1e-6)
    assert wilks_threshold(0.95, 2) == pytest.approx(-math.log(0.05), rel=1e-12)  # chi2(2) cdf = 1 - exp(-x/2)
    with pytest.raises(ValueError, match="level"):
        wilks_threshold(1.0)


@pytest.mark.parametrize("q, qa", [(0.3, 2.0), (2.0, 2.0), (5.0, 2.0), (9.0, 0.5), (0.0, 4.0)])
def test_qtilde_tail_probabilities_match_ccgv(q, qa):
    """CCGV eq. 65-67 written out by hand: two regimes, q <= qA and q > qA."""
    clsb, clb, cls = qtilde_tail_probabilities(q, qa)
    if q <= qa:
        exp_sb, exp_b = stats.norm.sf(math.sqrt(q)), stats.norm.cdf(math.sqrt(qa) - math.sqrt(q))
    else:
        s = 2 * math.sqrt(qa)
        exp_sb, exp_b = stats.norm.sf((q + qa) / s), stats.norm.cdf((qa - q) / s)
    assert clsb == pytest.approx(exp_sb, rel=1e-12)
    assert clb == pytest.approx(exp_b, rel=1e-12)
    assert cls == pytest.approx(exp_sb / exp_b, rel=1e-12)


def test_expected_cls_median_and_band_order():
    qa = 3.0
    # median: CLs = (1 - Phi(sqrt qA)) / (1/2)
    assert expected_cls(qa, 0.0) == pytest.approx(2 * stats.norm.sf(math.sqrt(qa)), rel=1e-12)
    # the data-at-median case: an observed q equal to qA gives the median expected CLs
    assert qtilde_tail_probabilities(qa, qa)[2] == pytest.approx(expected_cls(qa, 0.0), rel=1e-12)
    band = [expected_cls(qa, n) for n in (2.0, 1.0, 0.0, -1.0, -2.0)]
    assert band == sorted(band)  # +2 on the statistic = strongest exclusion = smallest CLs


def test_interval_from_parabola_scan():
    sigma, centre = 0.23, 0.11
    x = np.linspace(-1, 1, 21)
    dnll = (x - centre) ** 2 / (2 * sigma**2)
    for level in (0.68, 0.95):
        half = sigma * math.sqrt(2 * wilks_threshold(level))
        iv = interval_from_scan(x, dnll, level)
        # PCHIP on a parabola sampled every 0.1: crossings within 1e-3 of the exact ones
        assert iv.lo == pytest.approx(centre - half, abs=1e-3)
        assert iv.hi == pytest.approx(centre + half, abs=1e-3)
        assert not iv.lo_open and not iv.hi_open and len(iv.pieces) == 1


def test_interval_open_at_edge_and_disjoint_pieces():
    x = np.linspace(-1, 1, 41)
    iv = interval_from_scan(x, (x - 0.9) ** 2 / (2 * 0.3**2), 0.68)
    assert iv.hi_open and iv.hi == 1.0 and not iv.lo_open
    # two minima (a quadratic EFT coupling seen only through its square): two pieces
    iv = interval_from_scan(x, 20 * (x**2 - 0.25) ** 2, 0.68)
    assert len(iv.pieces) == 2
    a = math.sqrt(0.25 + math.sqrt(wilks_threshold(0.68) / 20))
    b = math.sqrt(0.25 - math.sqrt(wilks_threshold(0.68) / 20))
    assert [round(v, 2) for p in iv.pieces for v in p] == [round(v, 2) for v in (-a, -b, b, a)]
    with pytest.raises(ValueError, match="finite"):
        interval_from_scan(x, np.where(x > 0, np.nan, x**2), 0.68)


def test_contour_of_a_correlated_gaussian_is_its_ellipse():
    cov = np.array([[0.09, 0.05], [0.05, 0.16]])
    prec = np.linalg.inv(cov)
    x, y = np.linspace(-1.5, 1.5, 61), np.linspace(-1.5, 1.5, 61)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    pts = np.stack([xx, yy], axis=-1)
    dnll = 0.5 * np.einsum("...i,ij,...j->...", pts, prec, pts)
    (line,) = contours_from_grid(x, y, dnll, 0.95)
    assert np.allclose(line[0], line[-1])  # closed
    radius2 = np.einsum("ni,ij,nj->n", line, prec, line)  # Mahalanobis radius^2 of every contour vertex
    assert np.allclose(radius2, 2 * wilks_threshold(0.95, 2), rtol=2e-2)
    assert region_contains(x, y, dnll, 0.68, (0.2, 0.2))
    assert not region_contains(x, y, dnll, 0.68, (0.6, -0.3))
    assert not region_contains(x, y, dnll, 0.68, (2.0, 0.0))
