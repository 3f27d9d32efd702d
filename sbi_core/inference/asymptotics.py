"""Asymptotic distributions of profile-likelihood test statistics (Cowan, Cranmer, Gross, Vitells 2011).

Pure formulas, no fits: everything here takes test-statistic values and returns probabilities or thresholds.
`limits.py` computes the test statistics with fits and calls these.

What to use when:
- `wilks_threshold(level, ndim)`: the Delta NLL (NOT 2 Delta NLL) that bounds a Wilks confidence region
  of `ndim` parameters at `level` (0.68 -> 0.4944 for one parameter, 1.1518 for two at 0.68).
- `qtilde_tail_probabilities(q, q_asimov)`: CLs+b, CLb and CLs for an observed q~_mu and the q~_mu of the
  background-only Asimov dataset (pyhf's `test_stat="qtilde"` conventions).
- `expected_cls(q_asimov, n_sigma)`: the expected CLs band at n_sigma (pyhf's order of the test statistic
  is +2 .. -2; `EXPECTED_BANDS` names them by the limit they give: "-2" is the strongest expected limit).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["EXPECTED_BANDS", "expected_cls", "qtilde_tail_probabilities", "wilks_threshold"]

#: Names of the expected bands, from the strongest to the weakest expected limit, and the value of the
#: (standard normal) test statistic under the background-only hypothesis each corresponds to.
EXPECTED_BANDS: dict[str, float] = {"-2": 2.0, "-1": 1.0, "0": 0.0, "+1": -1.0, "+2": -2.0}


def wilks_threshold(level: float, ndim: int = 1) -> float:
    """Delta NLL at which a profile-likelihood region of `ndim` parameters has coverage `level` (Wilks):
    half the chi2(ndim) quantile, because 2 Delta NLL ~ chi2(ndim)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if ndim < 1:
        raise ValueError(f"ndim must be >= 1, got {ndim}")
    return float(stats.chi2.ppf(level, ndim)) / 2.0


def _statistic(q: float, q_asimov: float) -> float:
    """pyhf's asymptotic q~ test statistic: standard normal under the background-only hypothesis.

    sqrt(q) - sqrt(qA) where q <= qA, (q - qA) / (2 sqrt(qA)) beyond (CCGV eq. 65-66)."""
    sq, sqa = math.sqrt(max(q, 0.0)), math.sqrt(max(q_asimov, 0.0))
    if sq <= sqa or sqa == 0.0:
        return sq - sqa
    return (q - q_asimov) / (2.0 * sqa)


def qtilde_tail_probabilities(q: float, q_asimov: float) -> tuple[float, float, float]:
    """(CLs+b, CLb, CLs) for an observed q~_mu and its background-only Asimov value qA.

    CLs+b = 1 - Phi(t + sqrt(qA)), CLb = 1 - Phi(t) with t = `_statistic(q, qA)`; CLs = CLs+b / CLb."""
    if not (math.isfinite(q) and math.isfinite(q_asimov)):
        raise ValueError(f"test statistics must be finite, got q={q}, qA={q_asimov}")
    t = _statistic(q, q_asimov)
    sqa = math.sqrt(max(q_asimov, 0.0))
    clsb = float(stats.norm.sf(t + sqa))
    clb = float(stats.norm.sf(t))
    return clsb, clb, clsb / clb if clb > 0 else 1.0


def expected_cls(q_asimov: float | np.ndarray, n_sigma: float) -> float | np.ndarray:
    """Expected CLs when the background-only test statistic sits n_sigma from its median (t = n_sigma):
    (1 - Phi(n_sigma + sqrt(qA))) / (1 - Phi(n_sigma)). n_sigma = 0 is the median, 2 the -2 sigma band."""
    sqa = np.sqrt(np.maximum(q_asimov, 0.0))
    out = stats.norm.sf(n_sigma + sqa) / stats.norm.sf(n_sigma)
    return float(out) if np.ndim(out) == 0 else out
