"""The searchers by name (`search.method`): the registry every study uses, instead of string dispatch."""

from __future__ import annotations

from collections.abc import Sequence

from sbi_core.search.base import Goal, SearcherBase, Trial
from sbi_core.search.bayes import BayesSearcher
from sbi_core.search.random_search import RandomSearcher
from sbi_core.search.space import SearchOptions

__all__ = ["SEARCHERS", "make_searcher"]

SEARCHERS: dict[str, type[SearcherBase]] = {"bayes": BayesSearcher, "random": RandomSearcher}


def make_searcher(options: SearchOptions, trials: Sequence[Trial] = (), goal: Goal = "minimize") -> SearcherBase:
    """The searcher `options.method` names, rebuilt from the trials so far."""
    return SEARCHERS[options.method](options, trials, goal)
