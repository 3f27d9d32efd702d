"""Bootstrap ensembles as the method uncertainty: the fit repeated with each ensemble member's likelihood alone.

Every ensemble member trains on its own bootstrap resample of the training set (`training.members`,
`training.bootstrap`; without it members differ by their seeds alone, and the spread is that of the seeds:
`members_resampled` says which), so the members' likelihoods are replicas of what the training could have given; the spread of their best fits and interval
ends is the method (training) uncertainty, as the ATLAS NSBI analyses report it, beside the statistical one. The
fit of the ensemble mean stays the result; this spread is reported separately (`results.json`:
`method_uncertainty`), never added to it.

Member m of the likelihood: for the learned source every ensemble's member m (`learned_arrays(..., member=m)`:
the benchmark ratios and the per-variation networks), for sally member m's score, binned at its own quantiles
(`sally.member_arrays`). Each replica gets the global fit and the 1D profile intervals of every free parameter of
interest at `inference.confidence_levels` (walked out from its best fit, Brent on the profile), with the analysis'
fixed parameters, bounds and start. The exact source has no members (refused by the config checks).

What to use when:
- `member_fit(cfg, data, mc)`: one replica's fit and intervals from its arrays -> a JSON-able dict.
- `fit_members(run_uri, members)`: the replicas' arrays and fits, one file each (`RunLayout.bootstrap_member`):
  the `fit` step runs every member with `inference.bootstrap: true` (and records their number in fit.json,
  `bootstrap_members`); `sbi-core bootstrap --run RUN --member M` runs some (mapped-friendly: each member is
  independent).
- `spread(fits, pois, levels)` / `summary(layout, cfg, n)`: the members' spread (mean, standard deviation with
  ddof 1, min, max of each best fit and interval end) -> `results.json`'s `method_uncertainty` (`report`).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.data.likelihood_arrays import LikelihoodArrays
    from sbi_core.layout import RunLayout

__all__ = ["fit_members", "member_count", "member_fit", "spread", "summary"]


def member_fit(cfg: AnalysisConfig, data: LikelihoodArrays, mc: LikelihoodArrays | None,
               luminosity: float | None = None) -> dict[str, Any]:
    """One replica's global fit and 1D profile intervals of the free parameters of interest."""
    from sbi_core.inference.profile import Profiler
    from sbi_core.inference.steps import fit_start, model_from_arrays

    inf = cfg.inference
    model = model_from_arrays(cfg, data, mc, luminosity)
    prof = Profiler(model, fixed=inf.fix, bounds=inf.bounds, start=fit_start(cfg))
    best = prof.best
    pois = [p for p in cfg.parameter_names if p not in inf.fix]
    intervals = {p: [prof.interval(p, level).to_json() for level in inf.confidence_levels] for p in pois}
    return {"values": best.values, "errors": best.errors, "valid": bool(best.valid), "nll": best.nll,
            "intervals": intervals}


def member_count(layout: RunLayout, cfg: AnalysisConfig) -> int:
    """The number of replicas: the members every ensemble of the configured source has."""
    from sbi_core.runs import configured_plan, networks_layout

    source = cfg.inference.source
    if source == "exact":
        raise InputError("inference.bootstrap: the exact source has no ensemble members")
    networks = networks_layout(layout, configured_plan(layout.root)[1])
    if source == "sally":
        from sbi_core.inference.sally import score_ensemble

        return len(score_ensemble(layout, cfg).members)
    from sbi_core.ml.evaluate import learned_members

    return learned_members(networks, cfg)


