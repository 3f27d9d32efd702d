"""The likelihood contract's per-event arrays for a batch of a dataset's events, from either source.

What to use when:
- `likelihood_batch(layout, cfg, info, batch)` -> `LikelihoodArrays`: the `sbi-core likelihood --batch I`
  step's work (a batch of the dataset's events, or of the run's MC events for the normalisation, see
  `DatasetInfo.batch`). `inference.source: exact` computes them here from the simulator's closed-form densities;
  `learned` hands the events to `sbi_core.ml.evaluate.learned_arrays` (the learning stage).
- `exact_log_ratios(sim, cfg, observations)` is the exact formula alone (closure tests compare learned
  arrays with it).

Exact arrays (contract version 2; theta_b the basis benchmarks, ref the sampling benchmark, dsigma_s(x | theta,
nu) the simulator's exact differential cross section of sample s before cuts, `log_dsigma`):

    log_ratio[i, b]           = log dsigma_s(b)(x_i | theta_b) - log dsigma(x_i | ref)    (dsigma: every sample)
    log_ratio_var[i, k, j, s] = log dsigma_s(x_i | ref, nu = +-e_k) - log dsigma_s(x_i | ref)  where k acts on s

The columns are the basis benchmarks of the simulator's theta-dependent sample, then one per theta-independent
sample (`DatasetInfo.columns`); a simulator with one sample and no `log_dsigma` (sigma_tot p(x | theta) from
`cross_section` and `log_likelihood`) gives the benchmarks alone, as in version 1. A normalization nuisance is
the constant +-log(1 + size) on the samples it acts on. The cross sections are the dataset's (`DatasetInfo`),
summed once from the run's events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core.data.likelihood_arrays import LikelihoodArrays
from sbi_core.errors import InputError

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.inference.datasets import DatasetInfo
    from sbi_core.layout import RunLayout

__all__ = ["ExactColumns", "exact_columns", "exact_log_ratios", "likelihood_batch", "model_header"]


@dataclass(frozen=True)
class ExactColumns:
    """The exact arrays' columns: names (B'), the sample of each (`owner` indices into `samples`), the
    theta-independent samples, and the modifier mask (K, S)."""

    names: list[str]
    samples: list[str]
    owner: np.ndarray
    fixed: list[str]
    mask: np.ndarray


def exact_columns(cfg: AnalysisConfig) -> ExactColumns:
    """The columns of the exact arrays for this config's simulator (see the module doc)."""
    from sbi_core.physics.registry import simulator_samples

    names, fixed = simulator_samples(cfg)
    morphed = names.index(next(s for s in names if s not in fixed))
    mask = np.array([[nu.samples is None or s in nu.samples for s in names] for nu in cfg.nuisance],
                    dtype=bool).reshape(len(cfg.nuisance), len(names))
    owner = np.array([morphed] * len(cfg.benchmarks) + [names.index(f) for f in fixed], dtype=np.int64)
    return ExactColumns([*cfg.benchmark_names, *fixed], list(names), owner, list(fixed), mask)


def model_header(cfg: AnalysisConfig, info: DatasetInfo, components: np.ndarray, matrix: np.ndarray,
                 source: str) -> dict[str, Any]:
    """The model fields of `LikelihoodArrays` (everything but the per-event arrays) for this run: the exact
    source's columns (`exact_columns`), or the benchmarks as one sample ("total") for the learned source."""
    n_b, n_k = len(cfg.benchmarks), len(cfg.nuisance)
    values = np.asarray(cfg.benchmark_matrix(), dtype=np.float64).reshape(n_b, -1)
    matrix = np.asarray(matrix, dtype=np.float64)
    components = np.asarray(components, dtype=np.int64)
    header: dict[str, Any] = {
        "source": source,
        "parameters": cfg.parameter_names,
        "benchmarks": cfg.benchmark_names,
        "benchmark_values": values,
        "reference": cfg.sampling_benchmark,
        "morphing_components": components,
        "morphing_matrix": matrix,
        "nuisance": [n.name for n in cfg.nuisance],
        "nuisance_kinds": [str(n.kind) for n in cfg.nuisance],
        "nuisance_sizes": np.array([n.size for n in cfg.nuisance], dtype=np.float64),
        "xsec": np.asarray(info.xsec, dtype=np.float64),
        "xsec_var": np.asarray(info.xsec_var, dtype=np.float64).reshape(n_k, 2, n_b),
        "config_hash": info.config_hash,
    }
    if source != "exact":
        return header
    cols = exact_columns(cfg)
    header.update(samples=cols.samples, modifier_mask=cols.mask)
    if not cols.fixed:
        return header
    if info.columns is None or info.columns["names"] != cols.names:
        raise InputError(f"dataset {info.name}: its record has no per-sample cross sections for columns {cols.names}: "
                         "rerun `sbi-core dataset`")
    const = np.zeros((components.shape[0], len(cols.fixed)))
    const[int(np.flatnonzero(~components.any(axis=1))[0])] = 1.0  # a theta-independent column: weight 1
    header.update(
        benchmarks=cols.names, benchmark_sample=cols.owner,
        benchmark_values=np.vstack([values, np.full((len(cols.fixed), values.shape[1]), np.nan)]),
        morphing_matrix=np.concatenate([matrix, const], axis=1),
        xsec=np.asarray(info.columns["xsec"], dtype=np.float64),
        xsec_var=np.asarray(info.columns["xsec_var"], dtype=np.float64).reshape(n_k, 2, len(cols.names)),
    )
    return header


