"""The inference report: `results.json` (every figure a user came for) and PNG plots (matplotlib, Agg).

What to use when:
- `build_results(cfg, fit, hessian, limits, toys, dataset)`: one JSON-able dict from what the steps wrote
  (fit.json, hessian.json, limits.json, the toy blocks' summary); any of the later ones may be missing.
- `make_plots(results, limits, toys, plot_uri)`: writes the plots that the inputs allow, returns {name: URI}:
  `scan_<poi>` (1D profile curves, observed and expected, the levels marked), `contour_<a>_<b>` (2D contours),
  `correlation`, `pulls` (nuisance parameters against their constraints), `impacts_<poi>`, `toys_<test>`
  (the toys' test statistic against its asymptotic chi2 distribution).
- `headline(results)`: the few numbers the `report` step's summary shows.
- `method_uncertainty(boot, results)`: the bootstrap members' spread (`bootstrap.summary`) beside the statistical
  errors, results.json's `method_uncertainty`; `bootstrap_plots(results, plot_uri)`: `bootstrap_<poi>`, each
  member's best fit and intervals against the ensemble's.

Curves are drawn as 2 Delta NLL (the chi2-like scale physicists read); files store Delta NLL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sbi_core import storage

__all__ = ["bootstrap_plots", "build_results", "headline", "make_plots", "method_uncertainty"]


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN and inf become None, numpy scalars/arrays plain Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def build_results(cfg: Any, fit: dict[str, Any], hessian: dict[str, Any] | None, limits: dict[str, Any] | None,
                  toys: dict[str, Any] | None, *, dataset: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json's content (see the module doc)."""
    names = list(fit["names"])
    pois = [n for n in cfg.parameter_names if n in names]
    nuisances = [n for n in names if n not in pois]
    errors = dict(hessian["errors"]) if hessian else dict(fit["errors"])
    out: dict[str, Any] = {
        "analysis": cfg.name,
        "parameters_of_interest": pois,
        "nuisance_parameters": nuisances,
        "fixed": list(fit.get("fixed", [])),
        "truth": {p.name: p.true_value for p in cfg.parameters},
        "dataset": {k: (dataset or {}).get(k) for k in ("name", "kind", "n_events", "luminosity", "theta", "seed")},
        "best_fit": {
            "values": fit["values"],
            "errors": errors,
            "errors_from": "hessian (HVP row blocks)" if hessian else "fit",
            "nll": fit["nll"],
            "valid": fit["valid"],
            "edm": fit.get("edm"),
            "calls": fit.get("calls"),
            "message": fit.get("message"),
            "expected_events": fit.get("expected_events_at_fit"),
        },
        "pulls": {n: {"value": fit["values"][n], "error": errors.get(n)} for n in nuisances},
    }
    if hessian:
        out["covariance"] = {"names": hessian["names"], "matrix": hessian["covariance"]}
        out["correlation"] = {"names": hessian["names"], "matrix": hessian["correlation"]}
        out["impacts"] = hessian.get("impacts", {})
    validity = {"fit": bool(fit["valid"])}
    if limits:
        out["expected_point"] = limits.get("expected_point")
        intervals, contours = {}, {}
        for s in limits["scans"]:
            key = ",".join(s["parameters"])
            if len(s["parameters"]) == 1:
                intervals[key] = {kind: s[kind]["intervals"] for kind in ("observed", "expected")}
            else:
                contours[key] = {kind: {"contours": s[kind]["contours"],
                                        "truth_inside": s[kind].get("truth_inside")} for kind in ("observed", "expected")}
        out["intervals"] = intervals
        out["contours"] = contours
        out["upper_limits"] = [{k: v for k, v in u.items() if k != "tested"} for u in limits["limits"]]
        validity["upper_limits"] = all(u["valid"] for u in limits["limits"])
        validity["scan_improved_best_fit"] = any(s[k]["best_improved"] for s in limits["scans"]
                                                 for k in ("observed", "expected"))
    if toys:
        out["toys"] = {k: toys[k] for k in ("n", "valid", "missing_blocks", "point", "tests")}
        validity["toys_valid_fraction"] = toys["valid"] / toys["n"] if toys["n"] else None
    out["validity"] = validity
    return _clean(out)


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """Best fit of the POIs, their errors, validity, the first level's intervals and the observed limits."""
    pois = results["parameters_of_interest"]
    best = results["best_fit"]
    out: dict[str, Any] = {
        "best_fit": {p: best["values"][p] for p in pois},
        "errors": {p: best["errors"].get(p) for p in pois},
        "valid": best["valid"],
    }
    if "intervals" in results:
        out["intervals"] = {p: {"level": iv["observed"][0]["level"], "lo": iv["observed"][0]["lo"],
                                "hi": iv["observed"][0]["hi"]} for p, iv in results["intervals"].items()}
    if "upper_limits" in results:
        out["upper_limits"] = {u["poi"]: u["observed"] for u in results["upper_limits"]}
    if "method_uncertainty" in results:
        out["method_uncertainty"] = {p: e["best_fit"]["std"]
                                     for p, e in results["method_uncertainty"]["parameters"].items()}
    return out


