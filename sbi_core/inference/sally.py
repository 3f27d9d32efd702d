"""SALLY: histograms of the estimated score t(x) as a binned likelihood in the contract's arrays (source `sally`).

MadMiner's local analysis: the score network t(x) = grad_theta log p(x | theta) at the reference (`training`
method `sally`, head `score`) compresses x to P numbers; their histogram, filled at any theta by morphing the
events' per-benchmark weights, is a sufficient summary near the reference. The histogram is written as the
likelihood contract with one "event" per bin (docs/likelihood-model.md, "Binned models in the same arrays"), so
the fit, scans, limits and toys run on it unchanged:

    data row b:  weight = the data's count in bin b (its summed dataset weights)
    mc row b:    weight = S_b,ref (the run's summed MC weights in bin b at the reference, pb)
    both rows:   log_ratio[b, c]          = log S_b,c / S_b,ref            (S_b,c: at basis benchmark c)
                 log_ratio_var[b, k, j]   = log S_b,kj / S_b,ref           (the events' variation weight columns)
                 log_ratio_var[b, K+b, :] = +-log(1 + delta_b)             (the bin's MC statistical uncertainty)

With `inference.normalization: mc` the NLL is then the binned Poisson NLL sum_b (lambda_b - n_b log lambda_b),
lambda_b = L sum_c w_c(theta) S_b,c T_b(nu), plus the constraints. delta_b = sqrt(sum w_ref^2) / S_b,ref: one
nuisance per bin (`staterror_<b>`, Barlow-Beeston-lite), acting as (1 + delta_b)^nu_b with nu_b ~ N(0, 1)
(pyhf's staterror is 1 + delta_b nu_b: the same to first order in delta_b; with `inference.interpolation:
linear` the factor is 1 + delta_b nu_b above 0 and 1 - delta_b / (1 + delta_b) |nu_b| below). The config's
systematics act on the total, measured at the reference (as for the learned source, `meta_modifiers_on_total`).

Binning (`inference.sally.bins` per score component): the weighted quantiles at the reference of each
component of t over the run's events, a grid of their products; a bin without MC weight at the reference is
dropped (`dataset` records the edges; the likelihood batches fill partial histograms; `--join` sums them).

What to use when:
- `Binning.from_scores(t, w, bins)` / `.index(t)`: the grid; `run_binning(layout, cfg, plan)` on a run.
- `partial_histogram(layout, cfg, info, batch)` -> `Partial`: one likelihood batch's sums.
- `binned_arrays(cfg, header, counts, sums, sumw2)` -> (data, mc) `LikelihoodArrays`.
- `join(layout, cfg, info)`: the `likelihood --join` of source sally.
- `member_arrays(layout, cfg, plan, info, member)`: one ensemble member's histograms alone (the bootstrap fits,
  `bootstrap.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.data.likelihood_arrays import LikelihoodArrays
    from sbi_core.inference.datasets import DatasetInfo
    from sbi_core.layout import RunLayout
    from sbi_core.plan import GenerationPlan

__all__ = ["SALLY", "Binning", "Partial", "binned_arrays", "join", "member_arrays", "partial_histogram", "run_binning",
           "score_ensemble", "score_function"]

SALLY = "sally"
HEAD = "score"
STATERROR = "staterror"
_ROWS = 1 << 16
_MAX_DELTA = 0.99  # a bin's relative MC uncertainty is capped below 1 so that log(1 - delta) exists


@dataclass(frozen=True)
class Binning:
    """Interior edges of each score component; the bins are their product grid (row-major flat index)."""

    edges: tuple[tuple[float, ...], ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(e) + 1 for e in self.edges)

    @property
    def n_bins(self) -> int:
        return math.prod(self.shape)

    def index(self, t: np.ndarray) -> np.ndarray:
        """Flat bin index (n,) of scores t (n, P)."""
        t = np.asarray(t, dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != len(self.edges):
            raise ValueError(f"scores: expected (n, {len(self.edges)}), got {t.shape}")
        idx = [np.searchsorted(np.asarray(e), t[:, p], side="right") for p, e in enumerate(self.edges)]
        return np.ravel_multi_index(idx, self.shape) if idx else np.zeros(t.shape[0], dtype=np.int64)

    @classmethod
    def from_scores(cls, t: np.ndarray, weight: np.ndarray, bins: int) -> Binning:
        """Edges at the weighted quantiles 1/bins, ..., (bins-1)/bins of each component (repeated ones merged)."""
        t, w = np.asarray(t, dtype=np.float64), np.clip(np.asarray(weight, dtype=np.float64), 0.0, None)
        if t.ndim != 2 or w.shape != (t.shape[0],) or w.sum() <= 0:
            raise InputError(f"sally binning: needs scores (n, P) and weights (n,) with a positive sum, got "
                             f"{t.shape} and {w.shape}")
        edges = []
        for p in range(t.shape[1]):
            order = np.argsort(t[:, p], kind="stable")
            cdf = np.cumsum(w[order]) / w.sum()
            q = np.arange(1, bins) / bins
            at = np.searchsorted(cdf, q, side="left").clip(0, t.shape[0] - 1)
            edges.append(tuple(float(v) for v in np.unique(t[order[at], p])))
        return cls(tuple(edges))

    def to_json(self) -> dict[str, Any]:
        return {"edges": [list(e) for e in self.edges]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Binning:
        return cls(tuple(tuple(float(v) for v in e) for e in data["edges"]))


def score_ensemble(layout: RunLayout, cfg: AnalysisConfig) -> Any:
    """The run's sally ensemble (or its source run's); InputError naming `inference.source` when there is none."""
    from sbi_core.runs import configured_plan, networks_layout

    try:
        from sbi_core.ml.ensemble import load_ensemble  # the learning stage, imported only when used
    except ImportError as exc:
        raise InputError(f"inference.source sally needs the learning stage ({exc})") from None
    networks = networks_layout(layout, configured_plan(layout.root)[1])
    try:
        ensemble = load_ensemble(networks, SALLY, HEAD)
    except InputError as exc:
        raise InputError(f"inference.source sally needs a trained sally score network (training.methods: "
                         f"[sally, ...], then train and ensemble): {exc}") from None
    if ensemble.n_params != len(cfg.parameters):
        raise InputError(f"inference.source sally: the sally ensemble gives {ensemble.n_params} score components, "
                         f"the analysis has {len(cfg.parameters)} parameters")
    return ensemble


def score_function(layout: RunLayout, cfg: AnalysisConfig, member: int | None = None) -> Any:
    """t(x) (n, P): the sally ensemble's mean score, or member `member`'s alone (a bootstrap replica)."""
    ensemble = score_ensemble(layout, cfg)
    if member is not None:
        ensemble = ensemble.member(member)  # only that member's network runs
    return lambda x: ensemble.score(x)[0]


def _chunked_scores(score: Any, x: Any, n: int, width: int) -> np.ndarray:
    """t(x) (n, width) of rows [0, n) of x, _ROWS at a time."""
    return np.concatenate([np.asarray(score(x[s : s + _ROWS]), dtype=np.float64).reshape(min(_ROWS, n - s), width)
                           for s in range(0, n, _ROWS)]) if n else np.zeros((0, width))


def run_binning(layout: RunLayout, cfg: AnalysisConfig, plan: GenerationPlan, score: Any = None) -> Binning:
    """The binning of the run's events (their scores, weighted at the reference benchmark); score: t(x), by
    default the ensemble mean's (`score_function`)."""
    import h5py

    from sbi_core.data.format import OBSERVATIONS, WEIGHTS
    from sbi_core.runs import run_events

    score = score or score_function(layout, cfg)
    ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
    with storage.open_for_inspection(run_events(layout, plan)) as src, h5py.File(src, "r") as f:
        n = int(f[OBSERVATIONS].shape[0])
        t = _chunked_scores(score, f[OBSERVATIONS], n, len(cfg.parameters))
        w = f[WEIGHTS][:, ref]
    return Binning.from_scores(t, w, cfg.inference.sally.bins)


