"""A nuisance's up and down log ratios folded into one column where one is a fixed multiple of the other.

A normalisation pass reads, per event and nuisance k, the log ratios (u_k, d_k) of its up and down
variations and forms u_k f_up(nu_k) + d_k f_down(nu_k). When d_k = c_k u_k on every event (symmetrised
variations: c_k = -1; one-sided ones: c_k = 0; a fixed asymmetry), that is u_k (f_up + c_k f_down): one
column instead of two, so a pass reads about half the bytes for the same sum. `PairScan` finds such pairs
while the events stream past, each event checked to a few units of rounding of the model's dtype (so the
folded sum equals the unfolded one to the rounding the model has anyway); `fold` gives the columns to keep
and Q with V = V[:, columns] @ Q: a pass uses the folded basis Q F (F (2K,) indexed 2k + j, j = up, down).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PairScan"]


class PairScan:
    """Per nuisance: is d = c u on every event seen (see the module doc)? Feed chunks of (n, 2K) columns."""

    def __init__(self, n_pairs: int, rtol: float) -> None:
        """rtol: how far |d - c u| may be from 0, relative to |d| + |c u| (a few units of rounding)."""
        self.ratio = np.full(n_pairs, np.nan)  # c_k, once an event with u != 0 was seen
        self.ok = np.ones(n_pairs, dtype=bool)
        self.d_alone = np.zeros(n_pairs, dtype=bool)  # some d != 0 before any u != 0
        self.rtol = float(rtol)

    def add(self, v: np.ndarray) -> None:
        """v (n, 2K): one chunk's log ratios, column 2k + j (j = 0 up, 1 down)."""
        u, d = v[:, 0::2], v[:, 1::2]
        nonzero = u != 0
        new = np.isnan(self.ratio) & nonzero.any(axis=0)
        if new.any():  # c_k from the first event of this chunk with u != 0
            first = nonzero.argmax(axis=0)[new]
            cols = np.flatnonzero(new)
            self.ratio[cols] = d[first, cols] / u[first, cols]
        known = ~np.isnan(self.ratio)
        self.d_alone |= ~known & (d != 0).any(axis=0)
        check = known & self.ok
        if check.any():  # every event, those with u == 0 too (they need d == 0)
            c = self.ratio[check]
            cu = u[:, check] * c
            dc = d[:, check]
            self.ok[check] = np.all(np.abs(dc - cu) <= self.rtol * (np.abs(dc) + np.abs(cu)), axis=0)

    def fold(self) -> tuple[np.ndarray, np.ndarray]:
        """(columns to keep, Q (len(columns), 2K)): V[:, columns] @ Q reproduces V to rounding."""
        n = self.ratio.size
        columns: list[int] = []
        rows: list[np.ndarray] = []
        for k in range(n):
            if np.isnan(self.ratio[k]):  # u == 0 everywhere: d alone, or nothing at all
                pairs = [(2 * k + 1, {2 * k + 1: 1.0})] if self.d_alone[k] else []
            elif self.ok[k] and not self.d_alone[k]:
                pairs = [(2 * k, {2 * k: 1.0, 2 * k + 1: float(self.ratio[k])})]
            else:
                pairs = [(2 * k, {2 * k: 1.0}), (2 * k + 1, {2 * k + 1: 1.0})]
            for col, coef in pairs:
                row = np.zeros(2 * n)
                row[list(coef)] = list(coef.values())
                columns.append(col)
                rows.append(row)
        q = np.array(rows).reshape(len(rows), 2 * n)
        return np.array(columns, dtype=np.int64), q
