"""Where a CLs curve measured with toys crosses 1 - CL, and where to spend the next toys: pure functions.

Each tested value mu has toy counts of both hypotheses (`ScanPoint`): k_sb of n_sb signal+background toys
and k_b of n_b background-only toys have q~_mu at or above the observed value, so CLs+b ~ k_sb / n_sb,
CLb ~ k_b / n_b, CLs = CLs+b / CLb (`calculators.cls_from_counts`).
- The *bracket* is the first tested value (from below) where the toys' CLs curve, made non-increasing
  (`decreasing_fit`: an upward fluctuation is pooled with its neighbours), is at or under alpha = 1 - CL, and
  the one before it. The *window* is the run of neighbouring points around it whose significance
  y = Phi^-1(1 - CLs) lies within `WINDOW` of y* = Phi^-1(1 - alpha): first by the toys' own CLs, then by the
  curve fitted to that window (choosing by the noisy values alone biased the limit by a third of its error).
- Over the window, each hypothesis' counts are fitted by maximum likelihood (binomial) with a probit line,
  CLs+b(mu) = 1 - Phi(a_sb + b_sb mu) and CLb(mu) = 1 - Phi(a_b + b_b mu): asymptotically sqrt(q~_mu) grows
  linearly with mu, so both are close to such lines near the crossing. The limit is where their ratio equals
  alpha; its error comes from the fits' covariance (the Fisher information of the fitted model, not of the
  noisy counts, so a point that fluctuated low does not get a spuriously small error), propagated through the
  crossing (implicit function), and is scaled up by sqrt(deviance / ndf) when the lines do not describe the
  points. The same toys give the same limit: nothing here is random.
`refine` then asks for new values around the limit (inside the bracket's neighbourhood, no closer than a quarter
of the tolerance to a tested one) and for more toys (doubling, up to a cap) where a point's error straddles alpha;
points outside the window (clearly excluded or clearly allowed) get no more toys; when no value straddles
and no new one fits, the bracket's two ends get more toys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import special

from sbi_core.inference.calculators import cls_from_counts

__all__ = ["MIN_FIT_POINTS", "WINDOW", "LimitEstimate", "Refinement", "ScanPoint", "decreasing_fit", "finite",
           "locate_limit", "refine"]

def finite(x: float) -> float | None:
    """x, or None when it is not finite (JSON has no NaN or infinity)."""
    return float(x) if x is not None and math.isfinite(x) else None


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


_SQRT2PI = math.sqrt(2.0 * math.pi)


def _isf(p: float) -> float:
    """Phi^-1(1 - p): the standard normal's inverse survival function (scipy.special: imports fast)."""
    return float(-special.ndtri(p))


def _pdf(y: float) -> float:
    return math.exp(-0.5 * y * y) / _SQRT2PI


#: A limit counts as located to its error only when the fit has at least this many values (so a line that does
#: not describe the toys shows in the deviance and widens the error).
MIN_FIT_POINTS = 3
#: Half-width of the fit window in y = Phi^-1(1 - CLs): for alpha = 0.05, CLs within [0.004, 0.26].
WINDOW = 1.0


@dataclass(frozen=True)
class ScanPoint:
    """One tested value: its toy counts (k of n at or above the observed q~, per hypothesis), or its failure."""

    index: int
    mu: float
    n_sb: int = 0
    k_sb: int = 0
    n_b: int = 0
    k_b: int = 0
    q_obs: float = math.nan
    failed: str = ""
    allocated: int = 0  # toys of each hypothesis planned so far (the next batch starts at this index)

    @property
    def usable(self) -> bool:
        return not self.failed and self.n_sb > 0 and self.n_b > 0

    @property
    def cls(self) -> tuple[float, float]:
        """(CLs, its MC error)."""
        r = cls_from_counts(self.k_sb, self.n_sb, self.k_b, self.n_b)
        return r.cls, r.cls_error

    def significance(self) -> tuple[float, float]:
        """(y = Phi^-1(1 - CLs), its error); CLs is kept half a toy away from 0 and 1."""
        c, e = self.cls
        n = min(self.n_sb, self.n_b)
        c = min(max(c, 0.5 / (n + 1)), 1.0 - 0.5 / (n + 1))
        y = _isf(c)
        return y, e / _pdf(y)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ScanPoint:
        return cls(int(d["index"]), float(d["mu"]), int(d.get("n_sb", 0)), int(d.get("k_sb", 0)),
                   int(d.get("n_b", 0)), int(d.get("k_b", 0)), _num(d.get("q_obs")),
                   str(d.get("failed", "")), int(d.get("allocated", 0)))

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "mu": self.mu, "n_sb": self.n_sb, "k_sb": self.k_sb, "n_b": self.n_b,
                "k_b": self.k_b, "q_obs": finite(self.q_obs), "failed": self.failed, "allocated": self.allocated}