def _log_dsigma(sim: Any, x: np.ndarray, theta: np.ndarray, nu: np.ndarray | None = None,
                sample: str | None = None) -> np.ndarray:
    """The simulator's log dsigma(x | theta, nu) of one sample (None: all), or sigma_tot p(x | theta, nu) for a
    one-sample simulator without `log_dsigma`."""
    if hasattr(sim, "log_dsigma"):
        return np.asarray(sim.log_dsigma(x, theta, nu, sample))
    return math.log(sim.cross_section(theta)) + sim.log_likelihood(x, theta, nu)


def exact_log_ratios(sim: Any, cfg: AnalysisConfig, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log_ratio (n, B'), log_ratio_var (n, K, 2, S)) from the simulator's exact densities (see the module doc)."""
    basis = np.asarray(cfg.benchmark_matrix(), dtype=np.float64).reshape(len(cfg.benchmarks), -1)
    theta_ref = basis[cfg.benchmark_names.index(cfg.sampling_benchmark)]
    cols = exact_columns(cfg)
    x = np.ascontiguousarray(observations, dtype=np.float64)
    n, n_k, n_s = x.shape[0], len(cfg.nuisance), len(cols.samples)
    one = n_s == 1
    try:
        denominator = _log_dsigma(sim, x, theta_ref)
        morphed = None if one else cols.samples[int(cols.owner[0])]
        columns = [_log_dsigma(sim, x, t, sample=morphed) for t in basis]
        columns += [_log_dsigma(sim, x, theta_ref, sample=s) for s in cols.fixed]
        log_ratio = np.stack(columns, axis=1) - denominator[:, None]
        log_ratio_var = np.zeros((n, n_k, 2, n_s))
        for s_idx, sample in enumerate(cols.samples):
            k_shape = [k for k in range(n_k) if cols.mask[k, s_idx] and str(cfg.nuisance[k].kind) != "normalization"]
            nominal = _log_dsigma(sim, x, theta_ref, np.zeros(n_k), None if one else sample) if k_shape else None
            for k, nuis in enumerate(cfg.nuisance):
                if not cols.mask[k, s_idx]:
                    continue
                if str(nuis.kind) == "normalization":  # the density does not move; the rate goes as (1 + size)^nu
                    log_ratio_var[:, k, 0, s_idx], log_ratio_var[:, k, 1, s_idx] = (math.log1p(nuis.size),
                                                                                    -math.log1p(nuis.size))
                    continue
                for j, sign in enumerate((1.0, -1.0)):
                    nu = np.zeros(n_k)
                    nu[k] = sign
                    log_ratio_var[:, k, j, s_idx] = _log_dsigma(sim, x, theta_ref, nu, None if one else sample) - nominal
    except NotImplementedError:
        raise InputError(f"simulator {cfg.simulator.name!r} has no exact likelihood: set inference.source: learned "
                         "(the learned arrays need the learning stage)") from None
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
    if source == "sally":
        raise InputError("inference.source sally: its arrays are histograms, made by `sbi-core likelihood --join` "
                         "(sbi_core/inference/sally.py), not per event")
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
