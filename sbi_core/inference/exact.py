"""The likelihood contract's per-event arrays for a batch of a dataset's events, from either source.

What to use when:
- `likelihood_batch(layout, cfg, info, batch)` -> `LikelihoodArrays`: the `sbi-core likelihood --batch I`
  step's work (a batch of the dataset's events, or of the run's MC events for the normalisation, see
  `DatasetInfo.batch`). `inference.source: exact` computes them here from the simulator's closed-form densities;
  `learned` hands the events to `sbi_core.ml.evaluate.learned_arrays` (the learning stage).
- `exact_log_ratios(sim, cfg, observations)` is the exact formula alone (closure tests compare learned
  arrays with it).

Exact arrays (theta_b the basis benchmarks, ref the sampling benchmark, sigma_tot the total cross section
before cuts, p(x | theta, nu) the simulator's exact density before cuts, so sigma_tot p = dsigma/dx):

    log_ratio[i, b]        = log sigma_tot(theta_b) p(x_i | theta_b) - log sigma_tot(ref) p(x_i | ref)
    log_ratio_var[i, k, j] = log p(x_i | ref, nu = +-e_k) - log p(x_i | ref, 0)   (j = 0: +1, j = 1: -1)
                             + (+-log(1 + size_k) for a normalization nuisance: rate x (1 + size)^nu)

The cross sections (`xsec`, `xsec_var`) are the dataset's (`DatasetInfo`), summed once from the run's events.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core.data.likelihood_arrays import LikelihoodArrays
from sbi_core.errors import InputError

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.inference.datasets import DatasetInfo
    from sbi_core.layout import RunLayout

__all__ = ["exact_log_ratios", "likelihood_batch", "model_header"]


def model_header(cfg: AnalysisConfig, info: DatasetInfo, components: np.ndarray, matrix: np.ndarray,
                 source: str) -> dict[str, Any]:
    """The model fields of `LikelihoodArrays` (everything but the per-event arrays) for this run."""
    return {
        "source": source,
        "parameters": cfg.parameter_names,
        "benchmarks": cfg.benchmark_names,
        "benchmark_values": np.asarray(cfg.benchmark_matrix(), dtype=np.float64).reshape(len(cfg.benchmarks), -1),
        "reference": cfg.sampling_benchmark,
        "morphing_components": np.asarray(components, dtype=np.int64),
        "morphing_matrix": np.asarray(matrix, dtype=np.float64),
        "nuisance": [n.name for n in cfg.nuisance],
        "nuisance_kinds": [str(n.kind) for n in cfg.nuisance],
        "nuisance_sizes": np.array([n.size for n in cfg.nuisance], dtype=np.float64),
        "xsec": np.asarray(info.xsec, dtype=np.float64),
        "xsec_var": np.asarray(info.xsec_var, dtype=np.float64).reshape(len(cfg.nuisance), 2, len(cfg.benchmarks)),
        "config_hash": info.config_hash,
    }


def exact_log_ratios(sim: Any, cfg: AnalysisConfig, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log_ratio (n, B), log_ratio_var (n, K, 2)) from the simulator's exact densities (see the module doc)."""
    basis = np.asarray(cfg.benchmark_matrix(), dtype=np.float64).reshape(len(cfg.benchmarks), -1)
    ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
    x = np.ascontiguousarray(observations, dtype=np.float64)
    n, n_k = x.shape[0], len(cfg.nuisance)
    try:
        log_dsigma = np.stack([math.log(sim.cross_section(t)) + sim.log_likelihood(x, t) for t in basis], axis=1)
        nominal = sim.log_likelihood(x, basis[ref], np.zeros(n_k)) if n_k else None
    except NotImplementedError:
        raise InputError(f"simulator {cfg.simulator.name!r} has no exact likelihood: set inference.source: learned "
                         "(the learned arrays need the learning stage)") from None
    log_ratio = log_dsigma - log_dsigma[:, ref : ref + 1]
    log_ratio_var = np.zeros((n, n_k, 2))
    for k, nuis in enumerate(cfg.nuisance):
        if str(nuis.kind) == "normalization":  # the density does not move; the rate goes as (1 + size)^nu
            log_ratio_var[:, k, 0], log_ratio_var[:, k, 1] = math.log1p(nuis.size), -math.log1p(nuis.size)
            continue
        for j, sign in enumerate((1.0, -1.0)):
            nu = np.zeros(n_k)
            nu[k] = sign
            log_ratio_var[:, k, j] = sim.log_likelihood(x, basis[ref], nu) - nominal
    for name, arr in (("log_ratio", log_ratio), ("log_ratio_var", log_ratio_var)):
        if np.any(np.isnan(arr)) or np.any(np.isposinf(arr)):
            raise InputError(f"exact {name}: the simulator returned NaN or +inf densities for some events")
    return log_ratio, log_ratio_var


def likelihood_batch(layout: RunLayout, cfg: AnalysisConfig, info: DatasetInfo, batch: int) -> LikelihoodArrays:
    """The contract's arrays for one batch of the dataset's events, from `cfg.inference.source`."""
    from sbi_core.inference.datasets import event_header, read_events

    part, _, start, stop = info.batch(batch)
    events = read_events(info, start, stop, part)
    source_file = info.events if part == info.name else str(info.mc_events)
    header = event_header(source_file)
    meta = {"dataset": part, "events": source_file, "batch": batch, "rows": f"{start}:{stop}"}
    source = cfg.inference.source
    if source == "learned":
        try:
            from sbi_core.ml.evaluate import learned_arrays  # the learning stage (imported only when used)
        except ImportError as exc:
            raise InputError(f"inference.source learned needs the learning stage (sbi_core.ml.evaluate."
                             f"learned_arrays is not available: {exc}); use inference.source: exact") from None
        from sbi_core.runs import configured_plan, networks_layout

        networks = networks_layout(layout, configured_plan(layout.root)[1])  # a derived run reads its source's
        arrays = learned_arrays(networks, cfg, events, np.asarray(info.xsec), np.asarray(info.xsec_var))
        if not isinstance(arrays, LikelihoodArrays) or arrays.n_events != stop - start:
            raise InputError(f"learned_arrays returned {type(arrays).__name__} with the wrong number of events "
                             f"for likelihood batch {batch} ({stop - start} expected)")
        from dataclasses import replace

        return replace(arrays, meta={**arrays.meta, **meta})
    from sbi_core.physics.registry import make_simulator

    log_ratio, log_ratio_var = exact_log_ratios(make_simulator(cfg), cfg, events["observations"])
    return LikelihoodArrays(**model_header(cfg, info, header["components"], header["matrix"], "exact"),
                            log_ratio=log_ratio, log_ratio_var=log_ratio_var,
                            weight=np.asarray(events["weight"], dtype=np.float64), meta=meta)
