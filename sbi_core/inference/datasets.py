"""The dataset a fit runs on: which events, with which per-event weight, and the model's cross sections.

What to use when:
- `build_dataset(layout, cfg, plan)` is the `sbi-core dataset` step's work: it builds the configured
  dataset (`inference.dataset.kind`, one builder per kind in `BUILDERS`) and returns a `DatasetInfo`,
  which the step writes to `RunLayout.dataset_info(kind)`; every later inference step reads it back.
- `fiducial_cross_sections(events_uri, ...)` sums a run's weights: sigma_b per basis benchmark and at
  every nuisance variation (the `xsec` / `xsec_var` of the likelihood contract, one sample);
  `column_cross_sections(events_uri, cfg)` the same per column of a simulator with several samples (exact source).
- `read_events(info, start, stop)` reads a batch of the dataset's events with their dataset weights.

Kinds:
- pseudo: N ~ Poisson(L sigma_fid(theta_true)) events drawn without replacement from the run's events by
  accept-reject on their weights at theta_true (morphing), nu = 0; unit weights. The accepted events are
  unweighted draws from p(x | theta_true) after cuts; the step refuses (InputError) when the run has too
  few events for N, and says how many it would need. Written as an events file, `RunLayout.dataset`.
- asimov: every run event, weighted L w_i(theta_true): the expected dataset (no file is copied).
- file: an events file the user gives (`inference.dataset.uri`, observed data), unit weights.

Normalisation (`inference.normalization`): "mc" (default) computes sigma(theta, nu) in the NLL as the weighted
sum over the run's events of the same per-event model as the data's (their likelihood arrays, weights = MC
weights at the reference), so the extended likelihood is normalised at every nu; "xsec" uses the contract's
interpolation of the cross sections below (cheaper; biased for shape systematics whose per-event log ratio
varies, see sbi_core.inference.nll). The likelihood batches then cover the dataset's events and the run's.

Cross sections always come from the run's own events (the model), whatever the dataset. A nuisance
column of the events file is the reference weight times the event's variation ratio, which does not
depend on theta, so sigma_b at nu_k = +-1 is sum_i w_b,i * ratio_k,i (reweighting the events that pass the
nominal cuts: an unbiased estimate of the varied fiducial cross section).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.layout import RunLayout
    from sbi_core.plan import GenerationPlan

__all__ = ["BUILDERS", "DatasetInfo", "build_dataset", "column_cross_sections", "fiducial_cross_sections", "read_events"]

_READ_ROWS = 1 << 16  # rows per read when streaming a run's events
#: Name of the likelihood arrays of the normalisation sample (the run's events at their MC weights).
MC_PART = "mc"


@dataclass(frozen=True)
class DatasetInfo:
    """A built dataset (`RunLayout.dataset_info(name)`): everything the likelihood batches need."""

    name: str
    kind: str
    events: str  # URI of the events file the dataset's rows are read from
    n_events: int
    weights: str  # "unit" or "asimov" (L * weight at theta)
    theta: list[float] | None  # the parameters the data were made at (None for observed data)
    luminosity: float
    reference: str
    xsec: list[float]
    xsec_var: list[list[list[float]]]
    batch_rows: int
    config_hash: str
    normalization: str = "xsec"  # "mc": sigma(theta, nu) from the run's events (the MC sample), else xsec
    mc_events: str | None = None  # the run's events file (normalization "mc")
    n_mc: int = 0
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The exact source's columns when the simulator's model has several samples (`column_cross_sections`):
    #: {"names", "samples", "owner", "xsec", "xsec_var"}; None: one sample, the columns are the benchmarks.
    columns: dict[str, Any] | None = None

    @property
    def n_data_batches(self) -> int:
        return max(1, math.ceil(self.n_events / self.batch_rows))

    @property
    def n_mc_batches(self) -> int:
        return math.ceil(self.n_mc / self.batch_rows) if self.normalization == "mc" else 0

    @property
    def n_batches(self) -> int:
        """Likelihood batches: the dataset's events, then (normalization "mc") the run's MC events."""
        return self.n_data_batches + self.n_mc_batches

    @property
    def batches(self) -> list[str]:
        """Likelihood batch ids (strings: what the Airflow task maps over)."""
        return [str(i) for i in range(self.n_batches)]

    def batch(self, batch: int) -> tuple[str, int, int, int]:
        """(part: the dataset's name or "mc", index within the part, start row, stop row) of one likelihood
        batch; InputError naming the batch when outside."""
        if not 0 <= batch < self.n_batches:
            raise InputError(f"likelihood batch {batch} is outside the dataset's batches 0..{self.n_batches - 1}")
        if batch < self.n_data_batches:
            return self.name, batch, batch * self.batch_rows, min(self.n_events, (batch + 1) * self.batch_rows)
        k = batch - self.n_data_batches
        return MC_PART, k, k * self.batch_rows, min(self.n_mc, (k + 1) * self.batch_rows)

    def parts(self) -> dict[str, int]:
        """{part name: number of events} of the likelihood files this dataset needs."""
        return {self.name: self.n_events, **({MC_PART: self.n_mc} if self.normalization == "mc" else {})}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetInfo:
        return cls(**data)

    @classmethod
    def load(cls, layout: RunLayout, name: str) -> DatasetInfo:
        uri = layout.dataset_info(name)
        if not storage.exists(uri):
            raise InputError(f"no dataset {name!r} in run {layout.root} ({uri} is missing): run `sbi-core dataset` first")
        return cls.from_json(storage.read_json(uri))


# ---------------------------------------------------------------------------------------------- reading events
def _header(f: Any) -> dict[str, Any]:
    from sbi_core.data.format import decode_names

    return {
        "components": f["morphing/components"][()],
        "matrix": f["morphing/morphing_matrix"][()],
        "observables": decode_names(f["observables/names"]),
        "weight_names": decode_names(f["benchmarks/names"]),
    }


def event_header(uri: str) -> dict[str, Any]:
    """Morphing components and matrix, observable names and weight columns of an events file."""
    import h5py

    with storage.open_for_inspection(uri) as src, h5py.File(src, "r") as f:
        return _header(f)


def _alpha(header: dict[str, Any], theta: np.ndarray) -> np.ndarray:
    from sbi_core.physics.morphing import monomials

    return monomials(np.asarray(theta, dtype=np.float64), header["components"]) @ header["matrix"]


def read_events(info: DatasetInfo, start: int, stop: int, part: str | None = None) -> dict[str, np.ndarray]:
    """Rows [start, stop) of the dataset (or of part "mc": the run's events at their MC weights at the
    reference benchmark): observations (n, O), latent (n, Z), weight (n,)."""
    import h5py

    from sbi_core.data.format import LATENT, OBSERVATIONS, WEIGHTS

    mc = part == MC_PART
    with storage.open_for_inspection(str(info.mc_events) if mc else info.events) as src, h5py.File(src, "r") as f:
        obs = f[OBSERVATIONS][start:stop]
        latent = f[LATENT][start:stop]
        if mc:
            ref = _header(f)["weight_names"].index(info.reference)
            w = f[WEIGHTS][start:stop, ref]
        elif info.weights == "asimov":
            header = _header(f)
            n_b = header["matrix"].shape[1]
            w = info.luminosity * (f[WEIGHTS][start:stop, :n_b] @ _alpha(header, np.asarray(info.theta)))
        else:
            w = np.ones(obs.shape[0])
    return {"observations": obs, "latent": latent, "weight": w}


def fiducial_cross_sections(events_uri: str, cfg: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """(xsec (B,), xsec_var (K, 2, B)) summed over a run's events (see the module doc), streamed."""
    import h5py

    from sbi_core.data.format import WEIGHTS

    n_b, n_k = len(cfg.benchmarks), len(cfg.nuisance)
    ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
    xsec = np.zeros(n_b)
    xsec_var = np.zeros((n_k, 2, n_b))
    with storage.open_for_inspection(events_uri) as src, h5py.File(src, "r") as f:
        ds = f[WEIGHTS]
        if ds.shape[1] != n_b + 2 * n_k:
            raise InputError(f"{events_uri}: samples/weights has {ds.shape[1]} columns, the config needs "
                             f"{n_b} benchmarks + 2 x {n_k} nuisance variations")
        for start in range(0, ds.shape[0], _READ_ROWS):
            w = ds[start : start + _READ_ROWS]
            basis = w[:, :n_b]
            xsec += basis.sum(axis=0)
            w_ref = basis[:, ref]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(w_ref[:, None] != 0, w[:, n_b:] / w_ref[:, None], 1.0).reshape(-1, n_k, 2)
            xsec_var += np.einsum("ib,ikj->kjb", basis, ratio)
    if not (np.all(xsec > 0) and np.all(xsec_var > 0)):
        raise InputError(f"{events_uri}: a fiducial cross section (sum of weights) is not positive: "
                         f"xsec {xsec.tolist()}; the morphing basis or the events are unusable")
    return xsec, xsec_var


def column_cross_sections(events_uri: str, cfg: AnalysisConfig) -> dict[str, Any] | None:
    """The per-sample columns of a simulator with several samples and their fiducial cross sections; None for one.

    Columns: the basis benchmarks of the (one) theta-dependent sample, then one per theta-independent sample
    (named after it). Each event's weight at the sampling benchmark is split by the simulator's
    `sample_fractions(latent)`; a theta-independent sample's weight is the same in every benchmark column, so the
    morphed sample's weight at benchmark b is the column minus theirs. At nu_k = +-1 a column's cross section is
    its weights times the sample's ratio: (1 + size)^+-1 for a normalization nuisance acting on the sample, 1 for
    a nuisance not acting on it, else the event's stored variation ratio (a shape nuisance acts on every sample
    with one joint ratio: the detector; the simulator refuses anything else)."""
    import h5py

    from sbi_core.data.format import LATENT, WEIGHTS
    from sbi_core.physics.registry import make_simulator, simulator_samples

    names, fixed = simulator_samples(cfg)
    if len(names) == 1:
        return None
    morphed = [s for s in names if s not in fixed]
    if len(morphed) != 1:
        raise InputError(f"simulator {cfg.simulator.name!r}: the exact arrays support one theta-dependent sample, "
                         f"got {morphed}")
    sim = make_simulator(cfg)
    n_b, n_k, n_s = len(cfg.benchmarks), len(cfg.nuisance), len(names)
    ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
    mask = np.array([[nu.samples is None or name in nu.samples for name in names] for nu in cfg.nuisance],
                    dtype=bool).reshape(n_k, n_s)
    for k, nu in enumerate(cfg.nuisance):
        if str(nu.kind) != "normalization" and not mask[k].all():
            raise InputError(f"nuisance {nu.name!r}: a {nu.kind} nuisance on some samples only needs per-sample "
                             "event weights, which the events file does not hold")
    owner = np.array([names.index(morphed[0])] * n_b + [names.index(f) for f in fixed])
    fixed_idx = [names.index(f) for f in fixed]
    xsec, xsec_var = np.zeros(owner.size), np.zeros((n_k, 2, owner.size))
    with storage.open_for_inspection(events_uri) as src, h5py.File(src, "r") as f:
        ds, lat = f[WEIGHTS], f[LATENT]
        for start in range(0, ds.shape[0], _READ_ROWS):
            w = ds[start : start + _READ_ROWS]
            w_ref = w[:, ref]
            share = sim.sample_fractions(lat[start : start + _READ_ROWS])  # type: ignore[attr-defined]
            w_fixed = w_ref[:, None] * share[:, fixed_idx]
            cols = np.concatenate([w[:, :n_b] - w_fixed.sum(axis=1, keepdims=True), w_fixed], axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                total = np.where(w_ref[:, None] != 0, w[:, n_b:] / w_ref[:, None], 1.0).reshape(-1, n_k, 2)
            xsec += cols.sum(axis=0)
            for k, nu in enumerate(cfg.nuisance):
                if str(nu.kind) == "normalization":
                    ratio = np.broadcast_to([1.0 + nu.size, 1.0 / (1.0 + nu.size)], (w.shape[0], 2))
                else:
                    ratio = total[:, k]
                xsec_var[k] += (cols.T @ ratio).T * mask[k, owner][None, :]
    for k in range(n_k):
        xsec_var[k][:, ~mask[k, owner]] = xsec[~mask[k, owner]]  # exactly unchanged where the nuisance does not act
    if not (np.all(xsec > 0) and np.all(xsec_var > 0)):
        raise InputError(f"{events_uri}: a column's fiducial cross section is not positive: {xsec.tolist()}")
    return {"names": [*cfg.benchmark_names, *fixed], "samples": list(names), "owner": owner.tolist(),
            "xsec": xsec.tolist(), "xsec_var": xsec_var.tolist()}


# ---------------------------------------------------------------------------------------------- builders
def _truth(cfg: AnalysisConfig) -> np.ndarray:
    missing = [p.name for p in cfg.parameters if p.true_value is None]
    if missing:
        raise InputError(f"inference.dataset.kind {cfg.inference.dataset.kind}: the data are made at the "
                         f"parameters' true values, but parameters {missing} have no true_value")
    return np.array([p.true_value for p in cfg.parameters], dtype=np.float64)


def _events_count(uri: str) -> int:
    import h5py

    from sbi_core.data.format import OBSERVATIONS

    with storage.open_for_inspection(uri) as src, h5py.File(src, "r") as f:
        return int(f[OBSERVATIONS].shape[0])


def _pseudo(layout: RunLayout, cfg: AnalysisConfig, events_uri: str, base: dict[str, Any]) -> DatasetInfo:
    import h5py

    from sbi_core.data.format import SAMPLE_DATASETS, WEIGHTS, copy_header, create_sample_datasets, seal

    inf = cfg.inference
    theta = _truth(cfg)
    header = event_header(events_uri)
    alpha = _alpha(header, theta)
    sigma = float(alpha @ np.asarray(base["xsec"]))
    count_ss, pick_ss = np.random.SeedSequence(inf.dataset.seed).spawn(2)
    n_target = int(np.random.default_rng(count_ss).poisson(inf.luminosity * sigma))
    if n_target == 0:
        raise InputError(f"inference.luminosity {inf.luminosity}: the pseudo-data have 0 events "
                         f"(expected {inf.luminosity * sigma:.3g}); raise the luminosity")
    with storage.open_for_inspection(events_uri) as src, h5py.File(src, "r") as f:
        ds = f[WEIGHTS]
        n_run = int(ds.shape[0])
        w = np.concatenate([ds[s : s + _READ_ROWS, : alpha.size] @ alpha for s in range(0, n_run, _READ_ROWS)])
    w = np.clip(w, 0.0, None)
    rng = np.random.default_rng(pick_ss)
    order = rng.permutation(n_run)
    accepted = order[rng.random(n_run) * w.max() < w[order]]
    if accepted.size < n_target:
        need = math.ceil(n_target * w.max() / max(w.mean(), 1e-300))
        raise InputError(f"run events {events_uri} are too few for pseudo-data at the true values: {n_target} "
                         f"events are needed and accept-reject on the {n_run} run events yields {accepted.size} "
                         f"(acceptance {w.mean() / w.max():.3f}); generate at least ~{need} events or lower "
                         "inference.luminosity")
    rows = np.sort(accepted[:n_target])
    out = layout.dataset("pseudo")
    with storage.open_for_inspection(events_uri) as src, h5py.File(src, "r") as fin, \
            storage.atomic_write(out) as tmp, h5py.File(tmp, "w") as fout:
        copy_header(fin, fout)
        chunk = max(1, min(n_target, 4096))
        create_sample_datasets(fout, {name: fin[name].shape[1] for name in SAMPLE_DATASETS}, n_target, chunk)
        done = 0
        for s in range(0, n_run, _READ_ROWS):
            sel = rows[(rows >= s) & (rows < s + _READ_ROWS)] - s
            if sel.size:
                for name in SAMPLE_DATASETS:
                    fout[name][done : done + sel.size] = fin[name][s : s + _READ_ROWS][sel]
                done += sel.size
        a = fout.attrs
        a["kind"], a["chunk_rows"], a["shards"], a["shard_index"] = "dataset", chunk, np.zeros(0, np.int64), -1
        a["dataset_kind"], a["dataset_seed"], a["dataset_theta"] = "pseudo", inf.dataset.seed, theta
        seal(fout, n_generated=n_target)
    extra = {"expected_events": inf.luminosity * sigma, "pool_events": n_run, "acceptance": float(w.mean() / w.max())}
    return DatasetInfo(**base, name="pseudo", kind="pseudo", events=out, n_events=n_target, weights="unit",
                       theta=theta.tolist(), seed=inf.dataset.seed, extra=extra)


def _asimov(layout: RunLayout, cfg: AnalysisConfig, events_uri: str, base: dict[str, Any]) -> DatasetInfo:
    theta = _truth(cfg)
    sigma = float(_alpha(event_header(events_uri), theta) @ np.asarray(base["xsec"]))
    return DatasetInfo(**base, name="asimov", kind="asimov", events=events_uri, n_events=_events_count(events_uri),
                       weights="asimov", theta=theta.tolist(),
                       extra={"expected_events": cfg.inference.luminosity * sigma})


def _file(layout: RunLayout, cfg: AnalysisConfig, events_uri: str, base: dict[str, Any]) -> DatasetInfo:
    from sbi_core.data.format import inspect_event_file
    from sbi_core.errors import ShardError

    uri = str(cfg.inference.dataset.uri)
    try:
        with storage.open_for_inspection(uri) as src:
            info = inspect_event_file(src, uri)
    except FileNotFoundError:
        raise InputError(f"inference.dataset.uri: events file {uri} not found") from None
    except ShardError as exc:
        raise InputError(f"inference.dataset.uri: {exc.uri} is not a usable events file: {exc.reason}") from None
    observables = event_header(uri)["observables"]
    if observables != cfg.observable_names:
        raise InputError(f"inference.dataset.uri: {uri} holds observables {observables}, the analysis uses "
                         f"{cfg.observable_names}")
    return DatasetInfo(**base, name="file", kind="file", events=uri, n_events=info.n_events, weights="unit",
                       theta=None)


#: One builder per `inference.dataset.kind`.
BUILDERS: dict[str, Callable[[RunLayout, AnalysisConfig, str, dict[str, Any]], DatasetInfo]] = {
    "pseudo": _pseudo,
    "asimov": _asimov,
    "file": _file,
}


def build_dataset(layout: RunLayout, cfg: AnalysisConfig, plan: GenerationPlan) -> DatasetInfo:
    """Build the configured dataset (see the module doc) and return what the step records."""
    from sbi_core.runs import run_events

    events_uri = run_events(layout, plan)
    if not storage.exists(events_uri):
        raise InputError(f"run {layout.root} has no events file {events_uri}: run `sbi-core combine --all` first")
    xsec, xsec_var = fiducial_cross_sections(events_uri, cfg)
    mc = cfg.inference.normalization == "mc"
    base = {
        "normalization": cfg.inference.normalization,
        "mc_events": events_uri if mc else None,
        "n_mc": _events_count(events_uri) if mc else 0,
        "luminosity": cfg.inference.luminosity,
        "reference": cfg.sampling_benchmark,
        "xsec": xsec.tolist(),
        "xsec_var": xsec_var.tolist(),
        "batch_rows": cfg.inference.chunk_rows,
        "config_hash": plan.config_hash,
        "columns": column_cross_sections(events_uri, cfg) if cfg.inference.source == "exact" else None,
    }
    return BUILDERS[cfg.inference.dataset.kind](layout, cfg, events_uri, base)
