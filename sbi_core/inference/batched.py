"""Many toys of one pool fitted at once: vectorised Newton fits for coverage and Neyman studies.

A toy of `toys.ToyGenerator` is a set of pool rows with multiplicities and its auxiliary data. `ToyBatch` holds
T of them side by side (each padded to the same number of rows) and evaluates all their NLLs in one vmapped,
compiled call: the contract's NLL with normalisation "mc" by the pool (what the pipeline's toys use),

    NLL_t(p) = L sum_j m_j (E_j . alpha) exp(C_j . F) - sum_i w_ti log(E_ti . alpha) - S_t . F - shift_t
               + |nu - aux_t|^2 / 2

for models whose nuisances are all in the NLL's "common" group (one sample, multiplicative schemes: the benchmark
model; `NLLModel.groups`): the same formula as `sbi_core.inference.nll`, written without chunks so that JAX's
Hessian of it is cheap, and checked against `NLLModel` to rounding (tests/inference/test_coverage.py).

The fit (`ToyBatch.fit`): a chord Newton method. The Hessian is computed once per toy, at the start (for the
normalisation term, which does not depend on the toy's data, once for all toys when they start at one point),
and every step is -H0^-1 g on the free parameters with the current gradient; a step that raises the NLL is
halved (per toy) and the next one tried from the same point. Near the minimum the error shrinks by
||I - H0^-1 H(x*)|| per step (0.3-0.6 for the benchmark's toys of ~100 events), so 10-30 steps reach `tol`
(the largest step, in errors sqrt(diag H0^-1); default 1e-6, where the NLL is within ~1e-12 of its minimum);
each step is one vmapped value-and-gradient over the toys' rows and the pool. A toy whose H0 is not positive definite gets a shifted one (H0 + delta I). Profile fits
(`fixed=`) start from the global fits with the global H0 (its free block).

What to use when:
- `ToyBatch.draw(generator, p, seed, indices)`: the toys `generator.toy(p, seed, i)` would give (same draws).
- `batch.fit(fixed=..., start=...)` -> `BatchFit`; `batch.profile_dnll(tested, tests)`: global fits and the
  profile Delta NLL at the tested values for each test (what `toys.fit_toy` computes one toy at a time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.inference import nll as _nll_module  # noqa: F401 - switches JAX to float64
from sbi_core.inference.interpolation import ADDITIVE, basis_functions, schemes_for
from sbi_core.inference.passes import morphing_weights as _alpha

__all__ = ["BatchFit", "ToyBatch"]


@dataclass(frozen=True)
class BatchFit:
    """Fits of T toys: values (T, P) in the model's parameter order, nll (T,), converged (T,), steps taken."""

    names: list[str]
    values: np.ndarray
    nll: np.ndarray
    converged: np.ndarray
    steps: int

    def value(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]


