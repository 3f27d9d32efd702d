"""`sbi-core sample --run RUN --method M`: the augmented training, validation and test sets of a method.

Order of work (why nothing half-written appears and memory stays bounded):
1. check the run, the method and the events file's header; plan every set's rows: (theta0, theta1, y) and
   which weighted pool (split x hypothesis) each row is drawn from, all from the set's own random stream
   SeedSequence(training.seed, method, head, variation, split);
2. pass 1 over the events in chunks of `training.samples.chunk_rows`: every pool's total weight, the
   fiducial totals (basis weights, and per variation the basis weights times its per-event factor);
3. pass 2 over the same chunks: the unweighted draws (`sbi_core.ml.unweighting`), keeping only the chosen
   rows; the joint ratio and score of each row from its basis weights (`sbi_core.ml.joint`);
4. write every split file atomically, then the method's manifest (last: its presence means "sampled").

Splits are disjoint by event: each event of the file belongs to train, val or test by a hash of its row
index and training.seed (fractions proportional to the samples asked of each), the same for every method,
so no test event is ever trained on. Draws are with replacement within a split.

Hypotheses: weights at theta come from the basis columns through morphing (any simulator, any LHE file).
Per-variation sets at the reference (see docs/training-sets.md): a weight-type shape nuisance (shape_weight)
reweights with its `<k>_up`/`<k>_down` weight column; a nuisance that moves observables (observable_scale)
takes the same events' observations from `Simulator.observations_at(x, z, nu)` and applies the config's cuts
to the moved observations. Approximation: events that the cuts removed at generation and that the variation
would move *into* the selection are missing, so the varied sample lacks that migration (measured for the
shipped config at the SM on 40k events without cuts: 0.33% of the fiducial rate at nu = -1, none at nu = +1,
where events only migrate out, which the cuts on the moved observations handle). Their joint ratio is not
computable from weights: `log_r_xz` is NaN and the file says `has_joint_ratio = false`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core import storage
from sbi_core.data.training_sets import (
    BENCHMARK_METHODS,
    LOCAL_METHODS,
    MANIFEST_FORMAT,
    SPLITS,
    SampleSpec,
    TrainingSet,
    sample_specs,
    shape_variations,
    write_training_set,
)
from sbi_core.errors import InputError
from sbi_core.ml.joint import MorphedWeights, joint_log_ratio, joint_score, weights_at
from sbi_core.ml.options import KNOWN_METHODS
from sbi_core.ml.unweighting import Unweighter, split_labels

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.layout import RunLayout

log = logging.getLogger(__name__)
#: Pools evaluated at once per chunk: bounds the (chunk rows x pools) weight matrix.
POOL_BLOCK = 32
#: Tag of the event-split stream (the split depends on training.seed only, not on the method).
_SPLIT_TAG = "event-split"


def stream_code(name: str) -> int:
    """A stable 64-bit integer for a name (method, head, variation), for SeedSequence entropy."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def set_rng(seed: int, spec: SampleSpec, split: str) -> np.random.Generator:
    """The random stream of one set and split: SeedSequence(training.seed, method, head, variation, split)."""
    entropy = [seed, stream_code(spec.method), stream_code(spec.head), stream_code(spec.variation),
               SPLITS.index(split)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def split_sizes(cfg: AnalysisConfig) -> dict[str, int]:
    """Rows per split of every set: train and val share training.samples.train, test is its own."""
    s = cfg.training.samples
    n_val = max(1, round(s.train * s.validation_fraction))
    return {"train": s.train - n_val, "val": n_val, "test": s.test}


def event_split(cfg: AnalysisConfig, rows: np.ndarray) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) of each event row: disjoint, proportional to the rows asked. With
    `validation_events: shared` no event is a validation event: the validation rows are drawn from the training
    events (`pool_split`), so training draws from more events (MadMiner's validation split of its samples)."""
    sizes = split_sizes(cfg)
    if cfg.training.samples.validation_events == "shared":
        sizes = {"train": sizes["train"] + sizes["val"], "val": 0, "test": sizes["test"]}
    total = sum(sizes.values())
    key = stream_code(f"{_SPLIT_TAG}-{cfg.training.seed}")
    return split_labels(rows, key, tuple(sizes[s] / total for s in SPLITS))


def pool_split(cfg: AnalysisConfig, split: str) -> int:
    """The event split a set's rows are drawn from: its own, or the training events for validation rows when
    `validation_events` is shared."""
    shared = split == "val" and cfg.training.samples.validation_events == "shared"
    return SPLITS.index("train") if shared else SPLITS.index(split)


# ------------------------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class Variation:
    """One direction of a shape systematic, as the sampler applies it."""

    name: str  # <nuisance>_up / _down
    nuisance: str
    sign: int
    moves_observables: bool  # observable_scale: observations_at; else the weight column
    column: int  # its column in samples/weights
    nu: np.ndarray  # (N,) nuisance values: sign on this nuisance, 0 elsewhere


class EventModel:
    """What the sampler needs from an events file and the config: columns, morphing, variations, cuts."""

    def __init__(self, cfg: AnalysisConfig, header: dict[str, Any]) -> None:
        from sbi_core.physics.morphing import Morphing

        self.cfg = cfg
        self.n_basis = len(cfg.benchmarks)
        names = header["benchmarks"]
        if names[: self.n_basis] != cfg.benchmark_names:
            raise InputError(f"events file benchmarks {names[: self.n_basis]} differ from the config's "
                             f"{cfg.benchmark_names}")
        if header["observables"] != cfg.observable_names:
            raise InputError(f"events file observables {header['observables']} differ from the config's "
                             f"{cfg.observable_names}")
        self.columns = names
        self.ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
        basis = np.asarray(header["benchmark_values"][: self.n_basis], dtype=np.float64)
        self.morph = MorphedWeights(Morphing(header["components"], basis))
        self.theta_ref = basis[self.ref].copy()
        nuisance = [n.name for n in cfg.nuisance]
        kinds = {n.name: str(n.kind) for n in cfg.nuisance}
        self.variations = []
        for name, nu_name, sign in shape_variations(cfg):
            nu = np.zeros(len(nuisance))
            nu[nuisance.index(nu_name)] = sign
            self.variations.append(Variation(name, nu_name, sign, kinds[nu_name] == "observable_scale",
                                             names.index(name), nu))
        self._sim = None

    def variation(self, name: str) -> Variation:
        return next(v for v in self.variations if v.name == name)

    def moved_observations(self, x: np.ndarray, z: np.ndarray, v: Variation) -> np.ndarray:
        """The events' observations at the variation's nu (Simulator.observations_at)."""
        if self._sim is None:
            from sbi_core.physics.registry import make_simulator

            self._sim = make_simulator(self.cfg)
        try:
            moved = self._sim.observations_at(x, z, v.nu)
        except NotImplementedError:
            raise InputError(f"nuisance {v.nuisance!r} (observable_scale) needs simulator "
                             f"{self.cfg.simulator.name!r} to provide observations_at") from None
        if moved.shape != x.shape:
            raise ValueError(f"observations_at returned {moved.shape}, expected {x.shape}")
        return moved

    def factor(self, v: Variation, w: np.ndarray, moved: np.ndarray | None = None) -> np.ndarray:
        """Per-event factor of the variation at the reference: its weight ratio, or for observables that move,
        the 1/0 cut mask of the moved observations `moved`."""
        from sbi_core.physics.cuts import cut_mask

        if v.moves_observables:
            if moved is None:
                raise ValueError(f"variation {v.name}: the moved observations are needed")
            return cut_mask(self.cfg, moved).astype(np.float64)
        ref = w[:, self.ref]
        return np.divide(w[:, v.column], ref, out=np.zeros_like(ref), where=ref != 0.0)


# ------------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Pool:
    """A weighted population draws come from: one split's events at one hypothesis."""

    split: int
    hypothesis: tuple  # ("theta", theta values) or ("variation", name)
    coef: np.ndarray  # (n_columns,) weight = samples/weights @ coef (times the cut mask if moved)
    moved: str | None  # variation name whose moved observations (and cut mask) the pool uses


@dataclass
class SetPlan:
    """The rows of one set and split, before the draws: hypotheses, labels and where each row is drawn."""

    spec: SampleSpec
    split: str
    theta0: np.ndarray
    theta1: np.ndarray
    y: np.ndarray
    pools: np.ndarray  # (n,) pool index per row
    positions: np.ndarray  # (n,) index of the row's draw within its pool's results


class _Pools:
    def __init__(self, model: EventModel) -> None:
        self.model = model
        self.items: list[Pool] = []
        self._index: dict[tuple, int] = {}

    def get(self, split: int, hypothesis: tuple) -> int:
        key = (split, hypothesis)
        if key not in self._index:
            m = self.model
            coef = np.zeros(len(m.columns))
            moved = None
            if hypothesis[0] == "theta":
                coef[: m.n_basis] = m.morph.alpha(np.asarray([hypothesis[1]]))[0]
            else:
                v = m.variation(hypothesis[1])
                if v.moves_observables:
                    coef[m.ref], moved = 1.0, v.name
                else:
                    coef[v.column] = 1.0
            self._index[key] = len(self.items)
            self.items.append(Pool(split, hypothesis, coef, moved))
        return self._index[key]


def _theta_key(theta: np.ndarray) -> tuple:
    return ("theta", tuple(float(t) for t in theta))


def _theta_fixed(cfg: AnalysisConfig, model: EventModel) -> np.ndarray:
    fixed = cfg.training.samples.theta_fixed
    return model.theta_ref.copy() if fixed is None else np.array([fixed[p] for p in cfg.parameter_names])


def _prior_points(cfg: AnalysisConfig, rng: np.random.Generator) -> np.ndarray:
    """n_thetas points drawn uniformly over the parameter ranges."""
    lo = np.array([p.range[0] for p in cfg.parameters])
    hi = np.array([p.range[1] for p in cfg.parameters])
    return lo + (hi - lo) * rng.random((cfg.training.samples.n_thetas, lo.size))


def _spread(points: np.ndarray, n: int) -> np.ndarray:
    """n rows shared as evenly as possible over the points, in point order: (n, P)."""
    per = np.full(points.shape[0], n // points.shape[0])
    per[: n % points.shape[0]] += 1
    return np.repeat(points, per, axis=0)


def _hypotheses(cfg: AnalysisConfig, model: EventModel, spec: SampleSpec, n: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Unshuffled theta0 (n, P), y (n,) and each row's pool hypothesis: per theta0 point half the rows at theta0
    (y = 0) and half at the reference (y = 1); local methods draw every row at theta0 (= theta1). With
    `pairing: independent` (theta0: prior) the y = 1 half takes its own prior points, as MadMiner does."""
    ref = model.theta_ref
    if spec.is_variation:
        points, numerator = ref[None, :], ("variation", spec.variation)
    elif spec.method in LOCAL_METHODS:
        points, numerator = _theta_fixed(cfg, model)[None, :], None
    elif spec.method in BENCHMARK_METHODS:
        points, numerator = model.morph.basis[[cfg.benchmark_names.index(spec.head)]], None
    else:
        mode, numerator = cfg.training.samples.theta0, None
        points = {"prior": lambda: _prior_points(cfg, rng), "benchmarks": lambda: model.morph.basis.copy(),
                  "fixed": lambda: _theta_fixed(cfg, model)[None, :]}[mode]()
        if mode == "prior" and cfg.training.samples.pairing == "independent":
            n0 = (n + 1) // 2
            theta0 = np.vstack([_spread(points, n0), _spread(_prior_points(cfg, rng), n - n0)])
            keys = [_theta_key(t) for t in theta0[:n0]] + [_theta_key(ref)] * (n - n0)
            return theta0, np.r_[np.zeros(n0), np.ones(n - n0)], keys
    theta0 = _spread(points, n)
    if spec.method in LOCAL_METHODS and not spec.is_variation:
        return theta0, np.zeros(n), [_theta_key(t) for t in theta0]
    y = np.zeros(n)
    keys: list[tuple] = []
    starts = np.r_[0, np.flatnonzero(np.any(theta0[1:] != theta0[:-1], axis=1)) + 1, n]
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
        n0 = (b - a + 1) // 2
        y[a + n0: b] = 1.0
        keys += [numerator or _theta_key(theta0[a])] * n0 + [_theta_key(ref)] * (b - a - n0)
    return theta0, y, keys


def plan_rows(cfg: AnalysisConfig, model: EventModel, spec: SampleSpec, split: str, n: int,
              pools: _Pools) -> tuple[SetPlan, np.ndarray]:
    """Hypotheses and labels of one set's rows, and the uniforms of their draws, from the set's own stream."""
    rng = set_rng(cfg.training.seed, spec, split)
    theta0, y, keys = _hypotheses(cfg, model, spec, n, rng)
    local = spec.method in LOCAL_METHODS and not spec.is_variation
    theta1 = theta0.copy() if local else np.repeat(model.theta_ref[None, :], n, axis=0)
    order = rng.permutation(n)
    theta0, theta1, y = theta0[order], theta1[order], y[order]
    s = pool_split(cfg, split)
    pool_ids = np.array([pools.get(s, keys[i]) for i in order.tolist()], dtype=np.int64)
    u = rng.random(n)
    return SetPlan(spec, split, theta0, theta1, y, pool_ids, np.full(n, -1, dtype=np.int64)), u


def request_draws(plan: SetPlan, u: np.ndarray, unweighter: Unweighter) -> None:
    """Register a planned set's draws with the unweighter; record where each row's draw lands."""
    for p in np.unique(plan.pools).tolist():
        rows = np.flatnonzero(plan.pools == p)
        offset = unweighter.request(p, u[rows])
        plan.positions[rows] = offset + np.arange(rows.size)


# ------------------------------------------------------------------------------------------------ the passes
@dataclass
class Totals:
    """Fiducial totals from pass 1: every weight column, and per variation the basis weights x its factor."""

    columns: np.ndarray
    variations: dict[str, np.ndarray]


def _chunks(path: Any, chunk_rows: int, need_latent: bool):
    import h5py

    from sbi_core.data.format import LATENT, OBSERVATIONS, WEIGHTS

    with h5py.File(path, "r") as f:
        n = int(f[OBSERVATIONS].shape[0])
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            z = f[LATENT][start:stop] if need_latent else None
            yield start, f[OBSERVATIONS][start:stop], f[WEIGHTS][start:stop], z


def _run_passes(path: Any, model: EventModel, pools: list[Pool], unweighter: Unweighter) -> tuple[Totals, dict]:
    cfg = model.cfg
    chunk_rows = cfg.training.samples.chunk_rows
    need_latent = any(v.moves_observables for v in model.variations)
    ncols = len(model.columns)
    totals = Totals(np.zeros(ncols), {v.name: np.zeros(model.n_basis) for v in model.variations})
    coefs = np.stack([p.coef for p in pools], axis=1) if pools else np.zeros((ncols, 0))
    by_split = [[i for i, p in enumerate(pools) if p.split == s] for s in range(len(SPLITS))]
    gathered: dict[int, dict[str, np.ndarray]] = {}
    for phase in (1, 2):
        if phase == 2:
            unweighter.start_selection()
            n_obs = len(cfg.observables)
            gathered = {p: {"x": np.empty((len(unweighter.events[p]), n_obs)),
                            "w": np.empty((len(unweighter.events[p]), ncols))} for p in range(len(pools))}
        for start, x, w, z in _chunks(path, chunk_rows, need_latent):
            rows = np.arange(start, start + x.shape[0])
            labels = event_split(cfg, rows)
            moved = {v.name: model.moved_observations(x, z, v) for v in model.variations if v.moves_observables}
            factors = {v.name: model.factor(v, w, moved.get(v.name)) for v in model.variations}
            if phase == 1:
                totals.columns = np.cumsum(np.vstack([totals.columns[None, :], w]), axis=0)[-1]
                for v in model.variations:
                    wv = w[:, : model.n_basis] * factors[v.name][:, None]
                    totals.variations[v.name] = np.cumsum(np.vstack([totals.variations[v.name][None, :], wv]),
                                                          axis=0)[-1]
            for s, members in enumerate(by_split):
                sel = np.flatnonzero(labels == s)
                if sel.size == 0 or not members:
                    continue
                ws, xs = w[sel], x[sel]
                moved_s = {name: xm[sel] for name, xm in moved.items()}
                for b in range(0, len(members), POOL_BLOCK):
                    block = np.array(members[b: b + POOL_BLOCK], dtype=np.int64)
                    wp = weights_at(ws, coefs[:, block])
                    for j, p in enumerate(block.tolist()):
                        if pools[p].moved is not None:
                            wp[:, j] = wp[:, j] * factors[pools[p].moved][sel]
                    if phase == 1:
                        unweighter.accumulate(block, wp)
                        continue
                    for p, positions, local in unweighter.select(block, wp, rows[sel]):
                        src = moved_s[pools[p].moved] if pools[p].moved is not None else xs
                        gathered[p]["x"][positions] = src[local]
                        gathered[p]["w"][positions] = ws[local]
        if phase == 1:
            _check_pools(cfg, pools, unweighter)
    unweighter.finish()
    return totals, gathered


def _check_pools(cfg: AnalysisConfig, pools: list[Pool], unweighter: Unweighter) -> None:
    for i, p in enumerate(pools):
        if not unweighter.total[i] > 0:
            what = p.hypothesis[1] if p.hypothesis[0] == "variation" else dict(zip(cfg.parameter_names,
                                                                                  p.hypothesis[1], strict=True))
            raise InputError(f"split {SPLITS[p.split]} has no event with a positive weight at {what}: "
                             "generate more events or lower training.samples")
        if unweighter.negative[i] > 1e-3 * unweighter.total[i]:
            log.warning("split %s, hypothesis %s: negative morphed weights (%.3g of the positive total) count "
                        "as zero", SPLITS[p.split], p.hypothesis, unweighter.negative[i] / unweighter.total[i])


# ------------------------------------------------------------------------------------------------ the sets
def build_set(plan: SetPlan, model: EventModel, totals: Totals, unweighter: Unweighter,
              gathered: dict, ess: np.ndarray, *, config_hash: str) -> TrainingSet:
    """The rows of one planned set: observations, weights and events of its draws, joint ratio and score."""
    cfg = model.cfg
    n = plan.y.shape[0]
    n_cols = len(model.columns)
    x = np.empty((n, len(cfg.observables)))
    w = np.empty((n, n_cols))
    event = np.empty(n, dtype=np.int64)
    for p in np.unique(plan.pools).tolist():
        rows = np.flatnonzero(plan.pools == p)
        pos = plan.positions[rows]
        x[rows], w[rows], event[rows] = gathered[p]["x"][pos], gathered[p]["w"][pos], unweighter.events[p][pos]
    wb = w[:, : model.n_basis]
    sigma_nominal = totals.columns[: model.n_basis]
    variation = model.variation(plan.spec.variation) if plan.spec.is_variation else None
    numerator_totals = sigma_nominal if variation is None else totals.variations[variation.name]
    alpha0, alpha1 = model.morph.alpha(plan.theta0), model.morph.alpha(plan.theta1)
    sigma0, sigma1 = alpha0 @ numerator_totals, alpha1 @ sigma_nominal
    has_ratio = variation is None or not variation.moves_observables
    if has_ratio:
        factor = None if variation is None else model.factor(variation, w)
        log_r = joint_log_ratio(wb, alpha0, sigma0, alpha1, sigma1, factor)
    else:
        log_r = np.full(n, np.nan)
    t_xz = joint_score(wb, alpha0, model.morph.alpha_gradient(plan.theta0), numerator_totals)
    attrs: dict[str, Any] = {"theta0_mode": _theta0_mode(cfg, plan.spec), "reference": cfg.sampling_benchmark,
                             "effective_events": int(ess[np.unique(plan.pools)].min()),
                             "unique_events": int(np.unique(event).size)}
    if np.all(plan.theta0 == plan.theta0[0]):
        attrs["xsec_theta0"] = float(sigma0[0])
    if np.all(plan.theta1 == plan.theta1[0]):
        attrs["xsec_theta1"] = float(sigma1[0])
    f4 = np.float32
    return TrainingSet(
        x=x.astype(f4), theta0=plan.theta0.astype(f4), theta1=plan.theta1.astype(f4), y=plan.y.astype(f4),
        log_r_xz=log_r.astype(f4), t_xz=t_xz.astype(f4), event=event, method=plan.spec.method,
        head=plan.spec.head, variation=plan.spec.variation, split=plan.split, seed=cfg.training.seed,
        config_hash=config_hash, observables=tuple(cfg.observable_names), parameters=tuple(cfg.parameter_names),
        has_joint_ratio=has_ratio, has_joint_score=True, attrs=attrs,
    )


def _theta0_mode(cfg: AnalysisConfig, spec: SampleSpec) -> str:
    if spec.is_variation:
        return "reference"
    if spec.method in LOCAL_METHODS:
        return "fixed"
    if spec.method in BENCHMARK_METHODS:
        return "benchmark"
    return cfg.training.samples.theta0


def _header(path: Any) -> dict[str, Any]:
    import h5py

    from sbi_core.data.format import decode_names

    with h5py.File(path, "r") as f:
        return {
            "benchmarks": decode_names(f["benchmarks/names"]),
            "benchmark_values": f["benchmarks/values"][()],
            "components": f["morphing/components"][()],
            "observables": decode_names(f["observables/names"]),
        }


def sample_sets(cfg: AnalysisConfig, events_path: Any, method: str, *, config_hash: str
                ) -> tuple[dict[tuple[SampleSpec, str], TrainingSet], dict[str, Any]]:
    """Every (set, split) of a method from a local events file, in memory; and pass statistics."""
    model = EventModel(cfg, _header(events_path))
    pools = _Pools(model)
    sizes = split_sizes(cfg)
    planned = [plan_rows(cfg, model, spec, split, sizes[split], pools)
               for spec in sample_specs(method, cfg) for split in SPLITS]
    unweighter = Unweighter(len(pools.items))
    for plan, u in planned:
        request_draws(plan, u, unweighter)
    totals, gathered = _run_passes(events_path, model, pools.items, unweighter)
    ess = unweighter.effective_events()
    sets = {(p.spec, p.split): build_set(p, model, totals, unweighter, gathered, ess, config_hash=config_hash)
            for p, _ in planned}
    stats = {
        "min_effective_events": int(unweighter.effective_events().min()) if pools.items else 0,
        "negative_weight_fraction": float(np.max(unweighter.negative / unweighter.total)) if pools.items else 0.0,
        "fiducial_xsec": {b: float(totals.columns[i]) for i, b in enumerate(cfg.benchmark_names)},
    }
    return sets, stats


# ------------------------------------------------------------------------------------------------ the step
def sample(run_uri: str, method: str) -> dict[str, Any]:
    """Write every split of every set of `method` for a combined (or derived) run, then its manifest."""
    from sbi_core import runs
    from sbi_core.data.format import inspect_event_file
    from sbi_core.ml.plan import training_plan

    t0 = time.perf_counter()
    if method not in KNOWN_METHODS:
        raise InputError(f"--method {method!r} is not an estimator (known: {list(KNOWN_METHODS)})")
    layout, cfg, plan = runs.load_run(run_uri)
    if method not in cfg.training.methods:
        raise InputError(f"--method {method!r} is not in training.methods {cfg.training.methods} of run "
                         f"{layout.root}: derive a run with --set training.methods=[...] to add it")
    events_uri = runs.run_events(layout, plan)
    if not storage.exists(events_uri):
        raise InputError(f"run {layout.root} has no events file {events_uri}: run `sbi-core combine --all` first")
    with storage.local_copy(events_uri) as path:
        inspect_event_file(path, events_uri, config_hash=plan.config_hash)
        sets, stats = sample_sets(cfg, path, method, config_hash=plan.config_hash)
    files: dict[str, dict[str, str]] = {}
    for (spec, split), ts in sets.items():
        uri = layout.training_set(spec.method, spec.head, spec.variation, split)
        with storage.atomic_write(uri) as tmp:
            write_training_set(tmp, ts)
        files.setdefault(f"{spec.head}/{spec.variation}", {})[split] = uri
    networks = training_plan(cfg)["networks"][method]
    sizes = split_sizes(cfg)
    _write_manifest(layout, cfg, method, files, networks, sizes, stats, events_uri, plan.config_hash)
    log.info("sample %s: %d sets x %s rows, %d networks", method, len(files), sizes, len(networks))
    return {
        "step": "sample",
        "run": layout.root,
        "method": method,
        "networks": networks,
        "files": files,
        "manifest": layout.samples_manifest(method),
        "n_train": sizes["train"],
        "n_val": sizes["val"],
        "n_test": sizes["test"],
        "epochs": cfg.training.optimizer.epochs,  # with n_train, what a network's training costs (the fan-out plan)
        "min_effective_events": stats["min_effective_events"],
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _write_manifest(layout: RunLayout, cfg: AnalysisConfig, method: str, files: dict, networks: list[str],
                    sizes: dict[str, int], stats: dict, events_uri: str, config_hash: str) -> None:
    specs = sample_specs(method, cfg)
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "method": method,
        "reference": cfg.sampling_benchmark,
        "config_hash": config_hash,
        "seed": cfg.training.seed,
        "members": cfg.training.members,
        "heads": [s.head for s in specs if not s.is_variation],
        "variations": [s.variation for s in specs if s.is_variation],
        "sets": [{"head": s.head, "variation": s.variation, "networks": s.network_ids(cfg.training.members),
                  "files": files[f"{s.head}/{s.variation}"]} for s in specs],
        "networks": networks,
        "rows": sizes,
        "events": events_uri,
        "min_effective_events": stats["min_effective_events"],
        "negative_weight_fraction": _round(stats["negative_weight_fraction"]),
        "fiducial_xsec": {k: _round(v) for k, v in stats["fiducial_xsec"].items()},
    }
    storage.write_json(layout.samples_manifest(method), manifest)


def _round(value: float) -> float:
    return float(f"{value:.12g}") if math.isfinite(value) else value