@dataclass(frozen=True)
class Partial:
    """One likelihood batch's histogram: the data's counts (n_bins,), or the MC sums of every weight column
    (n_bins, B + 2K) and of the squared reference weight (n_bins,)."""

    counts: np.ndarray | None = None
    sums: np.ndarray | None = None
    sumw2: np.ndarray | None = None

    def write(self, uri: str) -> None:
        import h5py

        with storage.atomic_write(uri) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = "sbi-sally-partial"
            for name in ("counts", "sums", "sumw2"):
                if getattr(self, name) is not None:
                    f[name] = getattr(self, name)

    @classmethod
    def read(cls, uri: str) -> Partial:
        import h5py

        with storage.local_copy(uri) as path, h5py.File(path, "r") as f:
            if f.attrs.get("format") != "sbi-sally-partial":
                raise InputError(f"{uri}: not a sally partial histogram (rerun `sbi-core likelihood --batch I`)")
            return cls(**{name: np.asarray(f[name]) for name in ("counts", "sums", "sumw2") if name in f})


def partial_histogram(layout: RunLayout, cfg: AnalysisConfig, info: DatasetInfo, batch: int) -> Partial:
    """The histogram of one likelihood batch, with the binning `dataset` recorded."""
    if SALLY not in info.extra:
        raise InputError(f"dataset {info.name} has no sally binning: rerun `sbi-core dataset` with inference.source "
                         "sally")
    return _fill(cfg, info, batch, Binning.from_json(info.extra[SALLY]), score_function(layout, cfg))