class ToyBatch:
    """T toys of one pool (see the module doc). Parameters: POIs then nuisances, the pool's order."""

    def __init__(self, pool: Any, luminosity: float, toys: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                 interpolation: str = "polyexp", schemes: Mapping[str, str] | None = None) -> None:
        """pool: the pool's `LikelihoodArrays` (weights: MC weights at the reference); toys: (rows, counts, aux)."""
        kinds = schemes_for(pool.nuisance, interpolation, schemes)
        if len(set(kinds)) != 1 or kinds[0] in ADDITIVE or pool.n_samples != 1:
            raise ValueError("ToyBatch: every nuisance must be common (one sample, one multiplicative scheme); "
                             "fit other models toy by toy (toys.fit_toy)")
        self.names = list(pool.parameters) + list(pool.nuisance)
        self.n_pois, self.n_toys = len(pool.parameters), len(toys)
        lr = np.asarray(pool.log_ratio, dtype=np.float64)
        shift = lr.max(axis=1)
        e = np.exp(lr - shift[:, None])
        c = np.asarray(pool.log_ratio_var, dtype=np.float64)[:, :, :, 0].reshape(pool.n_events, -1)
        rows = 1 << max(1, max(len(t[0]) for t in toys) - 1).bit_length()
        et, wt = np.zeros((self.n_toys, rows, e.shape[1])), np.zeros((self.n_toys, rows))
        st, sh, aux = np.zeros((self.n_toys, c.shape[1])), np.zeros(self.n_toys), np.zeros((self.n_toys, c.shape[1] // 2))
        for t, (r, counts, a) in enumerate(toys):
            et[t, : len(r)], wt[t, : len(r)] = e[r], counts
            st[t], sh[t], aux[t] = counts @ c[r], counts @ shift[r], a
        self._toy = tuple(jnp.asarray(x) for x in (et, wt, st, sh, aux))
        self._shared = (jnp.asarray(float(luminosity)), jnp.asarray(e), jnp.asarray(c),
                        jnp.asarray(np.asarray(pool.weight, dtype=np.float64) * np.exp(shift)),
                        jnp.asarray(np.asarray(pool.morphing_matrix, dtype=np.float64)))
        self._fns = _functions(tuple(tuple(int(v) for v in row) for row in pool.morphing_components), self.n_pois,
                               kinds[0])

    @classmethod
    def draw(cls, generator: Any, p: Sequence[float] | np.ndarray, seed: int, indices: Sequence[int]) -> ToyBatch:
        """The toys `generator.toy(p, seed, i)` for i in indices (the same draws, in the same order)."""
        from sbi_core.inference.toys import toy_rng

        toys = []
        for i in indices:
            rng = toy_rng(seed, i)
            rows, counts = generator.draw(p, rng)
            toys.append((rows, counts, generator.draw_aux(p, rng)))
        return cls(generator.pool, generator.luminosity, toys,
                   schemes=dict(zip(generator.pool.nuisance, generator.schemes, strict=True)),
                   interpolation=generator.interpolation)

    # ------------------------------------------------------------------ evaluation
    def value_and_grad(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every toy's NLL (T,) and gradient (T, P) at its own p[t]."""
        v, g = self._fns["vg"](jnp.asarray(p), *self._toy, *self._shared)
        return np.asarray(v), np.asarray(g)

    def hessians(self, p: np.ndarray) -> np.ndarray:
        """(T, P, P) Hessians at p (T, P); the normalisation term once when every toy has the same p."""
        p = np.asarray(p, dtype=np.float64)
        data = np.asarray(self._fns["h_data"](jnp.asarray(p), *self._toy, *self._shared))
        if np.all(p == p[:1]):
            norm = np.asarray(self._fns["h_norm"](jnp.asarray(p[0]), *self._shared))[None]
        else:
            norm = np.asarray(self._fns["h_norm_all"](jnp.asarray(p), *self._shared))
        return data + norm

    # ------------------------------------------------------------------ fits
    def fit(self, fixed: Mapping[str, float] | None = None, start: np.ndarray | None = None, *,
            hessians: np.ndarray | None = None, tol: float = 1e-6, max_steps: int = 80) -> tuple[BatchFit, np.ndarray]:
        """Chord-Newton fits with `fixed` parameters held (one value for all toys); start (P,) or (T, P).
        Returns the fits and the Hessians used (computed at the start unless given)."""
        x = np.broadcast_to(np.asarray(start if start is not None else np.zeros(len(self.names)), dtype=np.float64),
                            (self.n_toys, len(self.names))).copy()
        free = np.ones(len(self.names), dtype=bool)
        for name, value in (fixed or {}).items():
            x[:, self.names.index(name)] = value
            free[self.names.index(name)] = False
        h0 = self.hessians(x) if hessians is None else hessians
        inv, sigma = _inverse(h0, free)
        f, g = self.value_and_grad(x)
        scale = np.ones(self.n_toys)
        done = np.zeros(self.n_toys, dtype=bool)
        steps = 0
        for steps in range(1, max_steps + 1):  # noqa: B007 - the count is returned
            d = -np.einsum("tij,tj->ti", inv, np.where(free, g, 0.0))
            size = np.max(np.abs(d) / sigma, axis=1)
            done = size < tol
            if done.all():
                break
            trial = x + (scale * ~done)[:, None] * d
            f_new, g_new = self.value_and_grad(trial)
            ok = f_new <= f + 1e-12 * np.maximum(1.0, np.abs(f))
            x = np.where(ok[:, None], trial, x)
            f, g = np.where(ok, f_new, f), np.where(ok[:, None], g_new, g)
            scale = np.where(ok, np.minimum(1.0, 2 * scale), scale / 2)
        return BatchFit(self.names, x, f, done, steps), h0

    def profile_dnll(self, tested: Mapping[str, float], tests: Sequence[Sequence[str]], *,
                     tol: float = 1e-6) -> tuple[BatchFit, dict[str, np.ndarray], np.ndarray]:
        """(the global fits started at the tested values, {",".join(test): Delta NLL (T,)} with each test's
        parameters held at `tested` (started from the global fits), which toys converged in every fit)."""
        start = np.array([float(tested.get(n, 0.0)) for n in self.names])
        best, h0 = self.fit(start=start, tol=tol)
        ok = best.converged.copy()
        out = {}
        for test in tests:
            prof, _ = self.fit(fixed={n: float(tested[n]) for n in test}, start=best.values, hessians=h0, tol=tol)
            ok &= prof.converged
            out[",".join(test)] = np.maximum(prof.nll - best.nll, 0.0)
        return best, out, ok


def _inverse(h: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inverse of each Hessian's free block, embedded with zeros; the errors sqrt(diag)), shifted to positive
    definite where it is not."""
    idx = np.flatnonzero(free)
    hf = h[:, idx][:, :, idx]
    eig = np.linalg.eigvalsh(hf)
    bad = eig[:, 0] <= 1e-12 * np.abs(eig[:, -1])
    if bad.any():
        delta = np.abs(eig[:, 0]) + 1e-3 * np.abs(eig[:, -1])
        hf = hf + np.where(bad, delta, 0.0)[:, None, None] * np.eye(idx.size)[None]
    inv_f = np.linalg.inv(hf)
    inv = np.zeros_like(h)
    inv[:, idx[:, None], idx[None, :]] = inv_f
    sigma = np.ones(h.shape[:2])
    sigma[:, idx] = np.sqrt(np.diagonal(inv_f, axis1=1, axis2=2))
    return inv, sigma


_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}


def _functions(powers: tuple[tuple[int, ...], ...], n_pois: int, scheme: str) -> dict[str, Any]:
    """The vmapped NLL pieces for one model structure (compiled once per structure and shapes)."""
    key = (powers, n_pois, scheme)
    if key in _CACHE:
        return _CACHE[key]
    basis = basis_functions(scheme)

    def parts(p: Any, matrix: Any) -> tuple[Any, Any]:
        up, down = basis(p[n_pois:])
        return _alpha(p[:n_pois], matrix, powers), jnp.stack([up, down], axis=1).reshape(-1)

    def norm(p: Any, lumi: Any, e: Any, c: Any, m: Any, matrix: Any) -> Any:
        a, f = parts(p, matrix)
        return lumi * jnp.sum(m * (e @ a) * jnp.exp(c @ f))

    def data(p: Any, et: Any, wt: Any, st: Any, sh: Any, aux: Any, lumi: Any, e: Any, c: Any, m: Any,
             matrix: Any) -> Any:
        a, f = parts(p, matrix)
        rate = et @ a
        events = jnp.sum(wt * jnp.log(jnp.where(wt > 0, rate, 1.0)))
        return -events - st @ f - sh + 0.5 * jnp.sum((p[n_pois:] - aux) ** 2)

    def full(p: Any, et: Any, wt: Any, st: Any, sh: Any, aux: Any, lumi: Any, e: Any, c: Any, m: Any,
             matrix: Any) -> Any:
        return norm(p, lumi, e, c, m, matrix) + data(p, et, wt, st, sh, aux, lumi, e, c, m, matrix)

    toy_axes = (0, 0, 0, 0, 0, 0, None, None, None, None, None)
    fns = {
        "vg": jax.jit(jax.vmap(jax.value_and_grad(full), in_axes=toy_axes)),
        "h_data": jax.jit(jax.vmap(jax.hessian(data), in_axes=toy_axes)),
        "h_norm": jax.jit(jax.hessian(norm)),
        "h_norm_all": jax.jit(jax.vmap(jax.hessian(norm), in_axes=(0, None, None, None, None, None))),
    }
    _CACHE[key] = fns
    return fns
