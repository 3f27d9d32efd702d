"""Morphing: exactness on quadratic polynomials, basis checks, strict shapes."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_core.errors import InputError
from sbi_core.physics.morphing import Morphing, monomials, monomials_gradient, quadratic_powers

PENTAGON = np.array([[0.0, 0.0], [1.0, 0.0], [0.31, 0.95], [-0.81, 0.59], [-0.81, -0.59], [0.31, -0.95]])


def random_basis(n_params: int, rng: np.random.Generator) -> np.ndarray:
    n_comp = (n_params + 1) * (n_params + 2) // 2
    return np.vstack([np.zeros(n_params), rng.uniform(-1.5, 1.5, (n_comp - 1, n_params))])


def test_quadratic_powers_order() -> None:
    assert quadratic_powers(1).tolist() == [[0], [1], [2]]
    assert quadratic_powers(2).tolist() == [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]]
    p3 = quadratic_powers(3)
    assert p3.shape == (10, 3) and p3.dtype == np.int64
    assert p3[:4].tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert p3[4:].tolist() == [[2, 0, 0], [1, 1, 0], [1, 0, 1], [0, 2, 0], [0, 1, 1], [0, 0, 2]]
    with pytest.raises(ValueError, match="n_params"):
        quadratic_powers(0)


@pytest.mark.parametrize("n_params", [1, 2, 3])
def test_exact_on_random_quadratic_polynomials(n_params: int) -> None:
    rng = np.random.default_rng(n_params)
    powers = quadratic_powers(n_params)
    for _ in range(5):
        basis = random_basis(n_params, rng)
        try:
            morph = Morphing(powers, basis)
        except InputError:  # an unlucky random basis: draw again
            continue
        coeffs = rng.normal(size=(powers.shape[0], 7))  # 7 random quadratic polynomials ("events")
        at_basis = monomials(basis, powers) @ coeffs  # (n_basis, 7)
        thetas = rng.uniform(-2, 2, (11, n_params))
        exact = monomials(thetas, powers) @ coeffs  # (11, 7)
        # Exact up to rounding: relative 1e-10 of the polynomial's scale.
        morphed = morph.morph_weights(at_basis.T, thetas)  # (7, 11)
        np.testing.assert_allclose(morphed.T, exact, rtol=1e-10, atol=1e-10 * np.abs(exact).max())
        for t, row in zip(thetas, exact, strict=True):
            np.testing.assert_allclose(
                morph.morph_weights(at_basis.T, t), row, rtol=1e-10, atol=1e-10 * np.abs(exact).max()
            )


def test_coefficients_at_basis_points_are_unit_vectors() -> None:
    morph = Morphing(quadratic_powers(2), PENTAGON)
    np.testing.assert_allclose(morph.basis_coefficients(PENTAGON), np.eye(6), atol=1e-12)
    assert morph.condition_number < 10
    # `matrix` (n_components, n_basis) inverts the monomial matrix: alpha(theta) = components(theta) @ matrix.
    np.testing.assert_allclose(morph.matrix @ monomials(PENTAGON, morph.powers), np.eye(6), atol=1e-12)


def test_gradient_matches_finite_differences() -> None:
    powers = quadratic_powers(2)
    morph = Morphing(powers, PENTAGON)
    theta = np.array([0.37, -0.61])
    h = 1e-6
    fd = np.stack(
        [
            (morph.basis_coefficients(theta + h * e) - morph.basis_coefficients(theta - h * e)) / (2 * h)
            for e in np.eye(2)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(morph.basis_gradient(theta), fd, rtol=1e-7, atol=1e-8)  # central FD error ~h^2
    # theta = 0 exercises the 0**(p-1) corner of the derivative.
    np.testing.assert_allclose(monomials_gradient(np.zeros(2), powers)[:3], [[0, 0], [1, 0], [0, 1]])
    assert np.all(monomials_gradient(np.zeros(2), powers)[3:] == 0)


def test_batch_shapes() -> None:
    morph = Morphing(quadratic_powers(2), PENTAGON)
    assert morph.components(np.zeros(2)).shape == (6,)
    assert morph.components(np.zeros((4, 2))).shape == (4, 6)
    assert morph.basis_coefficients(np.zeros((4, 2))).shape == (4, 6)
    assert morph.basis_gradient(np.zeros(2)).shape == (6, 2)
    assert morph.basis_gradient(np.zeros((4, 2))).shape == (4, 6, 2)
    w = np.ones((10, 6))
    assert morph.morph_weights(w, np.zeros(2)).shape == (10,)
    assert morph.morph_weights(w, np.zeros((3, 2))).shape == (10, 3)


@pytest.mark.parametrize("theta", [np.zeros(3), np.zeros((2, 3)), np.zeros((1, 2, 2)), np.float64(0.0)])
def test_wrong_theta_shape_is_refused(theta: np.ndarray) -> None:
    morph = Morphing(quadratic_powers(2), PENTAGON)
    with pytest.raises(ValueError, match=r"expected shape \(2,\) or \(m, 2\)"):
        morph.basis_coefficients(theta)


def test_wrong_weights_shape_is_refused() -> None:
    morph = Morphing(quadratic_powers(2), PENTAGON)
    with pytest.raises(ValueError, match=r"expected shape \(n_events, 6\), got \(10, 5\)"):
        morph.morph_weights(np.ones((10, 5)), np.zeros(2))


def test_singular_basis_duplicate_point() -> None:
    basis = PENTAGON.copy()
    basis[5] = basis[4]
    with pytest.raises(InputError, match="singular or ill-conditioned: condition number"):
        Morphing(quadratic_powers(2), basis)


def test_singular_basis_points_on_a_conic() -> None:
    # Six points on the unit circle: theta_0^2 + theta_1^2 - 1 vanishes on all of them.
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    with pytest.raises(InputError, match="condition number"):
        Morphing(quadratic_powers(2), np.stack([np.cos(angles), np.sin(angles)], axis=1))


def test_ill_conditioned_basis_and_threshold() -> None:
    basis = PENTAGON * 1e-5  # nearly all at the SM: huge morphing coefficients
    with pytest.raises(InputError, match="condition number"):
        Morphing(quadratic_powers(2), basis)
    assert Morphing(quadratic_powers(2), basis, max_condition=1e20).condition_number > 1e8


def test_wrong_number_of_benchmarks() -> None:
    with pytest.raises(InputError, match="5 benchmarks for 6 morphing components"):
        Morphing(quadratic_powers(2), PENTAGON[:5])


def test_bad_powers() -> None:
    with pytest.raises(ValueError, match="integer"):
        Morphing(quadratic_powers(2).astype(float), PENTAGON)
    with pytest.raises(ValueError, match=">= 0"):
        Morphing(-quadratic_powers(2), PENTAGON)
    with pytest.raises(ValueError, match=r"expected shape \(n_basis, 2\)"):
        Morphing(quadratic_powers(2), PENTAGON[:, :1])


def test_arrays_are_read_only() -> None:
    morph = Morphing(quadratic_powers(2), PENTAGON)
    with pytest.raises(ValueError):
        morph.basis[0, 0] = 1.0
