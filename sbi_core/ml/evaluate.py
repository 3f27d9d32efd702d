"""Evaluation of trained ensembles, and the learned likelihood arrays of the contract (docs/likelihood-model.md).

What to use when:
- `evaluate_batch(run, batch)` (`sbi-core evaluate --run RUN --batch I`): every usable ensemble on batch I of
  its own test set (log r or score, ensemble spread, labels, the joint ratio, and the exact target when the
  simulator has an exact likelihood), plus the closure families on the batch's nominal test events at
  `closure_thetas(cfg)`; one HDF5 file `RunLayout.evaluation_batch(I)`. Batches and rows follow
  `sbi-core ensemble`'s index (`ensemble.evaluate_batch_slice`).
- `evaluate_report(run)` (`--report`): joins the batches; writes `metrics.json` and PNG plots (training curves,
  calibration, ROC, learned-vs-exact closure scatter per family); logs them to MLflow and registers each
  ensemble with its metrics (`tracking.log_report`, `tracking.log_ensemble`).
- `learned_arrays(layout, cfg, events, xsec, xsec_var)`: the per-event arrays the fit reads, from the
  benchmark_ratio ensembles and the per-variation ensembles (the inference `likelihood` step with
  `inference.source: learned`).
- `morph_benchmark_ratios(...)`: log dsigma(x|theta)/dsigma_ref(x) from per-benchmark ratios (how a
  benchmark_ratio "family" is evaluated at any theta).

Closure families: every parametrised ratio method (its `theta` head, log r(x|theta, ref) evaluated directly),
and `benchmark_ratio` when every non-reference head has an ensemble (morphed at theta). Exact targets come from
`sbi_core.ml.closure` (ratios after cuts); a simulator without an exact likelihood gets every metric but the
closure ones.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.data.likelihood_arrays import LikelihoodArrays
    from sbi_core.ml.closure import ExactTargets, FiducialSums
    from sbi_core.physics.base import Simulator

log = logging.getLogger(__name__)

NOMINAL = "nominal"
BENCHMARK_RATIO = "benchmark_ratio"
BATCH_FORMAT = "sbi-evaluation-batch"
METRICS_FORMAT = "sbi-evaluation-metrics"
#: Bins of the reliability (calibration) curves.
CALIBRATION_BINS = 10


def _ensemble_api() -> Any:
    """The learning stage's ensemble module (a seam: tests may substitute it)."""
    from sbi_core.ml import ensemble

    return ensemble


# ---------------------------------------------------------------------------------------------- shared pieces
def closure_thetas(cfg: AnalysisConfig) -> list[tuple[str, np.ndarray]]:
    """(label, theta) where closure is checked: every non-reference basis benchmark, and the parameters' true
    values when all are set (a point between benchmarks, where morphing does the work)."""
    out = [(name, np.asarray(values, dtype=np.float64)) for name, values
           in zip(cfg.benchmark_names, cfg.benchmark_matrix(), strict=True) if name != cfg.sampling_benchmark]
    if all(p.true_value is not None for p in cfg.parameters):
        out.append(("true", np.array([float(p.true_value) for p in cfg.parameters])))  # type: ignore[arg-type]
    return out


def morph_benchmark_ratios(log_r: np.ndarray, std: np.ndarray, log_xsec: np.ndarray, alpha: np.ndarray,
                           reference: int) -> tuple[np.ndarray, np.ndarray, int]:
    """log sum_b alpha_b s_b(x) with s_b = r_b(x) sigma_b / sigma_ref: the log of dsigma(x|theta)/dsigma_ref(x).

    log_r, std: (n, B) per-benchmark log ratios and ensemble spreads (the reference column is 0); log_xsec (B,)
    log fiducial cross sections; alpha (B,) morphing coefficients at theta. Returns the value (n,), its spread
    by linear propagation (n,), and how many events had a non-positive sum (signed morphing coefficients with
    imperfect ratios), floored at the smallest positive double."""
    n, b = log_r.shape
    if std.shape != (n, b) or log_xsec.shape != (b,) or alpha.shape != (b,):
        raise ValueError(f"morph_benchmark_ratios: log_r {log_r.shape}, std {std.shape}, log_xsec {log_xsec.shape}, "
                         f"alpha {alpha.shape}: expected (n, B), (n, B), (B,), (B,)")
    log_s = log_r + (log_xsec - log_xsec[reference])[None, :]
    top = log_s.max(axis=1, keepdims=True)
    terms = alpha[None, :] * np.exp(log_s - top)
    total = terms.sum(axis=1)
    bad = total <= 0
    total = np.where(bad, np.finfo(np.float64).tiny, total)
    value = top[:, 0] + np.log(total)
    spread = np.sqrt(np.sum((terms / total[:, None]) ** 2 * std**2, axis=1))
    return value, spread, int(bad.sum())


