"""The CLs-crossing estimator on toy counts drawn from a known curve, and the refinement's choices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from sbi_core.studies.cls_scan import ScanPoint, decreasing_fit, locate_limit, refine

ALPHA = 0.05


def curve(mu: float) -> tuple[float, float]:
    """(CLs+b, CLb) of a smooth model: CLs+b = 1 - Phi(2 mu - 1.2), CLb = 1 - Phi(0.3 mu - 0.9)."""
    return float(special.ndtr(-(2 * mu - 1.2))), float(special.ndtr(-(0.3 * mu - 0.9)))


def true_limit() -> float:
    lo, hi = 0.0, 3.0
    for _ in range(80):
        mid = (lo + hi) / 2
        sb, b = curve(mid)
        lo, hi = (mid, hi) if sb / b > ALPHA else (lo, mid)
    return lo


def draw(mus, n, seed) -> list[ScanPoint]:
    rng = np.random.default_rng(seed)
    out = []
    for i, mu in enumerate(mus):
        sb, b = curve(mu)
        out.append(ScanPoint(i, mu, n, int(rng.binomial(n, sb)), n, int(rng.binomial(n, b)), allocated=n))
    return out


def test_decreasing_fit_pools_upward_fluctuations():
    assert decreasing_fit([0.3, 0.1, 0.2, 0.05], [1, 1, 1, 1]) == pytest.approx([0.3, 0.15, 0.15, 0.05])
    assert decreasing_fit([0.3, 0.1, 0.2], [1, 3, 1]) == pytest.approx([0.3, 0.125, 0.125])


def test_the_limit_and_its_error_are_honest():
    """200 sets of toys (400 a value) at 7 values around the limit: the pull (estimate - truth) / error is standard normal."""
    truth = true_limit()
    pulls = []
    for seed in range(200):
        est = locate_limit(draw(np.linspace(1.0, 2.0, 7), 400, seed), ALPHA)
        assert est.status == "located"
        pulls.append((est.value - truth) / est.error)
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 0.25 and 0.8 < pulls.std() < 1.25, (pulls.mean(), pulls.std())


def test_status_outside_the_grid_and_failed_points():
    assert locate_limit(draw([0.1, 0.2], 200, 0), ALPHA).status == "above"
    assert locate_limit(draw([2.5, 3.0], 200, 0), ALPHA).status == "below"
    failed = [ScanPoint(0, 1.0, failed="invalid fit")]
    assert locate_limit(failed, ALPHA).status == "none"


def test_refine_adds_values_near_the_limit_and_toys_where_they_straddle():
    pts = draw([0.5, 1.0, 1.5, 2.0], 200, 3)
    est = locate_limit(pts, ALPHA)
    nxt = refine(pts, est, alpha=ALPHA, null=0.0, upper=3.0, tolerance=0.02, new_points=3, max_toys=800)
    assert [i for i, _ in nxt.new] == [4, 5, 6]
    assert all(est.lo <= mu <= est.hi for _, mu in nxt.new)
    for i, n in nxt.more:
        c, e = pts[i].cls
        assert abs(c - ALPHA) < 2 * e and n == 200  # doubling
    # at the cap, with no room for new values: nothing more to do
    capped = [ScanPoint(p.index, p.mu, p.n_sb, p.k_sb, p.n_b, p.k_b, allocated=800) for p in pts]
    assert refine(capped, est, alpha=ALPHA, null=0.0, upper=3.0, tolerance=10.0, new_points=3, max_toys=800).empty
    above = locate_limit(draw([0.1, 0.2], 200, 0), ALPHA)
    ext = refine(draw([0.1, 0.2], 200, 0), above, alpha=ALPHA, null=0.0, upper=3.0, tolerance=0.02, new_points=3,
                 max_toys=800)
    assert [round(m, 6) for _, m in ext.new] == [round(0.2 + 2.8 / 3, 6), round(0.2 + 5.6 / 3, 6), 3.0]
