"""The final results of a `toy_limits` study: the limit and its error, every tested value's CLs, the asymptotic
limit of the same model beside them, and the plot `plots/cls.png` (CLs against the parameter: toys with their
errors, the asymptotic observed and expected curves, 1 - CL, the limit band)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.studies.cls_scan import ScanPoint, finite, locate_limit
from sbi_core.studies.state import StudyState
from sbi_core.studies.study import Study

log = logging.getLogger(__name__)

__all__ = ["report"]

CURVE_POINTS = 40  # values of the asymptotic CLs curve on the plot


def _asymptotic(study: Study, ctx: Any, poi: str, null: float, upper: float, mus: list[float]) -> dict[str, Any]:
    """The asymptotic observed and expected limits, and the asymptotic CLs at the tested values and on a curve."""
    from sbi_core.inference.calculators import AsymptoticCalculator

    level = study.options.level  # type: ignore[attr-defined]
    try:
        calc = AsymptoticCalculator(ctx.model.observed, poi, lambda fit: ctx.model.asimov(fit.x), null=null,
                                    upper=upper, fixed=ctx.fixed, bounds=ctx.bounds, start=ctx.start)
        lim = calc.upper_limit(level)
        curve = sorted({*np.linspace(null, upper, CURVE_POINTS + 1)[1:].tolist(), *mus})
        tests = [calc.cls.hypotest(m) for m in curve]
    except (InputError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        log.warning("asymptotic limit failed: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"observed": lim.observed, "expected": lim.expected, "observed_open": lim.observed_open,
            "valid": lim.valid, "mu_hat": lim.mu_hat,
            "curve": {"mu": curve, "cls": [t.cls for t in tests], "expected": [t.expected["0"] for t in tests]}}


def _plot(uri: str, rows: list[dict[str, Any]], est: Any, asym: dict[str, Any], alpha: float, poi: str,
          level: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ok = [r for r in rows if r["cls"] is not None]
    ax.errorbar([r["mu"] for r in ok], [max(r["cls"], 1e-4) for r in ok], yerr=[r["cls_error"] or 0 for r in ok],
                fmt="o", ms=3, color="k", label="CLs from toys")
    if "curve" in asym:
        c = asym["curve"]
        ax.plot(c["mu"], np.maximum(c["cls"], 1e-4), "-", color="tab:blue", label="asymptotic, observed")
        ax.plot(c["mu"], np.maximum(c["expected"], 1e-4), "--", color="tab:blue", label="asymptotic, expected")
        ax.axvline(asym["observed"], color="tab:blue", lw=0.8, ls=":")
    ax.axhline(alpha, color="tab:red", lw=1, label=f"1 - CL = {alpha:g}")
    if est.status == "located":
        ax.axvspan(est.value - est.error, est.value + est.error, color="tab:orange", alpha=0.3,
                   label=f"limit {est.value:.4g} ± {est.error:.2g}")
    ax.set_yscale("log")
    ax.set_xlabel(poi)
    ax.set_ylabel("CLs")
    ax.set_title(f"{level:g} CL upper limit on {poi} from toys (q~)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with storage.atomic_write(uri) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def report(study: Study, state: StudyState, context: Callable[[Study], Any], poi: str,
           span: tuple[float, float]) -> dict[str, Any]:
    """results.json's content for a toy-limit study (and its plot)."""
    from sbi_core.inference.calculators import cls_from_counts

    o = study.options
    alpha = 1.0 - o.level  # type: ignore[attr-defined]
    points = sorted((ScanPoint.from_json(p) for p in state.kind.get("points", [])), key=lambda p: p.mu)
    est = locate_limit(points, alpha)
    rows = []
    for p in points:
        r = cls_from_counts(p.k_sb, p.n_sb, p.k_b, p.n_b)
        rows.append({"point": f"p{p.index:03d}", "mu": p.mu, "cls": None if p.failed else finite(r.cls),
                     "cls_error": None if p.failed else finite(r.cls_error), "clsb": finite(r.clsb),
                     "clb": finite(r.clb), "toys_sb": p.n_sb, "toys_b": p.n_b, "q_obs": finite(p.q_obs),
                     "failed": p.failed})
    null, upper = span
    asym = _asymptotic(study, context(study), poi, null, upper, [p.mu for p in points if not p.failed]) if points else {}
    uri = study.layout.plot("cls")
    _plot(uri, rows, est, asym, alpha, poi, o.level)  # type: ignore[attr-defined]
    toys = sum(p.n_sb + p.n_b for p in points)
    headline = {"limit": finite(est.value), "limit_error": finite(est.error), "toys": toys,
                "asymptotic_observed": finite(asym.get("observed", math.nan)),
                "asymptotic_expected": finite((asym.get("expected") or {}).get("0", math.nan))}
    return {"poi": poi, "level": o.level, "null": null, "upper": upper,  # type: ignore[attr-defined]
            "limit": {**est.to_json(), "toys": toys}, "asymptotic": asym, "points": rows, "headline": headline,
            "plots": {"cls": uri}}
