"""General morphing (max power per parameter) and the optimised basis, checked against direct evaluation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from sbi_core.analysis import validate_analysis
from sbi_core.errors import ConfigError
from sbi_core.physics.basis import basis_report, optimise_basis
from sbi_core.physics.morphing import Morphing, expected_squared_weights, monomials, morphing_powers, quadratic_powers
from sbi_core.physics.registry import make_simulator
from tests.conftest import BENCHMARK_CONFIG

RANGES = np.array([[-1.0, 1.0], [-1.0, 1.0]])
PENTAGON = np.array([(0.0, 0.0), (1.0, 0.0), (0.31, 0.95), (-0.81, 0.59), (-0.81, -0.59), (0.31, -0.95)])


def test_general_powers_reduce_to_the_quadratic_case_and_respect_limits() -> None:
    for n in (1, 2, 3):
        np.testing.assert_array_equal(morphing_powers([2] * n), quadratic_powers(n))
    p = morphing_powers([4, 2, 1], 4)
    assert np.all(p.max(axis=0) <= [4, 2, 1]) and np.all(p.sum(axis=1) <= 4)
    assert len({tuple(r) for r in p.tolist()}) == len(p)
    # every monomial within the limits is there: count them directly
    count = sum(1 for a in range(5) for b in range(3) for c in range(2) if a + b + c <= 4)
    assert len(p) == count


@pytest.mark.parametrize("max_power", [[2, 2], [4, 2], [2, 2, 2], [3, 1, 2]])
def test_morphed_weights_equal_direct_ones_at_random_theta(max_power: list[int]) -> None:
    """w(theta) = sum_c theta^p_c g_c: morphing from an optimised basis gives it to 1e-10 relative."""
    rng = np.random.default_rng(3)
    powers = morphing_powers(max_power)
    ranges = np.tile([-1.0, 1.0], (len(max_power), 1))
    basis = optimise_basis(powers, ranges, np.zeros((1, len(max_power))), candidates=60).basis
    g = rng.normal(size=(50, len(powers)))  # 50 events, one coefficient per component
    weights_at_basis = g @ monomials(basis, powers).T
    thetas = rng.uniform(-1, 1, size=(20, len(max_power)))
    direct = g @ monomials(thetas, powers).T
    morphed = Morphing(powers, basis).morph_weights(weights_at_basis, thetas)
    np.testing.assert_allclose(morphed, direct, rtol=1e-10, atol=1e-10 * np.abs(direct).max())


def test_benchmark_simulator_weights_morph_exactly() -> None:
    """The simulator's weight at random theta (|M(theta)|^2 / |M(theta_s)|^2, computed directly from the latent
    amplitudes) equals the morphed weight to 1e-10 relative."""
    cfg = validate_analysis(yaml.safe_load(BENCHMARK_CONFIG.read_text()))
    sim = make_simulator(cfg)
    batch = sim.simulate(2000, np.random.default_rng(5))
    rng = np.random.default_rng(9)
    for theta in rng.uniform(-1, 1, size=(5, 2)):
        direct = np.exp(sim.latent_log_likelihood(batch.latent, theta) - sim.latent_log_likelihood(
            batch.latent, sim.sampling_theta)) * sim.cross_section(theta)
        morphed = sim.morphing.morph_weights(batch.weights, theta)
        # 1e-10 relative to the terms summed (sum_b |alpha_b w_b|): where interference makes the weight itself
        # vanish, float64 cancellation, not morphing, sets the floor.
        scale = np.abs(batch.weights * sim.morphing.basis_coefficients(theta)).sum(axis=1)
        assert np.all(np.abs(morphed - direct) <= 1e-10 * scale)
        assert np.median(np.abs(morphed / direct - 1)) < 1e-12


def test_optimised_basis_beats_the_hand_picked_pentagon_and_keeps_fixed_points() -> None:
    powers = quadratic_powers(2)
    given = basis_report(powers, PENTAGON, RANGES)
    best = optimise_basis(powers, RANGES, PENTAGON[:1], candidates=200)
    np.testing.assert_array_equal(best.basis[0], PENTAGON[0])
    assert best.expected_squared_weights < given.expected_squared_weights
    assert best.condition_number < 100
    # the figure is the Monte Carlo mean of sum alpha^2: check against a direct average at other points
    thetas = np.random.default_rng(1).uniform(-1, 1, size=(20000, 2))
    assert expected_squared_weights(powers, best.basis, thetas) == pytest.approx(best.expected_squared_weights, rel=0.03)


def _raw() -> dict:
    return yaml.safe_load(BENCHMARK_CONFIG.read_text())


def test_config_optimised_basis_is_filled_and_deterministic() -> None:
    data = _raw()
    data["benchmarks"] = data["benchmarks"][:2]
    data["morphing"] = {"basis": "optimised", "candidates": 100}
    a, b = validate_analysis(copy.deepcopy(data)), validate_analysis(copy.deepcopy(data))
    assert a.benchmark_names[:2] == ["sm", "p1"] and len(a.benchmarks) == 6
    assert a.benchmark_matrix() == b.benchmark_matrix()
    assert validate_analysis(a.model_dump(mode="json")).benchmark_matrix() == a.benchmark_matrix()  # idempotent


def test_too_few_benchmarks_without_optimisation_names_the_way_out() -> None:
    data = _raw()
    data["benchmarks"] = data["benchmarks"][:3]
    with pytest.raises(ConfigError) as info:
        validate_analysis(data)
    ((path, msg),) = info.value.issues
    assert path == "benchmarks" and "morphing.basis: optimised" in msg


def test_benchmark_simulator_refuses_other_powers_and_unknown_parameters() -> None:
    data = _raw()
    data["morphing"] = {"max_power": {"cW": 2, "nope": 1}}
    with pytest.raises(ConfigError, match="morphing.max_power"):
        validate_analysis(data)


def test_morphing_command(cli) -> None:
    res = cli("morphing", "--config", str(BENCHMARK_CONFIG))
    assert res.returncode == 0, res.stderr
    s = res.summary
    assert len(s["components"]) == 6 and s["basis_mode"] == "given"
    assert s["optimised"]["expected_squared_weights"] < s["expected_squared_weights"]
    assert s["optimised"]["fixed"] == ["sm"] and s["condition_number"] == pytest.approx(5.18, abs=0.01)