def method_uncertainty(boot: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The members' spread with, per parameter of interest, its ratio to the statistical error of the fit (the
    ensemble mean's): a separate uncertainty, not folded into the errors or intervals."""
    errors = results["best_fit"]["errors"]
    per = {}
    for p, entry in boot["parameters"].items():
        std, err = entry["best_fit"]["std"], errors.get(p)
        per[p] = {**entry, "std_over_statistical": std / err if std is not None and err else None}
    return _clean({**boot, "parameters": per,
                   "definition": "spread over ensemble members, each member's likelihood fitted alone (members "
                                 "train on bootstrap resamples); std with ddof 1; reported beside, not added to, "
                                 "the statistical errors"})


def bootstrap_plots(results: dict[str, Any], plot_uri: Callable[[str], str]) -> dict[str, str]:
    """`bootstrap_<poi>`: each member's best fit and first-level interval, the ensemble's fit as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boot, plots = results.get("method_uncertainty"), {}
    if not boot:
        return plots
    level = boot["levels"][0]
    for p, entry in boot["parameters"].items():
        vals = entry["best_fit"]["values"]
        lo, hi = entry[f"interval_{level:g}"]["lo"]["values"], entry[f"interval_{level:g}"]["hi"]["values"]
        fig, ax = plt.subplots(figsize=(5.5, 0.4 * len(vals) + 1.5))
        best, err = results["best_fit"]["values"][p], results["best_fit"]["errors"].get(p)
        if err:
            ax.axvspan(best - err, best + err, color="tab:blue", alpha=0.15, label="ensemble fit ±1 error")
        ax.axvline(best, color="tab:blue", lw=1)
        for i, (v, a, b) in enumerate(zip(vals, lo, hi, strict=True)):
            if a is not None and b is not None:
                ax.plot([a, b], [i, i], color="k", lw=1)
            ax.plot([v], [i], "ko", ms=4)
        ax.set_yticks(range(len(vals)), [f"member {m}" for m in boot["members"]])
        ax.set_xlabel(p)
        ax.set_title(f"method uncertainty: std {entry['best_fit']['std'] or 0:.3g} ({level:.0%} intervals)",
                     fontsize=8)
        ax.legend(fontsize=8)
        plots[f"bootstrap_{p}"] = _save(fig, plot_uri(f"bootstrap_{p}"))
    return plots


# ---------------------------------------------------------------------------------------------- plots
def _save(fig: Any, uri: str) -> str:
    import matplotlib.pyplot as plt

    with storage.atomic_write(uri) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return uri


def _level_lines(ax: Any, levels: list[float], ndim: int) -> None:
    from scipy import stats

    for level in levels:
        y = float(stats.chi2.ppf(level, ndim))
        ax.axhline(y, color="grey", lw=0.8, ls=":")
        ax.annotate(f"{level:.0%}", (1.0, y), xycoords=("axes fraction", "data"), fontsize=8, color="grey",
                    ha="right", va="bottom")


def make_plots(results: dict[str, Any], limits: dict[str, Any] | None, toys: dict[str, Any] | None,
               plot_uri: Callable[[str], str]) -> dict[str, str]:
    """Write every plot the inputs allow (see the module doc); {name: URI}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    truth = results.get("truth", {})
    best = results["best_fit"]["values"]
    if limits:
        levels = limits["confidence_levels"]
        for s in limits["scans"]:
            names = s["parameters"]
            if len(names) == 1:
                name = names[0]
                x = np.asarray(s["axes"][0])
                fig, ax = plt.subplots(figsize=(5.5, 4))
                for kind, style in (("observed", "-"), ("expected", "--")):
                    y = np.array([np.nan if v is None else 2 * v for v in s[kind]["dnll"]])
                    xb = s[kind].get("best", {}).get(name)
                    xs = x
                    if xb is not None and x[0] < xb < x[-1]:  # the minimum itself is a point of the curve
                        i = int(np.searchsorted(x, xb))
                        xs, y = np.insert(x, i, xb), np.insert(y, i, 0.0)
                    ax.plot(xs, y, style, color="k" if kind == "observed" else "tab:blue", label=kind)
                    for iv in s[kind]["intervals"]:
                        for lo, hi in iv["pieces"]:
                            ax.plot([lo, hi], [2 * iv["threshold_dnll"]] * 2, style, lw=3, alpha=0.35,
                                    color="k" if kind == "observed" else "tab:blue")
                _level_lines(ax, levels, 1)
                if truth.get(name) is not None:
                    ax.axvline(truth[name], color="tab:red", lw=0.8, label="truth")
                ax.set_xlabel(name)
                ax.set_ylabel(r"$-2\,\Delta\ln L$ (profiled)")
                ax.set_ylim(0, max(6.0, 1.2 * float(np.nanmax([2 * t["threshold_dnll"] for t in
                                                               s["observed"]["intervals"]]))))
                ax.legend(fontsize=8)
                plots[f"scan_{name}"] = _save(fig, plot_uri(f"scan_{name}"))
            else:
                fig, ax = plt.subplots(figsize=(5.5, 4.5))
                for kind, style in (("observed", "-"), ("expected", "--")):
                    color = "k" if kind == "observed" else "tab:blue"
                    for c in s[kind]["contours"]:
                        for line in c["lines"]:
                            arr = np.asarray(line)
                            ax.plot(arr[:, 0], arr[:, 1], style, color=color, lw=1.2 if c["level"] < 0.9 else 0.8)
                    ax.plot([], [], style, color=color, label=f"{kind} ({', '.join(f'{lv:.0%}' for lv in levels)})")
                ax.plot(best[names[0]], best[names[1]], "k+", ms=10, label="best fit")
                if all(truth.get(n) is not None for n in names):
                    ax.plot(truth[names[0]], truth[names[1]], "*", color="tab:red", ms=10, label="truth")
                ax.set_xlabel(names[0])
                ax.set_ylabel(names[1])
                ax.set_xlim(s["axes"][0][0], s["axes"][0][-1])
                ax.set_ylim(s["axes"][1][0], s["axes"][1][-1])
                ax.legend(fontsize=8)
                plots[f"contour_{names[0]}_{names[1]}"] = _save(fig, plot_uri(f"contour_{names[0]}_{names[1]}"))
    if "correlation" in results:
        names = results["correlation"]["names"]
        mat = np.asarray(results["correlation"]["matrix"], dtype=np.float64)
        n = len(names)
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.5 * n))
        im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(n), names, rotation=45, ha="right")
        ax.set_yticks(range(n), names)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label="correlation")
        plots["correlation"] = _save(fig, plot_uri("correlation"))
    pulls = results.get("pulls", {})
    if pulls:
        names = list(pulls)
        fig, ax = plt.subplots(figsize=(5, 0.8 + 0.35 * len(names)))
        y = np.arange(len(names))
        ax.axvspan(-2, 2, color="gold", alpha=0.4)
        ax.axvspan(-1, 1, color="limegreen", alpha=0.4)
        vals = [pulls[n]["value"] for n in names]
        errs = [pulls[n]["error"] or 0.0 for n in names]
        ax.errorbar(vals, y, xerr=errs, fmt="ko", ms=4)
        ax.set_yticks(y, names)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.set_xlabel(r"$(\hat\nu - \nu_0) / \Delta\nu$  (constraint: unit Gaussian)")
        ax.set_xlim(-3, 3)
        plots["pulls"] = _save(fig, plot_uri("pulls"))
    for poi, imp in (results.get("impacts") or {}).items():
        if not imp:
            continue
        order = sorted(imp, key=lambda k: abs(imp[k]["postfit"]))
        fig, ax = plt.subplots(figsize=(5, 0.8 + 0.35 * len(order)))
        y = np.arange(len(order))
        ax.barh(y, [imp[k]["prefit"] for k in order], color="none", edgecolor="tab:blue", label="pre-fit")
        ax.barh(y, [imp[k]["postfit"] for k in order], color="tab:blue", alpha=0.6, label="post-fit")
        ax.set_yticks(y, order)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"impact on {poi} (covariance: shift per sigma of the nuisance)")
        ax.legend(fontsize=8)
        plots[f"impacts_{poi}"] = _save(fig, plot_uri(f"impacts_{poi}"))
    if toys and toys.get("dnll"):
        from scipy import stats

        for key, vals in toys["dnll"].items():
            if not vals:
                continue
            ndim = len(key.split(","))
            t = 2 * np.asarray(vals)
            fig, ax = plt.subplots(figsize=(5.5, 4))
            top = max(10.0, float(np.quantile(t, 0.99)))
            bins = np.linspace(0, top, 41)
            ax.hist(t, bins=bins, density=True, histtype="step", color="k", label=f"{t.size} toys")
            xs = np.linspace(1e-3, top, 300)
            ax.plot(xs, stats.chi2.pdf(xs, ndim), color="tab:red", label=rf"$\chi^2_{ndim}$ (Wilks)")
            ax.set_yscale("log")
            ax.set_xlabel(rf"$-2\,\Delta\ln L$ at the generating point ({key})")
            ax.legend(fontsize=8)
            cov = toys["tests"][key]["coverage"]
            ax.set_title(", ".join(f"coverage {c['level']:.0%}: {c['coverage']:.3f}±{c['error']:.3f}" for c in cov),
                         fontsize=8)
            safe = key.replace(",", "_")
            plots[f"toys_{safe}"] = _save(fig, plot_uri(f"toys_{safe}"))
    return plots
