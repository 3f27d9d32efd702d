"""The search space and the search options of a study: typed dimensions, validated at the boundary.

What to use when:
- `SearchOptions` is the `search:` section a study config carries: which searcher (`bayes` or `random`),
  the dimensions by name, the initial design size, the acquisition function and the seed.
  `parse_search(data, prefix)` validates a dict and raises `ConfigError` (exit 2) naming the field, e.g.
  `search.space.learning_rate.low: a log-uniform dimension needs low > 0`.
- `RealDimension` (uniform or log-uniform), `IntegerDimension` (uniform or log-uniform over integers) and
  `CategoricalDimension` (a list of choices of one type) are the dimension kinds (key `type`).
- `SearchSpace.sample(rng)` draws one point uniformly (in log space where `log: true`), with numpy only:
  the random searcher and the searchers' fallbacks use it, so it does not depend on scikit-optimize.
- `SearchSpace.check_point(point)` refuses a point outside the space (a hand-edited history, a foreign one).

A point is a plain dict {name: value} of JSON types (float, int, str), in the space's dimension order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from sbi_core.config_base import ConfigSection, parse_section
from sbi_core.errors import ConfigError, InputError

__all__ = [
    "CategoricalDimension",
    "Dimension",
    "IntegerDimension",
    "RealDimension",
    "SearchOptions",
    "SearchSpace",
    "parse_search",
]

Choice = str | int | float
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


class RealDimension(ConfigSection):
    """A real interval [low, high], uniform or (log: true) log-uniform, for learning rates and scales."""

    type: Literal["real"] = Field(title="Type", description="real: a continuous interval.")
    low: float = Field(title="Low", description="Lowest value (inclusive).")
    high: float = Field(title="High", description="Highest value (inclusive).")
    log: bool = Field(default=False, title="Log-uniform", description="Search uniformly in log(value): needs low > 0.")

    @model_validator(mode="after")
    def _bounds(self) -> RealDimension:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and not self.low > 0:
            raise ValueError(f"a log-uniform dimension needs low > 0, got low {self.low}")
        return self

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and self.low <= value <= self.high


class IntegerDimension(ConfigSection):
    """Integers low..high, uniform or (log: true) log-uniform, for layer counts, widths, batch sizes, epochs."""

    type: Literal["integer"] = Field(title="Type", description="integer: whole numbers low..high.")
    low: int = Field(title="Low", description="Lowest value (inclusive).")
    high: int = Field(title="High", description="Highest value (inclusive).")
    log: bool = Field(default=False, title="Log-uniform", description="Search uniformly in log(value): needs low >= 1.")

    @model_validator(mode="after")
    def _bounds(self) -> IntegerDimension:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high}); a fixed value belongs in the base config")
        if self.log and self.low < 1:
            raise ValueError(f"a log-uniform dimension needs low >= 1, got low {self.low}")
        return self

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:  # uniform in log over [low - 1/2, high + 1/2), then rounded: every integer can come out
            lo, hi = math.log(self.low - 0.5 if self.low > 1 else 0.5), math.log(self.high + 0.5)
            value = round(math.exp(rng.uniform(lo, hi)))
            return int(min(self.high, max(self.low, value)))
        return int(rng.integers(self.low, self.high + 1))

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high


class CategoricalDimension(ConfigSection):
    """One of a list of choices (all text or all numbers), for activations or network shapes."""

    type: Literal["categorical"] = Field(title="Type", description="categorical: one of the listed choices.")
    choices: list[Choice] = Field(min_length=2, title="Choices", description="At least two distinct choices.")

    @field_validator("choices")
    @classmethod
    def _distinct(cls, v: list[Choice]) -> list[Choice]:
        if any(isinstance(c, bool) for c in v):
            raise ValueError("choices must be text or numbers, not booleans")
        kinds = {str if isinstance(c, str) else float for c in v}
        if len(kinds) > 1:
            raise ValueError(f"choices must be all text or all numbers, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"choices listed twice: {sorted({str(c) for c in v if v.count(c) > 1})}")
        return v

    def sample(self, rng: np.random.Generator) -> Choice:
        return self.choices[int(rng.integers(len(self.choices)))]

    def contains(self, value: Any) -> bool:
        return not isinstance(value, bool) and value in self.choices


def _dimension_type(value: Any) -> str | None:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


#: A dimension, chosen by its `type` key (a callable discriminator: the sections' strict scalar check runs
#: before validation, which a field discriminator does not allow).
Dimension = Annotated[
    Annotated[RealDimension, Tag("real")] | Annotated[IntegerDimension, Tag("integer")]
    | Annotated[CategoricalDimension, Tag("categorical")],
    Discriminator(_dimension_type, custom_error_type="dimension_type",
                  custom_error_message="type must be real, integer or categorical"),
]


@dataclass(frozen=True)
class SearchSpace:
    """Named dimensions, searched in the order given (`SearchOptions.space` as an object with methods)."""

    dimensions: dict[str, RealDimension | IntegerDimension | CategoricalDimension]

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise ValueError("SearchSpace: at least one dimension")

    @property
    def names(self) -> list[str]:
        return list(self.dimensions)

    def sample(self, rng: np.random.Generator) -> dict[str, Choice]:
        """One point drawn uniformly (log-uniformly where asked), dimension by dimension in order."""
        return {name: dim.sample(rng) for name, dim in self.dimensions.items()}

    def check_point(self, point: Any, where: str = "point") -> dict[str, Choice]:
        """The point as a dict in dimension order; InputError naming the dimension that is missing or outside."""
        if not isinstance(point, dict):
            raise InputError(f"{where}: expected a mapping of {self.names}, got {type(point).__name__}")
        unknown = sorted(set(point) - set(self.dimensions))
        if unknown:
            raise InputError(f"{where}: unknown dimensions {unknown} (the space has {self.names})")
        out = {}
        for name, dim in self.dimensions.items():
            if name not in point:
                raise InputError(f"{where}: dimension {name!r} is missing")
            value = point[name]
            if isinstance(dim, RealDimension) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not dim.contains(value):
                raise InputError(f"{where}.{name}: {value!r} is outside the dimension {dim.model_dump()}")
            out[name] = value
        return out


class SearchOptions(ConfigSection):
    """How a study searches: the searcher, its space, its initial design and its seed."""

    method: Literal["bayes", "random"] = Field(
        default="bayes", title="Searcher",
        description="bayes: a Gaussian-process Bayesian optimisation (scikit-optimize) rebuilt each round from the "
        "history; random: independent uniform draws (the baseline).",
    )
    space: dict[str, Dimension] = Field(
        min_length=1, title="Search space",
        description="The dimensions searched, by name: {type: real|integer|categorical, low, high, log | choices}.",
    )
    initial_points: int = Field(
        default=8, ge=1, le=10_000, title="Initial points",
        description="bayes: points of the initial Latin-hypercube design before the Gaussian process is used.",
    )
    acquisition: Literal["EI", "PI", "LCB"] = Field(
        default="EI", title="Acquisition",
        description="bayes: expected improvement (EI), probability of improvement (PI) or lower confidence bound (LCB).",
    )
    seed: int = Field(default=0, ge=0, lt=2**31, title="Seed", description="Seeds the design and every ask.")

    @field_validator("space")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if not _NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"dimension names are letters, digits, _ and . (not starting with a digit), got {bad}")
        return v

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace(dict(self.space))


def parse_search(data: Any, prefix: str = "search") -> SearchOptions:
    """Validated `SearchOptions`; ConfigError (exit 2) naming each bad field under `prefix`."""
    options, issues = parse_section(SearchOptions, data, prefix)
    if issues or options is None:
        raise ConfigError(prefix, issues)
    return options