def _fill(cfg: AnalysisConfig, info: DatasetInfo, batch: int, binning: Binning, score: Any) -> Partial:
    """One likelihood batch's histogram with the given binning and t(x)."""
    import h5py

    from sbi_core.data.format import OBSERVATIONS, WEIGHTS
    from sbi_core.inference.datasets import MC_PART, read_events

    part, _, start, stop = info.batch(batch)
    if part != MC_PART:
        events = read_events(info, start, stop, part)
        idx = binning.index(_chunked_scores(score, events["observations"], stop - start, len(cfg.parameters)))
        return Partial(counts=np.bincount(idx, weights=events["weight"], minlength=binning.n_bins))
    with storage.open_for_inspection(str(info.mc_events)) as src, h5py.File(src, "r") as f:
        x, w = f[OBSERVATIONS][start:stop], f[WEIGHTS][start:stop]
    idx = binning.index(_chunked_scores(score, x, stop - start, len(cfg.parameters)))
    ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
    sums = np.stack([np.bincount(idx, weights=w[:, c], minlength=binning.n_bins) for c in range(w.shape[1])], axis=1)
    return Partial(sums=sums, sumw2=np.bincount(idx, weights=w[:, ref] ** 2, minlength=binning.n_bins))


def binned_arrays(cfg: AnalysisConfig, header: dict[str, Any], counts: np.ndarray, sums: np.ndarray,
                  sumw2: np.ndarray, *, staterror: bool = True) -> tuple[LikelihoodArrays, LikelihoodArrays]:
    """(data, mc) arrays of the histogram (see the module doc). header: `exact.model_header` of source sally;
    counts (n_bins,) the data, sums (n_bins, B + 2K) the MC weight columns, sumw2 (n_bins,) at the reference.
    Bins without MC weight at the reference are dropped; data in such a bin is refused (exit 2)."""
    from sbi_core.data.likelihood_arrays import LikelihoodArrays

    n_b, n_k = len(cfg.benchmarks), len(cfg.nuisance)
    ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
    counts, sums, sumw2 = (np.asarray(a, dtype=np.float64) for a in (counts, sums, sumw2))
    if sums.ndim != 2 or sums.shape[1] != n_b + 2 * n_k or counts.shape != sums.shape[:1] \
            or sumw2.shape != sums.shape[:1]:
        raise InputError(f"sally histogram: counts {counts.shape}, sums {sums.shape}, sumw2 {sumw2.shape} do not "
                         f"match {n_b} benchmarks and {n_k} nuisances")
    keep = sums[:, ref] > 0
    if np.any(counts[~keep] != 0):
        raise InputError(f"inference.sally.bins {cfg.inference.sally.bins}: {counts[~keep].sum():g} data events "
                         "fall in score bins without simulated events; use fewer bins")
    counts, sums, sumw2 = counts[keep], sums[keep], sumw2[keep]
    if np.any(sums <= 0):
        raise InputError(f"inference.sally.bins {cfg.inference.sally.bins}: a score bin has a non-positive summed "
                         "weight at a benchmark or variation; use fewer bins")
    n = int(keep.sum())
    log_ratio = np.log(sums[:, :n_b]) - np.log(sums[:, ref])[:, None]
    var = (np.log(sums[:, n_b:]) - np.log(sums[:, ref])[:, None]).reshape(n, n_k, 2)
    xsec = sums[:, :n_b].sum(axis=0)
    xsec_var = np.einsum("ib,ikj->kjb", sums[:, :n_b], np.exp(var))
    names, kinds, sizes = list(header["nuisance"]), list(header["nuisance_kinds"]), list(header["nuisance_sizes"])
    if staterror:
        delta = np.minimum(np.sqrt(sumw2) / sums[:, ref], _MAX_DELTA)
        stat = np.zeros((n, n, 2))
        rows = np.arange(n)
        stat[rows, rows, 0], stat[rows, rows, 1] = np.log1p(delta), -np.log1p(delta)
        var = np.concatenate([var, stat], axis=1)
        factor = np.stack([1.0 + delta, 1.0 / (1.0 + delta)], axis=1)  # (n, 2): the bin's rate at nu = +-1
        stat_xsec = xsec[None, None, :] + ((factor - 1.0)[:, :, None] * sums[:, None, :n_b])
        xsec_var = np.concatenate([xsec_var, stat_xsec], axis=0)
        names += [f"{STATERROR}_{b}" for b in np.flatnonzero(keep)]
        kinds += [STATERROR] * n
        sizes += delta.tolist()
    model = {**header, "xsec": xsec, "xsec_var": xsec_var, "nuisance": names, "nuisance_kinds": kinds,
             "nuisance_sizes": np.asarray(sizes, dtype=np.float64)}
    for key in ("modifier_mask", "aux", "constraints", "samples", "benchmark_sample"):
        model.pop(key, None)  # the one-sample defaults, sized to the nuisances above
    common = {"log_ratio": log_ratio, "log_ratio_var": var[..., None]}
    return (LikelihoodArrays(**model, **common, weight=counts),
            LikelihoodArrays(**model, **common, weight=sums[:, ref]))


