"""The NLL Hessian from Hessian-vector products in row blocks, and what follows from it.

What to use when:
- `block_ranges(n, rows)` splits the n parameters into row blocks (the mapped `sbi-core hessian --rows A:B`
  tasks); `hessian_rows(model, p, start, stop)` computes one block: row r is grad(grad NLL . e_r), all rows of
  the block at once (`vmap` over the unit vectors), so the memory is one block of tangents, not n of them
  as with `jax.hessian`.
- `hessian_by_rows(model, p, rows)` loops over the blocks in one process (the fit's errors use it).
- `summarize(H, names, fixed, n_pois)` -> covariance, correlation, errors and the impact of every nuisance
  parameter on every parameter of interest (what `sbi-core assemble` writes).

Impacts are covariance-based (the linearised version of the ATLAS/pyhf "fix the nuisance at its post-fit
+-1 sigma and refit" ranking): with C the covariance of the free parameters,
    postfit impact of nuisance k on POI p = C[p, k] / sqrt(C[k, k])   (POI shift for nu_k -> nu_k_hat +- sigma_k)
    prefit impact                         = C[p, k] / C[k, k]          (for nu_k -> nu_k_hat +- 1, the prior width)
both signed (+ for the up shift; the down shift is the negative). Exact where the NLL is quadratic around the
best fit; the refit version differs where it is not. Fixed parameters have no row in C and no impact.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from sbi_core.errors import InputError

__all__ = ["RowHessian", "block_ranges", "hessian_by_rows", "hessian_rows", "parse_rows", "summarize"]


class RowHessian(Protocol):
    """What the row-block functions need: `n_params` and `hvp_rows(p, V)` -> H(p) V^T (m, n)."""

    n_params: int

    def hvp_rows(self, p: Any, vectors: Any) -> np.ndarray: ...


def block_ranges(n: int, rows: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering 0..n in blocks of `rows`."""
    if rows < 1:
        raise ValueError(f"rows: expected >= 1, got {rows}")
    return [(a, min(n, a + rows)) for a in range(0, n, rows)]


def parse_rows(text: str, n: int) -> tuple[int, int]:
    """'A:B' -> (A, B) with 0 <= A < B <= n; InputError naming the argument otherwise."""
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"--rows: expected A:B (two integers), got {text!r}") from None
    if not 0 <= a < b <= n:
        raise InputError(f"--rows {text}: expected 0 <= A < B <= {n} (the number of parameters)")
    return a, b


def hessian_rows(model: RowHessian, p: Any, start: int, stop: int, pad_to: int | None = None) -> np.ndarray:
    """Rows [start, stop) of the Hessian at p: (stop - start, n_params), one vmapped HVP per row. pad_to: run
    a block of that many vectors (zeros after the unit vectors), so every block, the last one included,
    has the same shape and one compilation serves them all."""
    n = model.n_params
    if not 0 <= start < stop <= n:
        raise ValueError(f"rows {start}:{stop}: expected 0 <= start < stop <= {n}")
    vectors = np.eye(n)[start:stop]
    if pad_to is not None and pad_to > stop - start:
        vectors = np.vstack([vectors, np.zeros((pad_to - (stop - start), n))])
    return np.asarray(model.hvp_rows(p, vectors), dtype=np.float64)[: stop - start]


def hessian_by_rows(model: RowHessian, p: Any, rows: int = 16) -> np.ndarray:
    """The full (n, n) Hessian, block by block (peak memory: one block)."""
    rows = min(rows, model.n_params)
    return np.concatenate([hessian_rows(model, p, a, b, pad_to=rows)
                           for a, b in block_ranges(model.n_params, rows)])


def symmetry_error(h: np.ndarray) -> float:
    """max |H - H^T| / max |H| (0 for an exactly symmetric matrix)."""
    scale = float(np.abs(h).max()) or 1.0
    return float(np.abs(h - h.T).max()) / scale


def summarize(h: np.ndarray, names: list[str], fixed: list[str], n_pois: int,
              max_asymmetry: float = 1e-6) -> dict[str, Any]:
    """Covariance (inverse Hessian over the free parameters), correlation, errors and impacts (module doc).

    InputError when H is not symmetric to `max_asymmetry` (relative) or not positive definite on the free
    parameters: both mean the blocks do not belong together or the fit is not at a minimum."""
    n = len(names)
    if h.shape != (n, n) or not np.all(np.isfinite(h)):
        raise InputError(f"Hessian: expected a finite ({n}, {n}) matrix, got shape {h.shape}")
    asym = symmetry_error(h)
    if asym > max_asymmetry:
        raise InputError(f"Hessian is not symmetric: max |H - H^T| / max |H| = {asym:.3g} > {max_asymmetry:g} "
                         "(blocks computed at different best fits?)")
    hs = 0.5 * (h + h.T)
    free = [i for i, name in enumerate(names) if name not in fixed]
    sub = hs[np.ix_(free, free)]
    eig = np.linalg.eigvalsh(sub) if free else np.zeros(0)
    if free and eig.min() <= 0:
        bad = [names[free[i]] for i in np.flatnonzero(np.diag(sub) <= 0)]
        raise InputError(f"Hessian is not positive definite on the free parameters (smallest eigenvalue "
                         f"{eig.min():.3g}{'; non-positive diagonal for ' + str(bad) if bad else ''}): "
                         "the fit is not at a minimum")
    cov = np.zeros((n, n))
    cov[np.ix_(free, free)] = np.linalg.inv(sub)
    cov = 0.5 * (cov + cov.T)
    err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(np.outer(err, err) > 0, cov / np.outer(err, err), 0.0)
    np.fill_diagonal(corr, [1.0 if i in free else 0.0 for i in range(n)])
    impacts: dict[str, dict[str, dict[str, float]]] = {}
    for pi in range(n_pois):
        if pi not in free:
            continue
        impacts[names[pi]] = {
            names[k]: {"postfit": float(cov[pi, k] / err[k]), "prefit": float(cov[pi, k] / cov[k, k])}
            for k in range(n_pois, n) if k in free
        }
    return {
        "names": names,
        "fixed": [name for name in names if name in fixed],
        "hessian": hs,
        "covariance": cov,
        "correlation": corr,
        "errors": {name: float(e) for name, e in zip(names, err, strict=True)},
        "impacts": impacts,
        "asymmetry": asym,
        "min_eigenvalue": float(eig.min()) if free else None,
        "condition_number": float(eig.max() / eig.min()) if free else None,
    }
