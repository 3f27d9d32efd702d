"""Unweighting in bounded memory: draws with replacement, probability proportional to a weight, over a stream.

Pools are weighted event populations (a split of the events at one hypothesis); each pool gets k uniforms u
and returns the events i whose cumulative weight interval [C_{i-1}, C_i) holds u x total: an exact
multinomial draw. Two passes over the same chunks in the same order:

    pass 1  `accumulate(pools, w)`: the pools' totals (and sum of squares, for the effective sample size);
    then    `request(pool, u)`, `start_selection()`;
    pass 2  `select(pools, w, rows)`: the draws that fall in this chunk, as (pool, request positions, rows).

Cumulative sums run strictly in event order, carried from chunk to chunk (numpy's cumulative sum is
sequential), so the chosen events are the same bits whatever the chunk size. Negative weights (a morphing
outside the region where it stays positive) count as zero and are reported.

`split_labels` assigns each event of a file to train / val / test from its row index alone (a counter-based
hash), so the split is disjoint by event and does not depend on chunking either.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniform_hash(rows: np.ndarray, key: int) -> np.ndarray:
    """A uniform in [0, 1) per row index (splitmix64 of key + row), deterministic and independent of chunking."""
    z = np.asarray(rows, dtype=np.uint64) * _GOLDEN + np.uint64(key % 2**64)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def split_labels(rows: np.ndarray, key: int, fractions: tuple[float, ...]) -> np.ndarray:
    """Label 0..len(fractions)-1 per row index, label j with probability fractions[j] (they sum to 1)."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    edges = np.cumsum(f)[:-1]
    return np.searchsorted(edges, uniform_hash(rows, key), side="right").astype(np.int8)


def _sequential_cumsum(carry: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Running sums of w's rows continuing from carry: (m, H), computed strictly in row order."""
    out = np.empty((w.shape[0] + 1, w.shape[1]), order="F")
    out[0] = carry
    out[1:] = w
    np.cumsum(out, axis=0, out=out)
    return out[1:]


class Unweighter:
    """Multinomial draws from `n_pools` weighted pools streamed in two passes (see the module docstring)."""

    def __init__(self, n_pools: int) -> None:
        self.n_pools = n_pools
        self.total = np.zeros(n_pools)
        self.sum_sq = np.zeros(n_pools)
        self.negative = np.zeros(n_pools)  # sum of |w| over negative weights (treated as 0)
        self.count = np.zeros(n_pools, dtype=np.int64)  # events seen with w != 0
        self._u: list[list[np.ndarray]] = [[] for _ in range(n_pools)]
        self._selecting = False

    @staticmethod
    def _check(pools: np.ndarray, w: np.ndarray) -> None:
        if pools.ndim != 1 or w.ndim != 2 or w.shape[1] != pools.shape[0]:
            raise ValueError(f"w: expected (m, {pools.shape[0]}) for {pools.shape[0]} pools, got {w.shape}")

    def accumulate(self, pools: np.ndarray, w: np.ndarray) -> None:
        """Pass 1: add a chunk's weights, w (m, H), column j for pool pools[j]."""
        if self._selecting:
            raise RuntimeError("accumulate after start_selection")
        self._check(pools, w)
        if w.shape[0] == 0:
            return
        self.negative[pools] -= np.minimum(w, 0.0).sum(axis=0)
        w = np.maximum(w, 0.0)
        self.total[pools] = _sequential_cumsum(self.total[pools], w)[-1]
        self.sum_sq[pools] += (w * w).sum(axis=0)
        self.count[pools] += (w > 0).sum(axis=0)

    def effective_events(self) -> np.ndarray:
        """Kish's effective number of events per pool, (sum w)^2 / sum w^2 (0 for an empty pool)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.sum_sq > 0, self.total**2 / self.sum_sq, 0.0)

    def request(self, pool: int, u: np.ndarray) -> int:
        """Ask pool for len(u) draws, u uniform in [0, 1); returns the offset of these draws in the pool's results."""
        if self._selecting:
            raise RuntimeError("request after start_selection")
        offset = sum(len(a) for a in self._u[pool])
        self._u[pool].append(np.asarray(u, dtype=np.float64))
        return offset

    def start_selection(self) -> None:
        """Between the passes: turn the uniforms into sorted cumulative-weight targets."""
        self._order, self._targets, self.events = [], [], []
        for p in range(self.n_pools):
            u = np.concatenate(self._u[p]) if self._u[p] else np.empty(0)
            if u.size and not self.total[p] > 0:
                raise ValueError(f"pool {p} has no positive weight but {u.size} draws were requested")
            targets = u * self.total[p]
            order = np.argsort(targets, kind="stable")
            self._order.append(order)
            self._targets.append(targets[order])
            self.events.append(np.full(u.size, -1, dtype=np.int64))
        self._ptr = np.zeros(self.n_pools, dtype=np.int64)
        self._carry = np.zeros(self.n_pools)
        self._selecting = True

    def select(self, pools: np.ndarray, w: np.ndarray, rows: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Pass 2, the same chunks as pass 1: for each pool with draws here, (pool, request positions, local row
        indices into this chunk's w). `rows` (m,) are the events' global indices (recorded in `events`)."""
        if not self._selecting:
            raise RuntimeError("select before start_selection")
        self._check(pools, w)
        if w.shape[0] == 0:
            return []
        cum = _sequential_cumsum(self._carry[pools], np.maximum(w, 0.0))
        out = []
        for j, p in enumerate(pools.tolist()):
            t = self._targets[p]
            a = int(self._ptr[p])
            b = a + int(np.searchsorted(t[a:], cum[-1, j], side="left"))
            if b > a:
                local = np.searchsorted(cum[:, j], t[a:b], side="right")
                positions = self._order[p][a:b]
                self.events[p][positions] = rows[local]
                out.append((p, positions, local))
            self._ptr[p] = b
            self._carry[p] = cum[-1, j]
        return out

    def finish(self) -> None:
        """After pass 2: every draw must have found its event (the passes saw the same weights)."""
        for p in range(self.n_pools):
            if int(self._ptr[p]) != self._targets[p].size or np.any(self.events[p] < 0):
                raise RuntimeError(f"pool {p}: {self._targets[p].size - int(self._ptr[p])} draws unassigned; "
                                   "the two passes did not see the same weights")
