"""The NLL of the per-event likelihood contract (docs/likelihood-model.md), written once for numpy and JAX.

With column weights w_b(theta) = monomials(theta) @ matrix, per nuisance k the interpolation basis
F_k = (f_up(nu_k), f_down(nu_k)) of its scheme, and per event i and sample s

    T_is = exp(sum_{k multiplicative} lrv[i, k, :, s] . F_k) * (1 + sum_{k additive} expm1(lrv[i, k, :, s]) . F_k)
    rate_i = sum_s sum_{b in s} w_b exp(log_ratio[i, b]) T_is

    NLL(theta, nu) = L sigma(theta, nu) - sum_i weight_i log rate_i + sum_k (nu_k - aux_k)^2 / 2

sigma: `mc`, sum_j m_j rate_j over the normalisation sample; `xsec`, sum_b w_b sigma_b T_b with T_b built
the same way from log(xsec_var / xsec) per column. A rate at or below B eps sum_b |w_b exp(log_ratio)| T
(the rounding bound of its sum) is floored there, as the pipeline does.

Schemes: `exponential` (f_up = max(nu, 0), f_down = max(-nu, 0)), `polyexp` (inside [-1, 1] the 6th-order
polynomial matching the exponential branches' value, slope and curvature at +-1) and `linear` (additive,
HistFactory's code 0, with the exponential's basis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MULTIPLICATIVE", "SCHEMES", "Model", "basis", "polyexp_coefficients"]

SCHEMES = ("exponential", "polyexp", "linear")
MULTIPLICATIVE = ("exponential", "polyexp")


def polyexp_coefficients() -> tuple[np.ndarray, np.ndarray]:
    """a_1..a_6 of f_up and f_down inside [-1, 1]: value, slope and curvature of the branches at +-1."""
    rows = []
    for x in (1.0, -1.0):
        rows.append([x**j for j in range(1, 7)])
        rows.append([j * x ** (j - 1) for j in range(1, 7)])
        rows.append([j * (j - 1) * x ** (j - 2) for j in range(1, 7)])
    a = np.array(rows)
    up = np.linalg.solve(a, np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    down = np.linalg.solve(a, np.array([0.0, 0.0, 0.0, 1.0, -1.0, 0.0]))
    return up, down


_UP, _DOWN = polyexp_coefficients()


def basis(nu: Any, poly: np.ndarray, xp: Any) -> Any:
    """(K, 2) basis (f_up, f_down); `poly` (K,) bool: the nuisances with the polyexp scheme."""
    branch_up, branch_down = xp.maximum(nu, 0.0), xp.maximum(-nu, 0.0)
    if not poly.any():
        return xp.stack([branch_up, branch_down], axis=1)
    inside = xp.abs(nu) <= 1.0
    x = xp.clip(nu, -1.0, 1.0)

    def horner(coef: np.ndarray) -> Any:
        acc = xp.zeros_like(x)
        for a in coef[::-1]:
            acc = (acc + a) * x
        return acc

    up = xp.where(poly & inside, horner(_UP), branch_up)
    down = xp.where(poly & inside, horner(_DOWN), branch_down)
    return xp.stack([up, down], axis=1)


@dataclass(frozen=True)
class Model:
    """The model's constants (numpy arrays); `nll(p, data, norm, xp)` evaluates it on per-event arrays."""

    powers: np.ndarray  # (C, P) int
    matrix: np.ndarray  # (C, B)
    owner: np.ndarray  # (B, S) one-hot: the sample of each column
    schemes: tuple[str, ...]  # (K,)
    aux: np.ndarray  # (K,)
    luminosity: float
    normalization: str  # "mc" or "xsec"
    xsec: np.ndarray  # (B,)
    xsec_var: np.ndarray  # (K, 2, B)

    @property
    def n_pois(self) -> int:
        return int(self.powers.shape[1])

    def weights(self, theta: Any, xp: Any) -> Any:
        """w_b(theta) = monomials(theta) @ matrix."""
        monos = []
        for row in self.powers:
            m = xp.ones((), dtype=theta.dtype)
            for j, k in enumerate(row):
                if k:
                    m = m * theta[j] ** int(k)
            monos.append(m)
        return xp.stack(monos) @ self.matrix

    def _bases(self, nu: Any, xp: Any) -> tuple[Any, Any]:
        """(F of the multiplicative nuisances, F of the additive ones), each (K, 2) with zero rows elsewhere."""
        f = basis(nu, np.array([s == "polyexp" for s in self.schemes], dtype=bool), xp)
        mult = np.array([s in MULTIPLICATIVE for s in self.schemes], dtype=np.float64)[:, None]
        return f * mult, f * (1.0 - mult)

    def rates(self, w: Any, fm: Any, fa: Any, arrays: dict[str, Any], xp: Any) -> tuple[Any, Any, Any]:
        """(log rate, rate, floor) per event; arrays: log_ratio (n, B), log_ratio_var (n, K, 2, S)."""
        lr, lrv = arrays["log_ratio"], arrays["log_ratio_var"]
        shift = xp.max(lr, axis=1)
        e = xp.exp(lr - shift[:, None])  # <= 1
        t = xp.exp(xp.einsum("nkjs,kj->ns", lrv, fm)) * (1.0 + xp.einsum("nkjs,kj->ns", xp.expm1(lrv), fa))
        rate = xp.sum((e * w) @ self.owner * t, axis=1)
        n_b = self.owner.shape[0]
        floor = n_b * np.finfo(np.float64).eps * xp.sum((e * xp.abs(w)) @ self.owner * xp.abs(t), axis=1)
        return shift, rate, floor

    def sigma(self, w: Any, fm: Any, fa: Any, norm: dict[str, Any] | None, xp: Any) -> Any:
        """The expected rate sigma(theta, nu) in pb."""
        if self.normalization == "mc":
            if norm is None:
                raise ValueError("normalization mc needs the normalisation sample's arrays")
            shift, rate, _ = self.rates(w, fm, fa, norm, xp)
            return xp.sum(norm["weight"] * rate * xp.exp(shift))
        ratio = self.xsec_var / self.xsec[None, None, :]  # (K, 2, B)
        t = xp.exp(xp.einsum("kjb,kj->b", np.log(ratio), fm)) * (1.0 + xp.einsum("kjb,kj->b", ratio - 1.0, fa))
        return xp.sum(w * self.xsec * t)

    def nll(self, p: Any, data: dict[str, Any], norm: dict[str, Any] | None, xp: Any = np) -> Any:
        """NLL(p) for the dataset `data` (log_ratio, log_ratio_var, weight), p = (theta, nu)."""
        theta, nu = p[: self.n_pois], p[self.n_pois :]
        w = self.weights(theta, xp)
        fm, fa = self._bases(nu, xp)
        shift, rate, floor = self.rates(w, fm, fa, data, xp)
        log_rate = xp.log(xp.where(rate > floor, rate, floor)) + shift
        constraint = 0.5 * xp.sum((nu - self.aux) ** 2)
        return self.luminosity * self.sigma(w, fm, fa, norm, xp) - xp.sum(data["weight"] * log_rate) + constraint

    def n_floored(self, p: np.ndarray, data: dict[str, Any]) -> int:
        """Events whose rate at p is at or below the floor (numpy)."""
        theta, nu = p[: self.n_pois], p[self.n_pois :]
        fm, fa = self._bases(nu, np)
        _, rate, floor = self.rates(self.weights(theta, np), fm, fa, data, np)
        return int(np.sum((rate <= floor) & (data["weight"] != 0)))
