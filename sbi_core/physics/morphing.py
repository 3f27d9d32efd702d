"""Morphing: when dsigma(z|theta) = sum_c theta^powers[c] g_c(z), weights at a few basis benchmarks
give the weight at any theta exactly (a fixed linear combination per theta).

What to use when:
- `quadratic_powers(n)`: the component exponents of a squared amplitude with n couplings plus SM;
  `morphing_powers(max_power, max_overall_power)`: the general case (MadMiner's max power per parameter).
- `expected_squared_weights(powers, basis, thetas)`: the figure of merit an optimised basis minimises
  (`sbi_core.physics.basis.optimise_basis` chooses one).
- `monomials(theta, powers)` / `monomials_gradient(theta, powers)`: the theta^powers[c] factors and
  their derivatives (cross sections, scores), no basis needed.
- `Morphing(powers, basis)`: checks the basis once, then `basis_coefficients(theta)` (alpha, with
  w(theta) = sum_b alpha_b(theta) w(theta_b)) and `morph_weights(weights_at_basis, theta)`.

Shapes are strict: theta is (n_params,) or a batch (m, n_params); nothing else is broadcast.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from sbi_core.errors import InputError

#: Largest condition number of the monomial matrix accepted for a basis: beyond it the morphing
#: coefficients amplify the statistical noise of the basis weights by as much.
MAX_CONDITION = 1e8

__all__ = [
    "MAX_CONDITION",
    "Morphing",
    "expected_squared_weights",
    "monomials",
    "monomials_gradient",
    "morphing_powers",
    "quadratic_powers",
]


def quadratic_powers(n_params: int) -> np.ndarray:
    """Exponents (n_components, n_params) of |SM + sum_k theta_k BSM_k|^2, n_components = (n+1)(n+2)/2.

    Order: the constant (SM) term; then the linear (interference) terms theta_0 .. theta_{n-1};
    then the quadratic terms theta_i theta_j for i <= j in lexicographic order (theta_0^2,
    theta_0 theta_1, ..., theta_1^2, ...). This is the order of the amplitude pairs (k, l), k <= l,
    with k, l = 0 for SM and i+1 for coupling i. (MadMiner's `find_components` lists the same set in
    itertools.product order instead.)
    """
    if isinstance(n_params, bool) or not isinstance(n_params, int | np.integer) or n_params < 1:
        raise ValueError(f"n_params must be an int >= 1, got {n_params!r}")
    n = int(n_params)
    rows = [np.zeros(n, dtype=np.int64)]
    for i in range(n):
        row = np.zeros(n, dtype=np.int64)
        row[i] = 1
        rows.append(row)
    for i in range(n):
        for j in range(i, n):
            row = np.zeros(n, dtype=np.int64)
            row[i] += 1
            row[j] += 1
            rows.append(row)
    return np.stack(rows)


def morphing_powers(max_power: list[int], max_overall_power: int | None = None) -> np.ndarray:
    """Every monomial theta^p with p_k <= max_power[k] and sum(p) <= max_overall_power (default max(max_power)),
    as (n_components, n_params) exponents: MadMiner's convention for a model whose squared amplitude
    has couplings up to those powers. Ordered by total degree, then by exponents in descending
    lexicographic order, which is `quadratic_powers(n)` for max_power = [2] * n."""
    if not max_power or any(isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 0 for m in max_power):
        raise ValueError(f"max_power: expected a non-empty list of ints >= 0, got {max_power!r}")
    overall = max(max_power) if max_overall_power is None else int(max_overall_power)
    if overall < 0:
        raise ValueError(f"max_overall_power must be >= 0, got {overall}")
    rows = [p for p in itertools.product(*(range(int(m) + 1) for m in max_power)) if sum(p) <= overall]
    rows.sort(key=lambda p: (sum(p), tuple(-e for e in p)))
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), len(max_power))


def expected_squared_weights(powers: np.ndarray, basis: np.ndarray, thetas: np.ndarray) -> float:
    """Mean over thetas (m, n_params) of sum_b alpha_b(theta)^2: MadMiner's figure of merit of a basis (the
    variance of a morphed weight grows with it); inf for a singular basis."""
    matrix = monomials(np.asarray(basis, dtype=np.float64), powers)
    try:
        inverse = np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        return math.inf
    if not np.all(np.isfinite(inverse)):
        return math.inf
    alpha = monomials(thetas, powers) @ inverse
    return float(np.mean(np.sum(alpha**2, axis=1)))


def _check_powers(powers: np.ndarray) -> np.ndarray:
    arr = np.asarray(powers)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"powers: expected a 2-D (n_components, n_params) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"powers: expected integer exponents, got dtype {arr.dtype}")
    if np.any(arr < 0):
        raise ValueError("powers: exponents must be >= 0")
    return arr.astype(np.int64)


def _check_theta(theta: np.ndarray, n_params: int) -> np.ndarray:
    arr = np.asarray(theta, dtype=np.float64)
    if arr.ndim not in (1, 2) or arr.shape[-1] != n_params:
        raise ValueError(f"theta: expected shape ({n_params},) or (m, {n_params}), got {arr.shape}")
    return arr


def monomials(theta: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """theta^powers[c] for every component c: (n_components,) for theta (n_params,), (m, n_components) for a batch."""
    p = _check_powers(powers)
    t = _check_theta(theta, p.shape[1])
    return np.prod(t[..., None, :] ** p, axis=-1)  # 0.0**0 == 1


def monomials_gradient(theta: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """d theta^powers[c] / d theta_p: (n_components, n_params), or (m, n_components, n_params) for a batch."""
    p = _check_powers(powers)
    t = _check_theta(theta, p.shape[1])
    base = t[..., None, :] ** p  # (..., C, P)
    lowered = t[..., None, :] ** np.maximum(p - 1, 0)
    deriv = np.where(p > 0, p * lowered, 0.0)  # d/dtheta_p of the p-th factor alone
    out = np.empty(base.shape, dtype=np.float64)
    for k in range(p.shape[1]):  # loop over parameters only (a handful)
        factors = base.copy()
        factors[..., k] = deriv[..., k]
        out[..., k] = np.prod(factors, axis=-1)
    return out


class Morphing:
    """Exact morphing for dsigma(z|theta) = sum_c theta^powers[c] g_c(z) on a basis of benchmark points.

    The basis needs one benchmark per component and a well-conditioned monomial matrix
    (InputError otherwise, with the condition number).
    """

    def __init__(self, powers: np.ndarray, basis: np.ndarray, *, max_condition: float = MAX_CONDITION) -> None:
        self._powers = _check_powers(powers)
        n_comp, n_params = self._powers.shape
        b = np.asarray(basis, dtype=np.float64)
        if b.ndim != 2 or b.shape[1] != n_params:
            raise ValueError(f"basis: expected shape (n_basis, {n_params}), got {b.shape}")
        if not np.all(np.isfinite(b)):
            raise InputError("morphing basis: benchmark values must be finite")
        if b.shape[0] != n_comp:
            raise InputError(
                f"morphing basis: {b.shape[0]} benchmarks for {n_comp} morphing components; "
                f"exactly {n_comp} are needed (one per component)"
            )
        if len({tuple(r) for r in self._powers.tolist()}) != n_comp:
            raise ValueError("powers: components must be distinct")
        matrix = monomials(b, self._powers)  # (n_basis, n_components)
        cond = float(np.linalg.cond(matrix))
        if not np.isfinite(cond) or cond > max_condition:
            raise InputError(
                f"morphing basis is singular or ill-conditioned: condition number {cond:.3g} of the monomial "
                f"matrix exceeds {max_condition:.3g}; spread the benchmarks out (no duplicates, not on a line or conic)"
            )
        self._basis = b.copy()
        self._matrix = matrix
        self._inverse = np.linalg.inv(matrix)  # (n_components, n_basis)
        self._cond = cond
        for arr in (self._powers, self._basis, self._matrix, self._inverse):
            arr.setflags(write=False)

    @property
    def powers(self) -> np.ndarray:
        """(n_components, n_params) int exponents (read-only)."""
        return self._powers

    @property
    def basis(self) -> np.ndarray:
        """(n_basis, n_params) benchmark points (read-only)."""
        return self._basis

    @property
    def n_components(self) -> int:
        return int(self._powers.shape[0])

    @property
    def n_params(self) -> int:
        return int(self._powers.shape[1])

    @property
    def condition_number(self) -> float:
        """2-norm condition number of the monomial matrix of the basis."""
        return self._cond

    @property
    def matrix(self) -> np.ndarray:
        """(n_components, n_basis) inverse monomial matrix: MadMiner's `morphing/morphing_matrix`."""
        return self._inverse

    def components(self, theta: np.ndarray) -> np.ndarray:
        """theta^powers[c]: (n_components,) or (m, n_components) for a batch of thetas."""
        return monomials(theta, self._powers)

    def basis_coefficients(self, theta: np.ndarray) -> np.ndarray:
        """alpha(theta), (n_basis,) or (m, n_basis): w(theta) = sum_b alpha_b w(theta_b) for any w in the span."""
        return self.components(theta) @ self._inverse

    def basis_gradient(self, theta: np.ndarray) -> np.ndarray:
        """d alpha_b / d theta_p: (n_basis, n_params), or (m, n_basis, n_params) for a batch."""
        return np.einsum("...cp,cb->...bp", monomials_gradient(theta, self._powers), self._inverse)

    def morph_weights(self, weights_at_basis: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Per-event weights at theta from weights (n_events, n_basis) at the basis: (n_events,), or
        (n_events, m) for a batch of thetas."""
        w = np.asarray(weights_at_basis, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != self._basis.shape[0]:
            raise ValueError(f"weights_at_basis: expected shape (n_events, {self._basis.shape[0]}), got {w.shape}")
        return w @ self.basis_coefficients(theta).T
