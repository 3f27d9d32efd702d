"""Random search: independent uniform (log-uniform where asked) draws, the baseline of every search.

Point number i of the study (counting every trial, failed ones included) is drawn from its own stream
SeedSequence(seed, RANDOM_TAG, i), so a point does not depend on how many were asked per round, and a
rebuilt searcher asks what the first one asked.
"""

from __future__ import annotations

from sbi_core.search.base import SearcherBase, point_rng
from sbi_core.search.space import Choice

__all__ = ["RandomSearcher"]

#: Stream tag of the random searcher's draws.
RANDOM_TAG = 1


class RandomSearcher(SearcherBase):
    """Uniform draws over the space, one seeded stream per trial index."""

    name = "random"

    def _ask(self, n: int) -> list[dict[str, Choice]]:
        start = len(self.trials)
        return [self.space.sample(point_rng(self.options.seed, RANDOM_TAG, start + i)) for i in range(n)]