def _learned_member_arrays(layout: RunLayout, cfg: AnalysisConfig, info: Any, member: int) -> tuple[Any, Any]:
    """(data, mc or None) learned arrays of member `member` alone, batch by batch as the likelihood step does."""
    from sbi_core.data.likelihood_arrays import concatenate
    from sbi_core.inference.datasets import read_events
    from sbi_core.ml.evaluate import learned_arrays
    from sbi_core.runs import configured_plan, networks_layout

    networks = networks_layout(layout, configured_plan(layout.root)[1])
    parts: dict[str, list[Any]] = {}
    for b in range(info.n_batches):
        part, _, start, stop = info.batch(b)
        events = read_events(info, start, stop, part)
        parts.setdefault(part, []).append(learned_arrays(networks, cfg, events, np.asarray(info.xsec),
                                                         np.asarray(info.xsec_var), member=member))
    joined = [concatenate(parts[p]) for p in info.parts()]
    return joined[0], (joined[1] if len(joined) > 1 else None)


def fit_members(run_uri: str, members: list[int] | None = None) -> dict[str, Any]:
    """Fit the given replicas (default: all) and write each one's record; the step's summary."""
    from sbi_core.inference.datasets import DatasetInfo
    from sbi_core.runs import load_run

    t0 = time.perf_counter()
    layout, cfg, plan = load_run(run_uri)
    info = DatasetInfo.load(layout, cfg.inference.dataset.kind)
    n = member_count(layout, cfg)
    todo = list(range(n)) if members is None else members
    bad = [m for m in todo if not 0 <= m < n]
    if bad:
        raise InputError(f"bootstrap members {bad} are outside 0..{n - 1} (the ensembles have {n} members)")
    written = []
    for m in todo:
        if cfg.inference.source == "sally":
            from sbi_core.inference.sally import member_arrays

            data, mc = member_arrays(layout, cfg, plan, info, m)
        else:
            data, mc = _learned_member_arrays(layout, cfg, info, m)
        record = {"member": m, "source": cfg.inference.source, "networks": data.meta.get("networks"),
                  **member_fit(cfg, data, mc, info.luminosity)}
        storage.write_json(layout.bootstrap_member(m), record)
        written.append(layout.bootstrap_member(m))
    return {"step": "bootstrap", "run": layout.root, "members": todo, "n_members": n, "files": written,
            "seconds": round(time.perf_counter() - t0, 3)}


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return {"values": values, "mean": float(v.mean()) if v.size else None,
            "std": float(v.std(ddof=1)) if v.size > 1 else None,
            "min": float(v.min()) if v.size else None, "max": float(v.max()) if v.size else None}


def spread(fits: list[dict[str, Any]], pois: list[str], levels: list[float]) -> dict[str, Any]:
    """Per parameter of interest: the members' best fits and, per level, interval ends (mean, std, min, max)."""
    out: dict[str, Any] = {}
    for p in pois:
        entry: dict[str, Any] = {"best_fit": _stats([f["values"][p] for f in fits])}
        for i, level in enumerate(levels):
            ivs = [f["intervals"][p][i] for f in fits if p in f.get("intervals", {})]
            entry[f"interval_{level:g}"] = {"lo": _stats([iv["lo"] for iv in ivs]),
                                            "hi": _stats([iv["hi"] for iv in ivs]),
                                            "open": any(iv["lo_open"] or iv["hi_open"] for iv in ivs)}
        out[p] = entry
    return out


def summary(layout: RunLayout, cfg: AnalysisConfig, n_members: int) -> dict[str, Any] | None:
    """The method uncertainty from the member files present among 0..n_members-1 (None when there are none)."""
    uris = [layout.bootstrap_member(m) for m in range(n_members)]
    fits = [storage.read_json(u) for u in uris if storage.exists(u)]
    if not fits:
        return None
    pois = [p for p in cfg.parameter_names if p not in cfg.inference.fix]
    return {"n_members": n_members, "members": [f["member"] for f in fits], "valid": sum(f["valid"] for f in fits),
            "source": fits[0]["source"], "levels": list(cfg.inference.confidence_levels),
            "members_resampled": bool(cfg.training.bootstrap),
            "parameters": spread(fits, pois, list(cfg.inference.confidence_levels))}