@dataclass(frozen=True)
class LimitEstimate:
    """The crossing of CLs with alpha: `located` (value +- error, between the tested values lo and hi), `above` (CLs > alpha at
    every tested value: the limit lies above `lo`), `below` (CLs <= alpha already at the lowest, `hi`), or
    `none` (no usable point)."""

    status: Literal["located", "above", "below", "none"]
    value: float = math.nan
    error: float = math.inf
    lo: float = math.nan
    hi: float = math.nan
    window: list[int] = field(default_factory=list)
    method: str = ""

    @property
    def fitted(self) -> bool:
        """Located by a fit of at least MIN_FIT_POINTS values (its error then includes the fit's quality)."""
        return self.status == "located" and self.method.startswith("probit") and len(self.window) >= MIN_FIT_POINTS

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "value": finite(self.value), "error": finite(self.error), "lo": finite(self.lo),
                "hi": finite(self.hi), "window": self.window, "method": self.method}


def _probit_fit(x: np.ndarray, k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood (a, b) of P(x) = 1 - Phi(a + b x) for k successes of n at each x (Fisher scoring),
    and its covariance (inverse Fisher information at the fit, scaled by deviance / ndf when above 1)."""
    emp = np.clip((k + 0.5) / (n + 1.0), 1e-9, 1 - 1e-9)
    X = np.stack([np.ones_like(x), x], axis=1)
    theta = np.linalg.lstsq(X, -special.ndtri(emp), rcond=None)[0]
    if x.size == 1 or not np.all(np.isfinite(theta)):
        theta = np.array([_isf(float(emp.mean())), 0.0])
    info = np.eye(2)
    for _ in range(100):
        eta = X @ theta
        p = np.clip(special.ndtr(-eta), 1e-12, 1 - 1e-12)
        dp = -np.exp(-0.5 * eta**2) / _SQRT2PI
        w = n * dp**2 / (p * (1 - p))
        info = X.T @ (X * w[:, None]) + 1e-9 * np.eye(2)
        score = X.T @ ((k - n * p) / (p * (1 - p)) * dp)
        step = np.linalg.solve(info, score)
        theta = theta + np.clip(step, -5.0, 5.0)
        if np.max(np.abs(step)) < 1e-10:
            break
    cov = np.linalg.inv(info)
    if x.size > 2:
        p = np.clip(special.ndtr(-(X @ theta)), 1e-12, 1 - 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = 2 * np.sum(np.where(k > 0, k * np.log(k / (n * p)), 0.0)
                             + np.where(n - k > 0, (n - k) * np.log((n - k) / (n * (1 - p))), 0.0))
        cov = cov * max(1.0, float(dev) / (x.size - 2))
    return theta, cov


def _log_cls(x: float, sb: np.ndarray, b: np.ndarray) -> float:
    return float(special.log_ndtr(-(sb[0] + sb[1] * x)) - special.log_ndtr(-(b[0] + b[1] * x)))


def _hazard(eta: float) -> float:
    """phi(eta) / (1 - Phi(eta)), computed in logs (stable far in the tail)."""
    return float(np.exp(-0.5 * eta**2 - math.log(_SQRT2PI) - special.log_ndtr(-eta)))


def _root(f: Any, lo: float, hi: float) -> float:
    """x in [lo, hi] with f(x) = 0, given f(lo) > 0 >= f(hi) (bisection to 1e-12 of the interval)."""
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class _CurveFit:
    """The two probit lines fitted to a window's toys (x relative to `ref`) and their covariances."""

    ref: float
    sb: np.ndarray
    c_sb: np.ndarray
    b: np.ndarray
    c_b: np.ndarray

    def log_cls(self, mu: float) -> float:
        return _log_cls(mu - self.ref, self.sb, self.b)

    def y(self, mu: float) -> float:
        """The fitted significance Phi^-1(1 - CLs) at mu."""
        return _isf(min(max(math.exp(self.log_cls(mu)), 1e-300), 1.0 - 1e-16))


def _fit_curve(pts: Sequence[ScanPoint]) -> _CurveFit:
    ref = float(np.mean([p.mu for p in pts]))
    x = np.array([p.mu for p in pts]) - ref
    sb, c_sb = _probit_fit(x, np.array([p.k_sb for p in pts], float), np.array([p.n_sb for p in pts], float))
    b, c_b = _probit_fit(x, np.array([p.k_b for p in pts], float), np.array([p.n_b for p in pts], float))
    return _CurveFit(ref, sb, c_sb, b, c_b)


def _crossing(fit: _CurveFit, alpha: float, lo: float, hi: float) -> tuple[float, float] | None:
    """(mu where the fitted CLs equals alpha inside [lo, hi], its error), or None when it does not cross there."""
    target = math.log(alpha)
    if not (fit.log_cls(lo) - target > 0 >= fit.log_cls(hi) - target):
        return None
    sb, b = fit.sb, fit.b
    t = _root(lambda v: _log_cls(v, sb, b) - target, lo - fit.ref, hi - fit.ref)
    h_sb, h_b = _hazard(sb[0] + sb[1] * t), _hazard(b[0] + b[1] * t)
    dx = -h_sb * sb[1] + h_b * b[1]  # d log CLs / d mu
    g_sb, g_b = np.array([-h_sb, -h_sb * t]), np.array([h_b, h_b * t])
    var = (g_sb @ fit.c_sb @ g_sb + g_b @ fit.c_b @ g_b) / dx**2
    return fit.ref + t, float(math.sqrt(max(var, 0.0)))


def _run_around(ys: Sequence[float], first: int, target: float) -> tuple[int, int]:
    """The run of indices around the bracket (first - 1, first) whose y lies within WINDOW of target."""
    lo_k, hi_k = first - 1, first
    while lo_k > 0 and abs(ys[lo_k - 1] - target) <= WINDOW:
        lo_k -= 1
    while hi_k < len(ys) - 1 and abs(ys[hi_k + 1] - target) <= WINDOW:
        hi_k += 1
    return lo_k, hi_k


def decreasing_fit(values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """The weighted least-squares non-increasing sequence closest to `values` (pool adjacent violators): CLs
    falls with mu, so this is the toys' CLs curve without its upward fluctuations."""
    blocks: list[list[float]] = []  # [weighted mean, weight, count]
    for v, w in zip(values, weights, strict=True):
        blocks.append([float(v), max(float(w), 1e-12), 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m2, w2, c2), (m1, w1, c1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return [m for m, _, c in blocks for _ in range(int(c))]


def locate_limit(points: Sequence[ScanPoint], alpha: float) -> LimitEstimate:
    """The limit where CLs = alpha, from the usable points (see the module doc)."""
    pts = sorted((p for p in points if p.usable), key=lambda p: p.mu)
    if not pts:
        return LimitEstimate("none", method="no usable point")
    smooth = decreasing_fit([p.cls[0] for p in pts], [min(p.n_sb, p.n_b) for p in pts])
    first = next((k for k, c in enumerate(smooth) if c <= alpha), None)
    if first is None:
        return LimitEstimate("above", lo=pts[-1].mu, method="CLs above alpha at every tested value")
    if first == 0:
        return LimitEstimate("below", hi=pts[0].mu, method="CLs at or below alpha at the lowest tested value")
    target = _isf(alpha)
    # The window is chosen twice: from the toys' own CLs, then from the curve fitted to that first window (a
    # window chosen by the noisy values alone biases the limit: a fluctuation decides what is fitted).
    lo_k, hi_k = _run_around([p.significance()[0] for p in pts], first, target)
    if hi_k > lo_k:
        first_fit = _fit_curve(pts[lo_k : hi_k + 1])
        lo_k, hi_k = _run_around([first_fit.y(p.mu) for p in pts], first, target)
    window = pts[lo_k : hi_k + 1]
    a, b = pts[first - 1], pts[first]
    # the crossing may lie between the window's end and the next tested value (which bounds it)
    span = (pts[max(lo_k - 1, 0)].mu, pts[min(hi_k + 1, len(pts) - 1)].mu)
    found = _crossing(_fit_curve(window), alpha, *span) if len(window) >= 2 else None
    if found is None:  # the fitted curve does not cross inside the window: only the bracket is known
        return LimitEstimate("located", (a.mu + b.mu) / 2, (b.mu - a.mu) / 2, a.mu, b.mu, [p.index for p in window],
                             "the bracket's middle (the fit does not cross near the window)")
    # the bracket around the fitted limit: the tested values next to it (the fit may move it past a fluctuation)
    below = [p.mu for p in pts if p.mu <= found[0]]
    above = [p.mu for p in pts if p.mu >= found[0]]
    lo, hi = (below[-1] if below else a.mu), (above[0] if above else b.mu)
    return LimitEstimate("located", found[0], found[1], lo, hi, [p.index for p in window],
                         f"probit fit of the toys at {len(window)} values")


@dataclass(frozen=True)
class Refinement:
    """The next round's work: new values to test (with their point indices) and more toys at tested points."""

    new: list[tuple[int, float]] = field(default_factory=list)
    more: list[tuple[int, int]] = field(default_factory=list)  # (point index, additional toys per hypothesis)
    why: str = ""

    @property
    def empty(self) -> bool:
        return not self.new and not self.more

    def to_json(self) -> dict[str, Any]:
        return {"new": [list(x) for x in self.new], "more": [list(x) for x in self.more], "why": self.why}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Refinement:
        return cls([(int(i), float(m)) for i, m in d.get("new", [])], [(int(i), int(n)) for i, n in d.get("more", [])],
                   str(d.get("why", "")))


def _spread(lo: float, hi: float, n: int) -> list[float]:
    return [lo + (hi - lo) * (k + 1) / (n + 1) for k in range(n)]


def refine(points: Sequence[ScanPoint], est: LimitEstimate, *, alpha: float, null: float, upper: float,
           tolerance: float, new_points: int, max_toys: int, straddle: float = 2.0) -> Refinement:
    """New values and more toys for the next round (see the module doc); empty when nothing more can help."""
    tested = sorted(p.mu for p in points)
    nxt = max((p.index for p in points), default=-1) + 1
    gap = tolerance / 4.0

    def fresh(mus: Sequence[float]) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        for mu in mus:
            if all(abs(mu - t) >= gap for t in [*tested, *(m for _, m in out)]):
                out.append((nxt + len(out), float(mu)))
        return out

    if est.status == "above":
        if est.lo >= upper - gap:
            return Refinement(why=f"CLs stays above {alpha:g} up to the upper end {upper:g}")
        return Refinement(fresh(_spread(est.lo, upper, new_points - 1) + [upper]), why="extend above the grid")
    if est.status == "below":
        return Refinement(fresh(_spread(null, est.hi, new_points)), why="extend below the grid")
    if est.status == "none":
        return Refinement(why="no usable point")
    half = max(2.0 * est.error, tolerance)
    lo, hi = max(est.lo, est.value - half), min(est.hi, est.value + half)
    new = fresh(sorted(_spread(lo, hi, new_points), key=lambda m: abs(m - est.value)))
    near = sorted((p for p in points if p.index in est.window and p.usable), key=lambda p: abs(p.mu - est.value))
    more = [(p.index, min(p.allocated, max_toys - p.allocated)) for p in near
            if abs(p.cls[0] - alpha) < straddle * p.cls[1] and p.allocated < max_toys]
    why = f"{len(new)} new values in [{lo:.4g}, {hi:.4g}], more toys at {len(more)} straddling value(s)"
    if not new and not more:  # nothing straddles and no room for new values: the bracket's ends weigh most
        more = [(p.index, min(p.allocated, max_toys - p.allocated)) for p in near
                if p.mu in (est.lo, est.hi) and p.allocated < max_toys]
        why = f"more toys at the bracket's ends [{est.lo:.4g}, {est.hi:.4g}]"
    return Refinement(new, more, why)
