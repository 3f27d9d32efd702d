"""`stencil` and `quadratic_peak`: the local polish of a search, on functions whose peak is known."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_core.search.quadratic import quadratic_peak, stencil

SPACE = {"a": (-1.0, 1.0), "b": (-2.0, 2.0)}


def _f(p):
    da, db = p["a"] - 0.31, p["b"] + 0.42
    return 3 - da**2 - 0.5 * da * db - 0.5 * db**2


def test_the_peak_of_an_exact_quadratic_is_found_from_one_stencil():
    """The stencil around (0, 0) has as many points as a 2-d quadratic has coefficients; its fit puts the peak
    (0.31, -0.42) to rounding, in one step."""
    centre = {"a": 0.0, "b": 0.0}
    pts = stencil(centre, 0.2, SPACE)
    assert len(pts) == 6 and pts[0] == centre
    peak = quadratic_peak(pts, [_f(p) for p in pts], centre, max_step=10.0)
    assert peak == pytest.approx({"a": 0.31, "b": -0.42}, abs=1e-9)


def test_the_step_is_capped_and_the_stencil_stays_in_the_space():
    pts = stencil({"a": 0.95, "b": 0.0}, 0.2, SPACE)
    assert all(-1.0 <= p["a"] <= 1.0 for p in pts)
    centre = {"a": -0.9, "b": 1.5}
    pts = stencil(centre, 0.2, SPACE)
    peak = quadratic_peak(pts, [_f(p) for p in pts], centre, max_step=0.1)
    assert np.hypot(peak["a"] - centre["a"], peak["b"] - centre["b"]) == pytest.approx(0.1)


def test_no_peak_without_a_maximum_or_enough_points():
    """A saddle has no maximum; six coefficients need six points in general position."""
    centre = {"a": 0.0, "b": 0.0}
    pts = stencil(centre, 0.2, SPACE)
    assert quadratic_peak(pts, [p["a"] ** 2 - p["b"] ** 2 for p in pts], centre, max_step=1.0) is None
    assert quadratic_peak(pts[:5], [_f(p) for p in pts[:5]], centre, max_step=1.0) is None
