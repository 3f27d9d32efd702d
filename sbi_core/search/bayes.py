"""Bayesian optimisation with scikit-optimize: the ONE module that imports skopt.

Why scikit-optimize: `skopt.Optimizer` is the ask/tell interface of a Gaussian-process optimiser with mixed
real / integer / categorical spaces, log-uniform priors, batch asks by the constant liar (several points per
round) and seeded randomness; it is what ATLAS iDDS' HPO service wraps. It is archived upstream (its last
release is 0.10.2, 2024), so everything the rest of the package sees is `sbi_core.search.base.Searcher`: to
replace it, write another `SearcherBase` subclass and register it in `sbi_core.search.registry`.

Compatibility with numpy >= 2 and scikit-learn >= 1.6 (checked with numpy 2.4, scipy 1.17, scikit-learn 1.9):
skopt 0.10.2 no longer uses the removed `np.int`; its gradient-boosted-trees surrogate (`GBRT`) calls
`np.in1d`, removed in numpy 2.4, so only the Gaussian process (`GP`) is used here, and `gp_hedge` is not
offered because its gains live in the optimiser object and would not survive the rebuild. skopt returns
numpy scalars (np.int64, np.str_): every point is converted to plain JSON types.

How a round asks (a pure function of the options, the history and the seed):
1. the initial design: a maximin Latin hypercube of `initial_points` points drawn from the seed alone;
   trial i of the study (failed ones counted) is design point i, and a round that overflows the design gets
   seeded uniform draws for the rest;
2. after the design: the optimiser is built afresh with random_state SeedSequence(seed, BAYES_TAG, trials),
   told every trial at once (one Gaussian-process fit; a failed trial counts at the worst value seen), and
   asked for n points with the constant liar `cl_min`; EI's and PI's margin xi is `XI` standard deviations of
   the values seen (skopt's fixed 0.01 is in the objective's units: most of a validation loss's whole spread);
3. a point repeating a trial is replaced by a seeded uniform draw (small discrete spaces).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from sbi_core.search.base import SearcherBase, point_rng, replace_repeats
from sbi_core.search.space import CategoricalDimension, Choice, IntegerDimension, RealDimension, SearchSpace

__all__ = ["BayesSearcher"]

log = logging.getLogger(__name__)
#: Stream tags: the design, the optimiser of each round, the overflow and repeat replacements.
DESIGN_TAG, BAYES_TAG, OVERFLOW_TAG, REPEAT_TAG = 11, 12, 13, 14
#: Successful trials needed before the Gaussian process is fitted; fewer: seeded uniform draws.
MIN_FIT = 2
#: Iterations of the maximin criterion of the Latin hypercube.
LHS_ITERATIONS = 200
#: EI's and PI's margin of improvement in standard deviations of the values seen (skopt's 0.01, made scale-free).
XI = 0.01


def _skopt_dimensions(space: SearchSpace) -> list[Any]:
    from skopt.space import Categorical, Integer, Real

    dims = []
    for name, d in space.dimensions.items():
        prior = "log-uniform" if getattr(d, "log", False) else "uniform"
        if isinstance(d, RealDimension):
            dims.append(Real(d.low, d.high, prior=prior, name=name))
        elif isinstance(d, IntegerDimension):
            dims.append(Integer(d.low, d.high, prior=prior, name=name))
        elif isinstance(d, CategoricalDimension):
            dims.append(Categorical(list(d.choices), name=name))
        else:  # pragma: no cover - the Dimension union is closed
            raise TypeError(f"unknown dimension {d!r}")
    return dims


def _plain(value: Any, dim: Any) -> Choice:
    """A skopt value as the JSON type of its dimension (np.int64 -> int, np.str_ -> str, np.float64 -> float)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(dim, RealDimension):
        return float(min(dim.high, max(dim.low, float(value))))
    if isinstance(dim, IntegerDimension):
        return int(min(dim.high, max(dim.low, round(value))))
    return next(c for c in dim.choices if c == value)


def _as_point(values: list[Any], space: SearchSpace) -> dict[str, Choice]:
    return {name: _plain(v, dim) for (name, dim), v in zip(space.dimensions.items(), values, strict=True)}


def _seed32(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint32)[0] & 0x7FFFFFFF)


class BayesSearcher(SearcherBase):
    """Gaussian-process Bayesian optimisation (skopt), rebuilt from the history at every ask."""

    name = "bayes"

    def design(self) -> list[dict[str, Choice]]:
        """The initial Latin-hypercube design (from the seed alone)."""
        from skopt.sampler import Lhs

        dims = _skopt_dimensions(self.space)
        raw = Lhs(criterion="maximin", iterations=LHS_ITERATIONS).generate(
            dims, self.options.initial_points, random_state=_seed32(self.options.seed, DESIGN_TAG))
        return [_as_point(list(p), self.space) for p in raw]

    def _ask(self, n: int) -> list[dict[str, Choice]]:
        h, n_init, seed = len(self.trials), self.options.initial_points, self.options.seed
        if h < n_init:
            design = self.design()[h:h + n]
            extra = [self.space.sample(point_rng(seed, OVERFLOW_TAG, h + len(design) + i))
                     for i in range(n - len(design))]
            return design + extra
        ok = [t for t in self.trials if t.ok]
        if len(ok) < MIN_FIT:
            log.warning("bayes: %d successful trials of %d: too few to fit, asking seeded uniform draws", len(ok), h)
            return [self.space.sample(point_rng(seed, OVERFLOW_TAG, h + i)) for i in range(n)]
        return replace_repeats(self._model_ask(n), self.trials, self.space, seed, REPEAT_TAG)

    def _model_ask(self, n: int) -> list[dict[str, Choice]]:
        from skopt import Optimizer

        sign = 1.0 if self.goal == "minimize" else -1.0
        values = [sign * float(t.value) for t in self.trials if t.ok]  # type: ignore[arg-type]
        worst = max(values)
        names = self.space.names
        xs = [[t.point[k] for k in names] for t in self.trials]
        ys = [sign * float(t.value) if t.ok else worst for t in self.trials]  # type: ignore[arg-type]
        # EI's and PI's margin xi is in the objective's units: scaled to the spread of the values seen, so the
        # search behaves alike on a validation loss (spread ~0.01) and on a significance (spread ~1)
        xi = XI * (float(np.std(values)) or 1.0)
        opt = Optimizer(_skopt_dimensions(self.space), base_estimator="GP", n_initial_points=0,
                        acq_func=self.options.acquisition, acq_optimizer="auto", acq_func_kwargs={"xi": xi},
                        random_state=_seed32(self.options.seed, BAYES_TAG, len(self.trials)))
        with warnings.catch_warnings():  # "evaluated at this point before": repeats are replaced below
            warnings.simplefilter("ignore", UserWarning)
            opt.tell(xs, ys)
            asked = opt.ask(n_points=n, strategy="cl_min")
        return [_as_point(list(p), self.space) for p in asked]