def _summed(parts: list[Partial]) -> Partial:
    """The histogram of several batches of one part (data or mc)."""
    if parts[0].counts is not None:
        return Partial(counts=np.sum([p.counts for p in parts], axis=0))
    return Partial(sums=np.sum([p.sums for p in parts], axis=0), sumw2=np.sum([p.sumw2 for p in parts], axis=0))


def _arrays(cfg: AnalysisConfig, info: DatasetInfo, data: Partial, mc: Partial) -> tuple[Any, Any]:
    """(data, mc) `LikelihoodArrays` of the summed histograms."""
    from sbi_core.inference.datasets import event_header
    from sbi_core.inference.exact import model_header

    if info.normalization != "mc":
        raise InputError("inference.normalization: source sally needs mc (the binned NLL is normalised by the "
                         "run's events per bin)")
    h = event_header(str(info.mc_events))
    header = model_header(cfg, info, h["components"], h["matrix"], SALLY)
    return binned_arrays(cfg, header, data.counts, mc.sums, mc.sumw2, staterror=cfg.inference.sally.staterror)


def member_arrays(layout: RunLayout, cfg: AnalysisConfig, plan: GenerationPlan, info: DatasetInfo,
                  member: int) -> tuple[Any, Any]:
    """(data, mc) arrays of member `member`'s score alone, binned at the quantiles of its own scores (in memory:
    one bootstrap replica of the histogram likelihood)."""
    from sbi_core.inference.datasets import MC_PART

    score = score_function(layout, cfg, member)
    binning = run_binning(layout, cfg, plan, score)
    fills: dict[str, list[Partial]] = {}
    for b in range(info.n_batches):
        fills.setdefault(info.batch(b)[0], []).append(_fill(cfg, info, b, binning, score))
    return _arrays(cfg, info, _summed(fills[info.name]), _summed(fills[MC_PART]))


def join(layout: RunLayout, cfg: AnalysisConfig, info: DatasetInfo) -> dict[str, str]:
    """Sum the batches' partial histograms and write the dataset's and the mc part's arrays; {part: uri}."""
    from dataclasses import replace

    from sbi_core.data.likelihood_arrays import write_arrays
    from sbi_core.inference.datasets import MC_PART

    uris: dict[str, list[str]] = {}
    for b in range(info.n_batches):
        part, index, _, _ = info.batch(b)
        uris.setdefault(part, []).append(layout.likelihood_part(part, SALLY, index))
    missing = [u for us in uris.values() for u in us if not storage.exists(u)]
    if missing:
        raise InputError(f"likelihood --join: {len(missing)} of {info.n_batches} parts are missing "
                         f"(first: {missing[0]}): run `sbi-core likelihood --batch I` for them")
    if MC_PART not in uris:
        raise InputError("inference.normalization: source sally needs mc (the binned NLL is normalised by the "
                         "run's events per bin)")
    data = _summed([Partial.read(u) for u in uris[info.name]])
    arrays = _arrays(cfg, info, data, _summed([Partial.read(u) for u in uris[MC_PART]]))
    on_some = [n.name for n in cfg.nuisance if n.samples is not None]  # applied to the total here, as when learned
    out = {}
    for part, arr in zip((info.name, MC_PART), arrays, strict=True):
        uri = layout.likelihood(part, SALLY)
        meta = {"dataset": part, "events": info.events if part == info.name else str(info.mc_events),
                "parts": len(uris[part]), "binning": str(info.extra[SALLY]), "bins": int(data.counts.size),
                **({"modifiers_on_total": ",".join(on_some)} if on_some else {})}
        with storage.atomic_write(uri) as tmp:
            write_arrays(tmp, replace(arr, meta=meta))
        out[part] = uri
    return out