def _fiducial(layout: RunLayout, cfg: AnalysisConfig, sim: Simulator, events_uri: str) -> FiducialSums:
    """The run's fiducial sums, computed once and kept in `evaluation/fiducial.json` (identical on a rerun)."""
    from sbi_core.ml.closure import FiducialSums

    if storage.exists(layout.evaluation_fiducial):
        return FiducialSums.from_json(storage.read_json(layout.evaluation_fiducial))
    sums = FiducialSums.from_events(cfg, sim, events_uri)
    storage.write_json(layout.evaluation_fiducial, sums.to_json())
    return sums


def _read_test_rows(layout: RunLayout, key: tuple[str, str, str], rows: slice | None, n_batches: int,
                    batch: int) -> dict[str, Any]:
    """Rows of batch `batch` of the key's test split: arrays and the has_joint_* flags."""
    import h5py

    uri = layout.training_set(*key, "test")
    try:
        with storage.local_copy(uri) as path, h5py.File(path, "r") as f:
            n = int(f["y"].shape[0])
            sl = rows or _ensemble_api().evaluate_batch_slice(n, n_batches, batch)
            out = {name: f[name][sl].astype(np.float64) for name in ("x", "theta0", "theta1", "y", "log_r_xz", "t_xz")}
            out["has_joint_ratio"] = bool(f.attrs.get("has_joint_ratio", False))
            out["has_joint_score"] = bool(f.attrs.get("has_joint_score", False))
    except FileNotFoundError:
        raise InputError(f"test set {uri} of ensemble {'/'.join(key)} is missing: run `sbi-core sample` "
                         f"--method {key[0]}") from None
    return out


