"""Learned against exact: the same dataset fitted with each learned method's likelihood and with the exact one.

What to use when:
- `learned_vs_exact(layout, cfg, info, main)` (called by the `fit` step): when the simulator has an exact
  likelihood, fits the run's dataset with the exact arrays and with every learned method of the comparison
  (`inference.estimator` when the source is learned, then `inference.compare`), reusing the fit step's
  `minimize` settings; the global fit `main` stands for its own source. Returns fit.json's `learned_vs_exact`.
- `compare_rows(learned, exact, pois)` is the arithmetic alone (tests, benches).

Per parameter of interest and method: the best fits, the 68% interval widths (2 x the Hesse error of each fit,
the errors the fit step reports), their ratio learned / exact, and the shift of the learned best fit in units of
the exact error. Arrays are built in memory (`exact.likelihood_batch` per batch, as the likelihood step does): the
comparison is for runs whose dataset and MC fit in memory.
"""

from __future__ import annotations

import logging
from typing import Any

from sbi_core.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["compare_rows", "learned_vs_exact"]

#: Interval width at 68% from a Hesse error: the +-1 sigma interval.
WIDTH_PER_ERROR = 2.0


def compare_rows(learned: Any, exact: Any, pois: list[str]) -> dict[str, dict[str, float]]:
    """{poi: best fits, 68% widths, width ratio, shift in exact errors} of two `FitResult`s."""
    out = {}
    for p in pois:
        le, ee = float(learned.errors[p]), float(exact.errors[p])
        out[p] = {"learned": float(learned.values[p]), "exact": float(exact.values[p]),
                  "learned_width_68": WIDTH_PER_ERROR * le, "exact_width_68": WIDTH_PER_ERROR * ee,
                  "width_ratio": le / ee if ee > 0 else float("nan"),
                  "shift_in_exact_errors": (float(learned.values[p]) - float(exact.values[p])) / ee
                  if ee > 0 else float("nan")}
    return out


def _variant(cfg: Any, **inference: Any) -> Any:
    """The config with some `inference` settings replaced (the source, the estimator)."""
    return cfg.model_copy(update={"inference": cfg.inference.model_copy(update=inference)})


def _arrays(layout: Any, cfg: Any, info: Any) -> tuple[Any, Any]:
    """(the dataset's arrays, the MC sample's or None) of `cfg.inference`'s source, built in memory."""
    from sbi_core.data.likelihood_arrays import concatenate
    from sbi_core.inference.exact import likelihood_batch

    parts: dict[str, list[Any]] = {}
    for b in range(info.n_batches):
        parts.setdefault(info.batch(b)[0], []).append(likelihood_batch(layout, cfg, info, b))
    data = concatenate(parts.pop(info.name))
    return data, (concatenate(next(iter(parts.values()))) if parts else None)


def _objective(layout: Any, cfg: Any, info: Any, method: str | None) -> Any:
    """The NLL of the dataset with the exact arrays (method None) or with a learned method's."""
    from sbi_core.inference.steps import model_from_arrays, parametrised_model

    variant = _variant(cfg, source="exact") if method is None else _variant(cfg, source="learned", estimator=method)
    data, mc = _arrays(layout, variant, info)
    if method not in (None, "benchmark_ratio"):
        return parametrised_model(layout, variant, info, data, mc, estimator=method)
    return model_from_arrays(variant, data, mc, luminosity=info.luminosity)


def learned_vs_exact(layout: Any, cfg: Any, info: Any, main: Any) -> dict[str, Any] | None:
    """fit.json's `learned_vs_exact` (see the module doc); None when nothing is to be compared, and
    {"skipped": why} when the simulator has no exact likelihood."""
    from sbi_core.inference.fit import minimize
    from sbi_core.inference.steps import fit_start

    inf = cfg.inference
    methods = ([inf.estimator] if inf.source == "learned" else []) + [m for m in inf.compare
                                                                      if inf.source == "exact" or m != inf.estimator]
    if not methods:
        return None

    def fitted(objective: Any) -> Any:
        return minimize(objective, start=fit_start(cfg), fixed=inf.fix, bounds=inf.bounds)

    try:
        exact = main if inf.source == "exact" else fitted(_objective(layout, cfg, info, None))
    except (InputError, NotImplementedError) as exc:
        if "exact likelihood" not in str(exc):
            raise
        return {"skipped": f"no exact likelihood to compare with ({exc})"}
    pois = [n for n in cfg.parameter_names if n not in inf.fix]
    out: dict[str, Any] = {"exact": {"values": exact.values, "errors": exact.errors, "valid": exact.valid},
                           "width": "2 x Hesse error (68%)", "methods": {}}
    for method in dict.fromkeys(methods):
        learned = main if inf.source == "learned" and method == inf.estimator else \
            fitted(_objective(layout, cfg, info, method))
        out["methods"][method] = {"valid": learned.valid, "parameters": compare_rows(learned, exact, pois)}
        log.info("learned %s against exact: %s", method, out["methods"][method])
    return out
