"""Search over a space of points with an expensive objective: Bayesian optimisation and random search.

What to use when:
- a study's `search:` section -> `parse_search(data)` (`SearchOptions`: searcher, space, initial design, seed;
  bad spaces are a ConfigError naming the field);
- each round -> `make_searcher(options, history_from_json(stored, options.search_space), goal)` then
  `ask(k)`; after the evaluations -> `tell(points, values, reasons)` and store `history()` (plain JSON);
- the answer -> `best()` (or `best_trial(trials, goal)`).
`bayes` (scikit-optimize's Gaussian process, `sbi_core/search/bayes.py`, the only module that imports skopt)
and `random` (numpy, `random_search.py`) share the interface, so a study compares them by changing one field.
"""

from sbi_core.search.base import Goal, Searcher, Trial, best_trial, history_from_json, history_to_json
from sbi_core.search.registry import SEARCHERS, make_searcher
from sbi_core.search.space import (
    CategoricalDimension,
    IntegerDimension,
    RealDimension,
    SearchOptions,
    SearchSpace,
    parse_search,
)

__all__ = [
    "SEARCHERS",
    "CategoricalDimension",
    "Goal",
    "IntegerDimension",
    "RealDimension",
    "SearchOptions",
    "SearchSpace",
    "Searcher",
    "Trial",
    "best_trial",
    "history_from_json",
    "history_to_json",
    "make_searcher",
    "parse_search",
]