# ---------------------------------------------------------------------------------------------- evaluate --batch
def evaluate_batch(run_uri: str, batch: int) -> dict[str, Any]:
    """Predictions of every usable ensemble on one batch of the test sets, written to evaluation_batch(batch)."""
    import h5py

    from sbi_core import runs
    from sbi_core.ml.closure import ExactTargets
    from sbi_core.physics.registry import make_simulator

    t0 = time.perf_counter()
    layout, cfg, plan = runs.load_run(run_uri)
    api = _ensemble_api()
    keys = api.list_ensembles(layout)
    n_batches = int(storage.read_json(layout.ensembles_index)["evaluate_batches"])
    api.evaluate_batch_slice(0, n_batches, batch)  # range check before any work
    if not keys:
        raise InputError(f"run {layout.root} has no usable ensemble: nothing to evaluate")
    sim = make_simulator(cfg)
    exact = (ExactTargets(cfg, sim, _fiducial(layout, cfg, sim, runs.run_events(layout, plan)))
             if ExactTargets.available_for(cfg, sim) else None)  # no exact likelihood: no closure, no sums needed
    rows = 0
    pool: list[np.ndarray] = []
    with storage.atomic_write(layout.evaluation_batch(batch)) as tmp, h5py.File(tmp, "w") as out:
        out.attrs.update({"format": BATCH_FORMAT, "batch": batch, "n_batches": n_batches,
                          "exact": exact is not None, "config_hash": plan.config_hash})
        for key in keys:
            data = _read_test_rows(layout, key, None, n_batches, batch)
            ensemble = _load(layout, *key)
            group = out.create_group("ensembles/" + "/".join(key))
            _evaluate_ensemble(group, ensemble, key, data, exact)
            rows += data["y"].shape[0]
            if key[2] == NOMINAL:
                pool.append(data["x"])
        x_pool = np.concatenate(pool) if pool else np.empty((0, len(cfg.observables)))
        families = _closure_families(layout, cfg, keys, x_pool, exact, out)
    return {
        "step": "evaluate",
        "run": layout.root,
        "batch": batch,
        "n_batches": n_batches,
        "file": layout.evaluation_batch(batch),
        "ensembles": len(keys),
        "rows": rows,
        "closure_families": families,
        "exact": exact is not None,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _evaluate_ensemble(group: Any, ensemble: Any, key: tuple[str, str, str], data: dict[str, Any],
                       exact: ExactTargets | None) -> None:
    """One ensemble on its own test rows: predictions, spreads, labels, joint targets and exact targets."""
    method, head, variation = key
    x, theta0, theta1 = data["x"], data["theta0"], data["theta1"]
    t_in = theta0 if ensemble.parametrised else None
    group.attrs["members"] = ",".join(ensemble.members)
    group.create_dataset("y", data=data["y"])
    if ensemble.output == "score":
        group.attrs["kind"] = "score"
        mean, std = ensemble.score(x, t_in)
        group.create_dataset("learned", data=mean)
        group.create_dataset("std", data=std)
        if data["has_joint_score"]:
            group.create_dataset("joint", data=data["t_xz"])
        if exact is not None:
            unique = np.unique(theta0, axis=0)
            if unique.shape[0] != 1:
                raise InputError(f"ensemble {'/'.join(key)}: a score test set must have one theta0, has "
                                 f"{unique.shape[0]}")
            group.create_dataset("exact", data=exact.score(x, unique[0]))
        return
    group.attrs["kind"] = "ratio"
    mean, std = ensemble.log_ratio(x, t_in)
    group.create_dataset("learned", data=mean)
    group.create_dataset("std", data=std)
    if data["has_joint_ratio"]:
        group.create_dataset("joint", data=data["log_r_xz"])
    if exact is not None:
        target = (exact.log_ratio(x, theta0, theta1) if variation == NOMINAL
                  else exact.log_ratio_variation(x, variation))
        group.create_dataset("exact", data=target)


def _closure_families(layout: RunLayout, cfg: AnalysisConfig, keys: Sequence[tuple[str, str, str]],
                      x: np.ndarray, exact: ExactTargets | None, out: Any) -> list[str]:
    """Learned and exact log r(x|theta, ref) at closure_thetas on the batch's nominal test events, per family."""
    if exact is None or x.shape[0] == 0:
        return []
    thetas = closure_thetas(cfg)
    ref = exact.reference
    exact_values = np.stack([exact.log_ratio(x, theta, ref) for _, theta in thetas], axis=1)
    families: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    present = set(keys)
    for method, head, variation in keys:
        if variation != NOMINAL or method == BENCHMARK_RATIO:
            continue
        ensemble = _load(layout, method, head, variation)
        if not ensemble.parametrised or ensemble.output == "score":
            continue
        pairs = [ensemble.log_ratio(x, theta) for _, theta in thetas]
        families[method] = (np.stack([p[0] for p in pairs], 1), np.stack([p[1] for p in pairs], 1), 0)
    heads = [b for b in cfg.benchmark_names if b != cfg.sampling_benchmark]
    if all((BENCHMARK_RATIO, b, NOMINAL) in present for b in heads):
        families[BENCHMARK_RATIO] = _morphed_family(layout, cfg, x, exact, thetas)
    for name, (learned, spread, floored) in families.items():
        g = out.create_group(f"closure/{name}")
        g.attrs["floored"] = floored
        g.create_dataset("learned", data=learned)
        g.create_dataset("std", data=spread)
        g.create_dataset("exact", data=exact_values)
    if families:
        out["closure_thetas"] = np.stack([t for _, t in thetas])
        out["closure_thetas"].attrs["labels"] = ",".join(label for label, _ in thetas)
    return sorted(families)


def _morphed_family(layout: RunLayout, cfg: AnalysisConfig, x: np.ndarray, exact: ExactTargets,
                    thetas: Sequence[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, int]:
    """benchmark_ratio at each theta: morph the heads' ratios, then normalise by sigma_fid(theta)/sigma_fid(ref)."""
    log_r, std = _benchmark_ratio_columns(layout, cfg, x)
    ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
    log_xsec = np.log(exact.sums.basis)
    learned, spread, floored = [], [], 0
    for _, theta in thetas:
        value, s, bad = morph_benchmark_ratios(log_r, std, log_xsec, exact.morphing.basis_coefficients(theta), ref)
        learned.append(value - (exact.log_fiducial(theta) - log_xsec[ref]))
        spread.append(s)
        floored += bad
    return np.stack(learned, 1), np.stack(spread, 1), floored


def _member_log_ratio(ensemble: Any, x: np.ndarray, member: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(log r, spread) of the ensemble's mean (member None), or of member `member` alone (spread 0)."""
    return (ensemble if member is None else ensemble.member(member)).log_ratio(x)


def _variation_keys(layout: RunLayout, cfg: AnalysisConfig) -> list[tuple[int, int, tuple[str, str, str]]]:
    """(nuisance k, direction j, ensemble key) of every per-variation network the learned arrays use: at the
    reference, benchmark_ratio's, else the first method in training.methods that has it."""
    available = set(_ensemble_api().list_ensembles(layout))
    out = []
    for k, nuisance in enumerate(cfg.nuisance):
        for j, direction in enumerate(("up", "down")):
            variation = f"{nuisance.name}_{direction}"
            method = next((m for m in (BENCHMARK_RATIO, *cfg.training.methods)
                           if (m, cfg.sampling_benchmark, variation) in available), None)
            if method is not None:
                out.append((k, j, (method, cfg.sampling_benchmark, variation)))
    return out


def learned_members(layout: RunLayout, cfg: AnalysisConfig) -> int:
    """How many members every ensemble the learned arrays use has (member m of the likelihood is member m of each
    of them: the bootstrap fits, `sbi_core/inference/bootstrap.py`)."""
    keys = [(BENCHMARK_RATIO, b, NOMINAL) for b in cfg.benchmark_names if b != cfg.sampling_benchmark]
    keys += [key for _, _, key in _variation_keys(layout, cfg)]
    return min(len(_load(layout, *key).members) for key in keys)


def _benchmark_ratio_columns(layout: RunLayout, cfg: AnalysisConfig, x: np.ndarray,
                             member: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, B) learned log r_b(x) = log p(x|theta_b)/p(x|ref) and spreads (of member `member` alone: spread 0);
    the reference column is 0."""
    n, names = x.shape[0], cfg.benchmark_names
    log_r, std = np.zeros((n, len(names))), np.zeros((n, len(names)))
    for b, name in enumerate(names):
        if name == cfg.sampling_benchmark:
            continue
        try:
            ensemble = _load(layout, BENCHMARK_RATIO, name, NOMINAL)
        except InputError as exc:
            raise InputError(f"learned likelihood ratios need the benchmark_ratio ensemble of benchmark {name!r} "
                             f"(add benchmark_ratio to training.methods and train it): {exc}") from None
        log_r[:, b], std[:, b] = _member_log_ratio(ensemble, x, member)
    return log_r, std


@functools.lru_cache(maxsize=128)
def _load_cached(root: str, method: str, head: str, variation: str) -> Any:
    return _ensemble_api().load_ensemble(RunLayout(root), method, head, variation)


def _load(layout: RunLayout, method: str, head: str, variation: str) -> Any:
    """An ensemble, loaded once per process (learned_arrays is called once per event chunk)."""
    return _load_cached(layout.root, method, head, variation)


# ---------------------------------------------------------------------------------------------- learned arrays
def learned_arrays(layout: RunLayout, cfg: AnalysisConfig, events: Mapping[str, np.ndarray], xsec: np.ndarray,
                   xsec_var: np.ndarray, *, meta: Mapping[str, Any] | None = None,
                   member: int | None = None) -> LikelihoodArrays:
    """The contract's per-event arrays for `events` from the run's learned ensembles (source `learned`).

    events: {"observations": (n, O) float, "weight": (n,) float (the dataset's event weights; the key "weights"
    is accepted too)}; xsec (B,) the fiducial cross sections sigma_b at nu = 0 and xsec_var (K, 2, B) at
    nu_k = +1, -1 (computed by the caller from the run's events, exactly as for the exact source). Then, with ref
    the sampling benchmark:
      log_ratio[i, b]        = log r_b(x_i) + log(sigma_b / sigma_ref)   (r_b: the benchmark_ratio ensemble of b;
                                                                         0 for the reference)
      log_ratio_std[i, b]    = the ensemble's spread of log r_b(x_i)
      log_ratio_var[i, k, j] = log r_kj(x_i) + log(sigma_kj / sigma_ref)
    where r_kj is the per-variation ensemble of nuisance k, direction j (head = the reference; benchmark_ratio's,
    else the first method in training.methods that has it) and sigma_kj / sigma_ref the normalisation of the
    samples it was trained on (`xsec_theta0` / `xsec_theta1` of its training set: for a nuisance that moves
    observables, the share of the reference weight whose moved events still pass the cuts, which differs from
    xsec_var's reweighted estimate by the events migrating into the cuts); without those attributes
    xsec_var[k, j, ref] / sigma_ref. Nuisances without such a network (normalisations, or variations not
    trained) get log r_kj = 0 and the constant log(xsec_var[k, j, ref] / sigma_ref), e.g. log((1 + size)^(+-1))
    for a normalisation. `meta` is added to the arrays' provenance (e.g. the dataset URI). `member` m: every
    ensemble's member m alone instead of the ensemble mean (one bootstrap replica of the likelihood; spread 0).
    """
    from sbi_core.config import config_hash
    from sbi_core.data.likelihood_arrays import LikelihoodArrays
    from sbi_core.physics.morphing import Morphing
    from sbi_core.physics.registry import make_simulator

    x = np.asarray(events["observations"], dtype=np.float64)
    if "weight" not in events and "weights" not in events:
        raise ValueError(f"events: expected keys 'observations' and 'weight', got {sorted(events)}")
    w = np.asarray(events["weight"] if "weight" in events else events["weights"], dtype=np.float64)
    n_b, n_k, n_o = len(cfg.benchmarks), len(cfg.nuisance), len(cfg.observables)
    xs, xv = np.asarray(xsec, dtype=np.float64), np.asarray(xsec_var, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_o:
        raise ValueError(f"events['observations']: expected (n, {n_o}), got {x.shape}")
    if w.shape != (x.shape[0],):
        raise ValueError(f"events['weight']: expected ({x.shape[0]},), got {w.shape}")
    if xs.shape != (n_b,) or xv.shape != (n_k, 2, n_b):
        raise ValueError(f"xsec {xs.shape} / xsec_var {xv.shape}: expected ({n_b},) / ({n_k}, 2, {n_b})")
    if not (np.all(xs > 0) and np.all(xv > 0)):
        raise InputError("learned likelihood arrays: fiducial cross sections must be > 0")
    ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
    log_r, std = _benchmark_ratio_columns(layout, cfg, x, member)
    log_ratio = log_r + (np.log(xs) - np.log(xs[ref]))[None, :]
    log_ratio[:, ref] = 0.0
    log_ratio_var = np.broadcast_to(np.log(xv[:, :, ref] / xs[ref])[None], (x.shape[0], n_k, 2)).copy()
    def members(ensemble: Any) -> str:
        return ",".join(ensemble.members if member is None else ensemble.members[member : member + 1])

    used = {f"benchmark_ratio/{b}": members(_load(layout, BENCHMARK_RATIO, b, NOMINAL))
            for b in cfg.benchmark_names if b != cfg.sampling_benchmark}
    for k, j, key in _variation_keys(layout, cfg):
        ensemble = _load(layout, *key)
        norm = _training_normalisation(layout, key)
        if norm is not None:
            log_ratio_var[:, k, j] = norm  # the normalisation the network was trained with
        log_ratio_var[:, k, j] += _member_log_ratio(ensemble, x, member)[0]
        used[f"{key[0]}/{key[2]}"] = members(ensemble)
    sim = make_simulator(cfg)
    morphing = Morphing(sim.morphing_powers, np.asarray(cfg.benchmark_matrix(), dtype=np.float64))
    # no per-sample networks: a nuisance the config puts on some samples acts here on the summed rate, at its
    # size at the reference (xsec_var's reweighted estimate); recorded so a reader knows
    on_some = [n.name for n in cfg.nuisance if n.samples is not None]
    restricted = {"modifiers_on_total": ",".join(on_some)} if on_some else {}
    return LikelihoodArrays(
        source="learned", parameters=cfg.parameter_names, benchmarks=cfg.benchmark_names,
        benchmark_values=np.asarray(cfg.benchmark_matrix(), dtype=np.float64), reference=cfg.sampling_benchmark,
        morphing_components=np.asarray(sim.morphing_powers, dtype=np.int64), morphing_matrix=morphing.matrix.copy(),
        nuisance=[n.name for n in cfg.nuisance], nuisance_kinds=[str(n.kind) for n in cfg.nuisance],
        nuisance_sizes=np.array([n.size for n in cfg.nuisance], dtype=np.float64), xsec=xs, xsec_var=xv,
        log_ratio=log_ratio, log_ratio_var=log_ratio_var[..., None], weight=w, log_ratio_std=std,
        config_hash=config_hash(cfg), meta={"networks": used, **restricted, **(meta or {})},
    )  # contract version 2 with one sample ("total"): every nuisance acts on the summed rate


def _training_normalisation(layout: RunLayout, key: tuple[str, str, str]) -> float | None:
    """log(xsec_theta0 / xsec_theta1) of a sample set's training split (its y = 0 / y = 1 normalisations), or
    None when the file or the attributes are missing; read once per process."""
    return _training_normalisation_cached(layout.root, *key)


@functools.lru_cache(maxsize=128)
def _training_normalisation_cached(root: str, method: str, head: str, variation: str) -> float | None:
    import h5py

    uri = RunLayout(root).training_set(method, head, variation, "train")
    if not storage.exists(uri):
        return None
    with storage.open_for_inspection(uri) as src, h5py.File(src, "r") as f:
        s0, s1 = f.attrs.get("meta_xsec_theta0"), f.attrs.get("meta_xsec_theta1")
    if s0 is None or s1 is None or not (float(s0) > 0 and float(s1) > 0):
        return None
    return float(np.log(float(s0) / float(s1)))


# ---------------------------------------------------------------------------------------------- evaluate --report
def evaluate_report(run_uri: str) -> dict[str, Any]:
    """Join the batches; write metrics.json and the plots; log them (MLflow) and register the ensembles."""
    from sbi_core import runs, tracking

    t0 = time.perf_counter()
    layout, cfg, _ = runs.load_run(run_uri)
    keys = _ensemble_api().list_ensembles(layout)
    index = storage.read_json(layout.ensembles_index)
    n_batches = int(index["evaluate_batches"])
    joined = _join_batches(layout, n_batches)
    metrics: dict[str, Any] = {"format": METRICS_FORMAT, "run": layout.root, "n_batches": n_batches,
                               "exact": joined["exact"], "ensembles": {}, "closure": {}, "networks": {}}
    cal_groups: dict[str, list[Any]] = {}
    roc_groups: dict[str, list[Any]] = {}
    for name, data in joined["ensembles"].items():
        method, head, variation = name.split("/")
        entry, cal, roc = _ensemble_metrics(data)
        metrics["ensembles"][name] = entry
        if cal is not None:
            cal_curve, roc_curve = _curves(head if variation == NOMINAL else f"{head} {variation}", cal, roc)
            cal_groups.setdefault(method, []).append(cal_curve)
            roc_groups.setdefault(method, []).append(roc_curve)
    closure_panels = {}
    for family, data in joined["closure"].items():
        metrics["closure"][family], closure_panels[family] = _closure_metrics(family, data, joined["labels"],
                                                                               joined["thetas"])
    histories = _histories(layout, cfg)
    metrics["networks"] = _network_metrics(layout, cfg, index)
    plots = _write_plots(layout, histories, cal_groups, roc_groups, closure_panels)
    headline = _headline(metrics)
    metrics["headline"] = headline
    storage.write_json(layout.evaluation_metrics, _jsonable(metrics))
    tracking.log_report(layout, cfg, headline, plots, [layout.evaluation_metrics])
    for method, head, variation in keys:
        entry = metrics["ensembles"].get(f"{method}/{head}/{variation}", {})
        members = storage.read_json(layout.ensemble(method, head, variation)).get("members", [])
        tracking.log_ensemble(layout, cfg, method, head, variation, members,
                              {k: v for k, v in entry.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    return {
        "step": "evaluate",
        "run": layout.root,
        "report": True,
        "plots": layout.evaluation_plots,
        "plot_files": plots,
        "metrics": layout.evaluation_metrics,
        **headline,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _join_batches(layout: RunLayout, n_batches: int) -> dict[str, Any]:
    """Every batch file read back and concatenated per ensemble and closure family; InputError naming a missing one."""
    import h5py

    ensembles: dict[str, dict[str, list[np.ndarray]]] = {}
    attrs: dict[str, dict[str, Any]] = {}
    closure: dict[str, dict[str, list[np.ndarray]]] = {}
    thetas, labels, exact = None, [], False
    for i in range(n_batches):
        uri = layout.evaluation_batch(i)
        try:
            with storage.local_copy(uri) as path, h5py.File(path, "r") as f:
                if f.attrs.get("format") != BATCH_FORMAT or int(f.attrs["n_batches"]) != n_batches:
                    raise InputError(f"{uri}: not a batch of this evaluation (format or batch count differs)")
                exact = bool(f.attrs["exact"])
                for method in f.get("ensembles", {}):
                    for head in f["ensembles"][method]:
                        for variation, g in f["ensembles"][method][head].items():
                            name = f"{method}/{head}/{variation}"
                            attrs[name] = dict(g.attrs)
                            for ds, arr in g.items():
                                ensembles.setdefault(name, {}).setdefault(ds, []).append(arr[()])
                for family, g in f.get("closure", {}).items():
                    for ds, arr in g.items():
                        closure.setdefault(family, {}).setdefault(ds, []).append(arr[()])
                    closure[family].setdefault("floored", []).append(np.array([int(g.attrs["floored"])]))
                if "closure_thetas" in f:
                    thetas = f["closure_thetas"][()]
                    labels = str(f["closure_thetas"].attrs["labels"]).split(",")
        except FileNotFoundError:
            raise InputError(f"evaluation batch {i} is missing ({uri}): run `sbi-core evaluate --batch {i}` "
                             "first") from None
    joined_ens = {name: {**{k: np.concatenate(v) for k, v in d.items()}, "attrs": attrs[name]}
                  for name, d in ensembles.items()}
    joined_cl = {name: {k: np.concatenate(v) for k, v in d.items()} for name, d in closure.items()}
    return {"ensembles": joined_ens, "closure": joined_cl, "thetas": thetas, "labels": labels, "exact": exact}


def _curves(label: str, cal: Any, roc: Any) -> tuple[Any, Any]:
    """The calibration and ROC curves of one ensemble, labelled for the plots."""
    from sbi_core.ml.plots import Curve

    return (Curve(label, cal.predicted, cal.observed, cal.error), Curve(label, roc.fpr, roc.tpr, roc.auc))


def _ensemble_metrics(data: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    """Numbers of one ensemble on its whole test set; calibration and ROC objects for ratio ensembles."""
    from sbi_core.ml import diagnostics

    kind = data["attrs"]["kind"]
    learned, std = data["learned"], data["std"]
    entry: dict[str, Any] = {"kind": kind, "members": str(data["attrs"]["members"]).split(","),
                             "n_test": int(data["y"].shape[0]), "mean_std": float(np.mean(std))}
    if kind == "score":
        if "exact" in data:
            entry["rms_exact"] = [diagnostics.rms(learned[:, k], data["exact"][:, k]) for k in range(learned.shape[1])]
            entry["rms_trivial"] = [diagnostics.trivial_rms(data["exact"][:, k]) for k in range(learned.shape[1])]
        if "joint" in data:
            entry["rms_joint"] = [diagnostics.rms(learned[:, k], data["joint"][:, k]) for k in range(learned.shape[1])]
        return entry, None, None
    roc = diagnostics.roc(learned, data["y"])
    cal = diagnostics.calibration(learned, data["y"], CALIBRATION_BINS)
    entry.update(auc=roc.auc, calibration_error=cal.error)
    if "exact" in data:
        entry.update(rms_exact=diagnostics.rms(learned, data["exact"]), rms_trivial=diagnostics.trivial_rms(data["exact"]),
                     auc_exact=diagnostics.roc(data["exact"], data["y"]).auc)
    if "joint" in data:
        entry["rms_joint"] = diagnostics.rms(learned, data["joint"])
    return entry, cal, roc


def _closure_metrics(family: str, data: dict[str, np.ndarray], labels: list[str],
                     thetas: np.ndarray | None) -> tuple[dict[str, Any], list[Any]]:
    from sbi_core.ml import diagnostics
    from sbi_core.ml.plots import ScatterPanel

    per_theta, panels = {}, []
    for j, label in enumerate(labels):
        learned, exact = data["learned"][:, j], data["exact"][:, j]
        value = diagnostics.rms(learned, exact)
        theta = [] if thetas is None else [float(v) for v in thetas[j]]
        per_theta[label] = {"theta": theta, "rms": value, "rms_trivial": diagnostics.trivial_rms(exact),
                            "mean_std": float(np.mean(data["std"][:, j]))}
        panels.append(ScatterPanel(f"{label} {np.round(theta, 3).tolist()}", exact, learned, value))
    worst = max((v["rms"] for v in per_theta.values()), default=float("nan"))
    entry = {"thetas": per_theta, "max_rms": worst, "n_events": int(data["exact"].shape[0]),
             "floored": int(data.get("floored", np.zeros(1)).sum())}
    return entry, panels


def _histories(layout: RunLayout, cfg: AnalysisConfig) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{ensemble name: {network id: history rows}} for every planned network that has a history.json."""
    from sbi_core.data.training_sets import parse_network_id
    from sbi_core.ml.plan import training_plan

    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for ids in training_plan(cfg)["networks"].values():
        for nid in ids:
            uri = layout.network_file(nid, "history.json")
            if storage.exists(uri):
                spec = parse_network_id(nid)
                rows = storage.read_json(uri)
                out.setdefault(f"{spec.method}/{spec.head}/{spec.variation}", {})[nid] = list(rows)
    return out


def _network_metrics(layout: RunLayout, cfg: AnalysisConfig, index: Mapping[str, Any]) -> dict[str, Any]:
    """Per planned network: status, best validation loss, epochs (from result.json; `missing` without one)."""
    from sbi_core.ml.plan import training_plan

    out: dict[str, Any] = {}
    for ids in training_plan(cfg)["networks"].values():
        for nid in ids:
            uri = layout.network_file(nid, "result.json")
            if not storage.exists(uri):
                out[nid] = {"status": "missing"}
                continue
            r = storage.read_json(uri)
            out[nid] = {k: r.get(k) for k in ("status", "best_val_loss", "best_epoch", "epochs", "error") if k in r}
    return out


def _write_plots(layout: RunLayout, histories: Any, cal_groups: Any, roc_groups: Any,
                 closure_panels: Mapping[str, Sequence[Any]]) -> list[str]:
    from sbi_core.ml import plots

    written = []

    def emit(name: str, draw: Any, *args: Any, **kwargs: Any) -> None:
        uri = layout.evaluation_plot(name)
        with storage.atomic_write(uri) as tmp:
            draw(*args, tmp, **kwargs)
        written.append(uri)

    emit("training-curves", plots.training_curves, histories)
    emit("calibration", plots.calibration_curves, cal_groups)
    emit("roc", plots.roc_curves, roc_groups)
    for family, panels in sorted(closure_panels.items()):
        emit(f"closure-{family}", plots.closure_scatter, panels, suptitle=f"{family}: learned vs exact log r(x|theta, ref)")
    return written


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers the step summary and MLflow carry: worst closure RMS per family, AUC per nominal ensemble,
    network counts."""
    nets = metrics["networks"].values()
    return {
        "closure_max_rms": {f: c["max_rms"] for f, c in metrics["closure"].items()},
        "closure_max_rms_trivial": {f: max(t["rms_trivial"] for t in c["thetas"].values())
                                    for f, c in metrics["closure"].items() if c["thetas"]},
        "auc": {n: e["auc"] for n, e in metrics["ensembles"].items() if "auc" in e and n.endswith("/" + NOMINAL)},
        "max_calibration_error": max((e["calibration_error"] for e in metrics["ensembles"].values()
                                      if "calibration_error" in e), default=float("nan")),
        "n_networks_ok": sum(1 for n in nets if n.get("status") == "ok"),
        "n_networks_failed": sum(1 for n in nets if n.get("status") not in ("ok", "missing")),
        "n_networks_missing": sum(1 for n in nets if n.get("status") == "missing"),
    }


def _jsonable(obj: Any) -> Any:
    """NaN and inf become null (strict JSON); numpy scalars become Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
