"""The LHAPDF reader (lhagrid1 grids through the `parton` package) against the analytic densities it was written
from, with a known scale dependence, and drell_yan_eft on such a grid: the same cross section as on the analytic
densities, the scale taken event by event at m_ll."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sbi_core.analysis import validate_analysis
from sbi_core.errors import ConfigError, InputError
from sbi_core.physics.drell_yan import DrellYanSimulator
from sbi_core.physics.lhapdf_densities import LhapdfDensities, write_grid
from sbi_core.physics.parton_densities import PartonDensities
from tests.physics.test_drell_yan import raw_config

TOY = PartonDensities()
Q0 = 91.1876
# Denser at large x, where the toy densities fall as (1 - x)^3..9; two subgrids in Q split at m_b, as real sets do.
X_NODES = np.unique(np.concatenate([np.logspace(-6, -1, 50), np.linspace(0.1, 0.99, 90), [0.995, 0.999]]))
Q_SUBGRIDS = [np.geomspace(1.0, 4.75, 5), np.geomspace(4.75, 1.0e4, 30)]
FLAVOURS = [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 21]  # no top: its density must read as zero


def scale_factor(x: np.ndarray, q: np.ndarray, slope: float) -> np.ndarray:
    """A smooth, known Q dependence: 1 + slope (1 - x) ln(Q / Q0)."""
    return 1.0 + slope * (1.0 - x) * np.log(q / Q0)


def toy_xf(slope: float):
    def xf(pid: int, x: np.ndarray, q: np.ndarray) -> np.ndarray:
        if pid == 21:
            return np.zeros_like(x)
        quarks, antiquarks = TOY.densities(x)
        f = (quarks if pid > 0 else antiquarks)[:, abs(pid) - 1]
        return x * f * scale_factor(x, q, slope)

    return xf


@pytest.fixture(scope="module")
def grids(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lhapdf")
    write_grid(root, "toyscaled", toy_xf(0.05), X_NODES, Q_SUBGRIDS, FLAVOURS)
    write_grid(root, "toyflat", toy_xf(0.0), X_NODES, Q_SUBGRIDS, FLAVOURS)
    return root


def test_the_reader_reproduces_the_densities_it_was_written_from(grids):
    # 20k random (x, Q) over 1e-5 < x < 0.9 and 2 GeV < Q < 5 TeV (both subgrids): every flavour, quark and
    # antiquark, within 1e-3 of the analytic value (the bicubic interpolation error of this grid: 6e-4 at most).
    pdf = LhapdfDensities("toyscaled", 0, str(grids))
    rng = np.random.default_rng(1)
    x = np.exp(rng.uniform(np.log(1e-5), np.log(0.9), 20_000))
    q = np.exp(rng.uniform(np.log(2.0), np.log(5000.0), 20_000))
    quarks, antiquarks = pdf.densities(x, q)
    tq, ta = TOY.densities(x)
    factor = scale_factor(x, q, 0.05)[:, None]
    np.testing.assert_allclose(quarks, tq * factor, rtol=1e-3)
    np.testing.assert_allclose(antiquarks, ta * factor, rtol=1e-3)
    # the scale dependence is there: 10 GeV against 1 TeV differ as the factor says
    lo, _ = pdf.densities(np.array([0.01]), 10.0)
    hi, _ = pdf.densities(np.array([0.01]), 1000.0)
    assert hi[0, 1] / lo[0, 1] == pytest.approx(scale_factor(0.01, 1000.0, 0.05) / scale_factor(0.01, 10.0, 0.05),
                                                rel=1e-3)
    assert "toyscaled member 0" in pdf.describe() and "sha256" in pdf.describe()


def test_outside_the_grid_and_missing_sets_are_input_errors(grids, monkeypatch):
    pdf = LhapdfDensities("toyflat", 0, str(grids))
    with pytest.raises(InputError, match="outside its grid"):
        pdf.densities(np.array([1e-8]), 100.0)  # below XMin: not extrapolated
    with pytest.raises(InputError, match="outside its grid"):
        pdf.densities(np.array([0.1]), 2.0e4)  # above QMax
    quarks, antiquarks = pdf.densities(np.array([0.9995, 0.5]), 100.0)  # above XMax (0.999): zero
    assert np.all(quarks[0] == 0) and np.all(antiquarks[0] == 0) and np.all(quarks[1] > 0)
    with pytest.raises(InputError, match="'nosuchset' not found"):
        LhapdfDensities("nosuchset", 0, str(grids))
    monkeypatch.setenv("LHAPDF_DATA_PATH", f"/nonexistent:{grids}")
    assert LhapdfDensities("toyflat").directory == grids  # found through LHAPDF_DATA_PATH
    raw = raw_config()
    raw["simulator"]["options"]["pdf"] = {"source": "lhapdf", "name": "nosuchset"}
    with pytest.raises(ConfigError) as exc:
        validate_analysis(raw)
    assert "simulator.options.pdf.name" in str(exc.value)


def _simulator(grids: Path, name: str) -> DrellYanSimulator:
    raw = raw_config()
    raw["simulator"]["options"]["pdf"] = {"source": "lhapdf", "name": name, "path": str(grids)}
    return DrellYanSimulator(validate_analysis(raw))


def test_drell_yan_on_the_grid_matches_the_analytic_densities(grids):
    # The grid of the scale-free toy: sigma(theta) in the window equals the analytic toy's to 1e-4 (the
    # flavour columns, antiquarks, and both beams are wired as the analytic path).
    analytic = DrellYanSimulator(validate_analysis(raw_config()))
    flat = _simulator(grids, "toyflat")
    for theta in (np.zeros(2), np.array([-0.5, 0.4])):
        assert flat.cross_section(theta) == pytest.approx(analytic.cross_section(theta), rel=1e-4)
    assert flat.provenance()["parton_densities"].startswith("LHAPDF set toyflat")
    assert analytic.provenance()["parton_densities"].startswith("analytic toy densities")
    # With the scale-dependent grid, dsigma at a point carries the factor of both beams at Q = m_ll, or at the
    # fixed scale when one is set (the simulator builds its model so: `scale_gev` from simulator.options.pdf).
    scaled = LhapdfDensities("toyscaled", 0, str(grids))
    m, y, c = np.array([70.0, 150.0, 380.0]), np.array([0.3, -1.1, 0.0]), np.array([0.2, -0.7, 0.9])
    x1, x2 = m / 13_000.0 * np.exp(y), m / 13_000.0 * np.exp(-y)
    base = analytic.model.dsigma(m, y, c, np.zeros(2))
    for scale, q in ((None, m), (250.0, np.full(3, 250.0))):
        model = dataclasses.replace(analytic.model, pdf=scaled, scale_gev=scale)
        expected = base * scale_factor(x1, q, 0.05) * scale_factor(x2, q, 0.05)
        np.testing.assert_allclose(model.dsigma(m, y, c, np.zeros(2)), expected, rtol=2e-3)
