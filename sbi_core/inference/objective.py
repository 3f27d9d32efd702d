"""The `Objective` protocol: what a fit, a profile scan, a limit or a toy needs from a negative log-likelihood.

What to use when:
- The pipeline's `NLLModel` (`sbi_core.inference.nll`) is an Objective; so is any object of your own with
  `names`, `value(p)` and `grad(p)`, e.g. a closed-form counting experiment. Pass it to
  `sbi_core.inference.fit.minimize` (and to the profile, limit and toy functions built on it).
- `check_objective(obj)` checks one at the boundary (a TypeError naming what is missing), as iminuit
  does for its cost functions.

Conventions (pyhf's and iminuit's for a likelihood):
- `value(p)` is the negative log-likelihood -log L(p) itself, NOT 2 NLL: one unit of error is where it
  rises by 1/2 (`errordef = Minuit.LIKELIHOOD`); a test statistic is 2 (NLL(p) - NLL(p_hat)).
- p is a float64 vector of shape (len(names),), in the order of `names`; `grad(p)` returns dNLL/dp with
  the same shape. Constants may be dropped: only differences of `value` are used.
- Optional: `hessian(p)` -> (n, n) analytic second derivatives, used for the parameter errors when present
  (otherwise Minuit's numerical Hesse); `n_pois` -> how many leading parameters are of interest;
  `tolerance_floor` -> the smallest Migrad tolerance the NLL's rounding allows (`tolerance_floor(dtype)` for
  per-event arrays of a dtype); `domain` -> {name: (low, high)} where the NLL is defined (fits are bounded to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["FLOAT32_TOLERANCE", "Objective", "check_objective", "tolerance_floor"]

#: Migrad's own default tolerance: what an NLL of float32 per-event arrays can meet. Their rounding (~1e-7
#: relative per event) is far above the tight goal (EDM < 1e-10 at tolerance 1e-7): Migrad would search at its
#: call cap (2240 calls at 102 parameters, an hour at 10^7 events) for what the exact-Hessian polish after it
#: gives in one step.
FLOAT32_TOLERANCE = 0.1


def tolerance_floor(dtype: str) -> float:
    """The smallest Migrad tolerance an NLL whose per-event arrays have `dtype` can meet (0: any)."""
    return FLOAT32_TOLERANCE if str(dtype) == "float32" else 0.0


@runtime_checkable
class Objective(Protocol):
    """A negative log-likelihood with its gradient: p (n,) float64 -> float, and -> (n,) float64."""

    @property
    def names(self) -> Sequence[str]:
        """Parameter names, in the order of p."""
        ...

    def value(self, p: np.ndarray) -> float:
        """-log L(p) (up to a constant)."""
        ...

    def grad(self, p: np.ndarray) -> np.ndarray:
        """d(-log L)/dp, shape (n,)."""
        ...


def check_objective(obj: Any) -> list[str]:
    """The objective's parameter names; TypeError naming what is missing when obj is not an Objective."""
    missing = [a for a in ("names", "value", "grad") if not hasattr(obj, a)]
    if missing:
        raise TypeError(f"objective {type(obj).__name__}: missing {missing} (see sbi_core.inference.objective)")
    if not callable(obj.value) or not callable(obj.grad):
        raise TypeError(f"objective {type(obj).__name__}: value and grad must be callables p -> float / (n,) array")
    names = [str(n) for n in obj.names]
    if not names or len(set(names)) != len(names):
        raise TypeError(f"objective {type(obj).__name__}: names must be non-empty and unique, got {names}")
    return names
