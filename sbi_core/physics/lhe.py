"""The `lhe` simulator: events come from Les Houches files (MadGraph5_aMC@NLO, POWHEG, ...), not from a generator.

A config names it like any simulator (`simulator: {name: lhe, options: ...}`; see configs/lhe_example.yaml),
so configure, combine, sample, train and fit treat its runs like any other; `sbi-core ingest-lhe` (not
`generate`) fills the shards, one per input file (`sbi_core.data.ingest`).

Per event (`LHESimulator.convert`):
- weights at the basis benchmarks: the reweighting weight whose id `options.weights` maps to the benchmark
  (`<rwgt><wgt id=...>` or the `<weights>` list, ids from `<initrwgt>`); an event without it gets its
  nominal weight (XWGTUP) at the benchmarks listed in `options.nominal` (the point it was generated at,
  or every benchmark for a process that does not depend on the parameters), and is refused otherwise;
- the detector response (`physics.detector`) on the final-state (status 1) particles, then the config's
  observables (`physics.observables`), cuts, and the implicit selection "every observable is defined";
- latent columns (`options.latent`): `truth` (true final-state particles and the detector noise of each slot:
  enough to observe the same event again at another energy scale), `partons` (x1, x2 and pids of the
  incoming partons), `event` (SCALUP, the process id).
Nuisance parameters: `normalization` (rate x (1 + size)^nu); `shape_weight` from a pair of reweighting ids
(`options.variations`: the event's weight ratio to XWGTUP, e.g. MadGraph's scale or PDF weights);
`observable_scale` as the energy scale of detector objects (`options.energy_scale` names the object types,
default all): it moves observables through `observations_at` (exact, from the `truth` latent columns) and
leaves the event weight unchanged (the weight ratio of a moved event is not defined without a density).
Morphing: quadratic in the parameters (`quadratic_powers`), on the config's benchmarks (`morphing()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from sbi_core import storage
from sbi_core.config_base import ConfigSection, parse_section
from sbi_core.errors import ConfigError, InputError
from sbi_core.physics import observables as obs_lib
from sbi_core.physics.basis import quadratic_morphing_issues
from sbi_core.physics.detector import Detector, DetectorNoise, DetectorOptions
from sbi_core.physics.morphing import Morphing, quadratic_powers
from sbi_core.physics.particles import VISIBLE_TYPES, Particles
from sbi_core.physics.registry import register_simulator

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.physics.base import EventBatch
    from sbi_core.physics.lhe_reader import LHEBatch, LHEHeader

__all__ = ["LHEFileSpec", "LHEOptions", "LHESimulator", "morphing"]

LatentGroup = Literal["truth", "partons", "event"]
_SUPPORTED_NUISANCE = ("normalization", "shape_weight", "observable_scale")


class _Options(ConfigSection):
    """Options of this module: the rules of every config section (`sbi_core.config_base`)."""


class LHEFileSpec(_Options):
    """One input file (one shard of the run)."""

    uri: str = Field(min_length=1, title="URI",
                     description="Local path or s3:// URI of an .lhe or .lhe.gz file; a relative path is relative to "
                                 "the config file's directory.")
    scale: float = Field(default=1.0, gt=0.0, title="Weight scale",
                         description="Multiplies the file's weights after they are normalised to its <init> cross "
                                     "section: a K-factor, or a piece's share of a sample split over several "
                                     "files (0.5 each for two equal halves).")


class ShapeVariation(_Options):
    """The reweighting ids holding an event's weight at nu = +1 and nu = -1 of a shape_weight nuisance."""

    up: str = Field(min_length=1, title="Up id", description="Weight id at nu = +1 (e.g. MadGraph's '1005').")
    down: str = Field(min_length=1, title="Down id", description="Weight id at nu = -1.")


class LHEOptions(_Options):
    """`simulator.options` of the `lhe` simulator (unknown keys are refused)."""

    files: list[LHEFileSpec] = Field(min_length=1, title="Input files",
                                     description="LHE files, plain or gzip; one ingest task and one shard each.")
    weights: dict[str, str] = Field(default_factory=dict, title="Weight ids",
                                    description="Reweighting weight id -> benchmark name.")
    nominal: list[str] = Field(default_factory=list, title="Nominal benchmarks",
                               description="Benchmarks that take the event's nominal weight (XWGTUP) when it has no "
                                           "weight mapped to them: the generation point, or all benchmarks for a "
                                           "process independent of the parameters.")
    variations: dict[str, ShapeVariation] = Field(
        default_factory=dict, title="Shape variations",
        description="shape_weight nuisance name -> the weight ids of its +1 and -1 sigma variations.")
    energy_scale: dict[str, list[str]] = Field(
        default_factory=dict, title="Energy-scale objects",
        description=f"observable_scale nuisance name -> object types it scales (default all: {list(VISIBLE_TYPES)}).")
    detector: DetectorOptions = Field(default_factory=DetectorOptions, title="Detector",
                                      description="Resolution, acceptance and efficiency per object type.")
    max_particles: int = Field(default=8, ge=1, le=64, title="Max final-state particles",
                               description="Slots per event; an event with more final-state particles is refused.")
    latent: list[LatentGroup] = Field(
        default_factory=lambda: ["truth", "partons"], min_length=1, title="Latent columns",
        description="truth: true particles and detector noise (needed by observable_scale nuisances); partons: "
                    "x1, x2 and pids of the incoming partons; event: SCALUP and the process id.")
    part_events: int = Field(default=10_000, ge=1, le=10**6, title="Events per part",
                             description="Events read per atomically written part: a failed or killed ingest "
                                         "resumes after its last complete part.")

    @field_validator("files", mode="before")
    @classmethod
    def _plain_uris(cls, v: Any) -> Any:
        """Accept plain strings for files without options."""
        if isinstance(v, list):
            return [{"uri": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _types(self) -> LHEOptions:
        for name, types in self.energy_scale.items():
            bad = sorted(set(types) - set(VISIBLE_TYPES))
            if bad:
                raise ValueError(f"energy_scale.{name}: unknown object types {bad}; known: {list(VISIBLE_TYPES)}")
        if len(set(self.latent)) != len(self.latent):
            raise ValueError(f"latent: duplicate groups in {self.latent}")
        return self


def _check_files(opts: LHEOptions, files: list[str]) -> None:
    """At configure time: every input file exists, and the weight ids the options map are declared in its
    `<initrwgt>` (a misspelt id would otherwise leave the benchmark at the event weight when it is in `nominal`).
    A file that declares no reweighting ids is accepted only when every benchmark it must fill falls back to the
    nominal weight and no shape variation needs its weights."""
    from sbi_core.physics.lhe_reader import open_lhe

    wanted = {f"simulator.options.weights.{wid}": wid for wid in opts.weights}
    for name, var in opts.variations.items():
        wanted.update({f"simulator.options.variations.{name}.up": var.up,
                       f"simulator.options.variations.{name}.down": var.down})
    for i, uri in enumerate(files):
        if not storage.exists(uri):
            raise InputError(f"simulator.options.files[{i}].uri: LHE file {uri} not found")
        with open_lhe(uri) as stream:
            declared = list(stream.header.weight_ids)
        if declared:
            missing = {field: wid for field, wid in wanted.items() if wid not in declared}
            if missing:
                field, wid = next(iter(missing.items()))
                shown = ", ".join(declared[:12]) + (", ..." if len(declared) > 12 else "")
                raise InputError(f"{field}: weight id {wid!r} is not declared in the <initrwgt> of LHE file {uri} "
                                 f"(it declares {len(declared)}: {shown})")
            continue
        need = sorted({b for b in opts.weights.values() if b not in opts.nominal})
        if need or opts.variations:
            what = f"benchmarks {need} (not in nominal)" if need else f"variations {sorted(opts.variations)}"
            raise InputError(f"simulator.options.files[{i}].uri: LHE file {uri} declares no reweighting weights "
                             f"(no <initrwgt>), but {what} need them")


def options_of(cfg: AnalysisConfig) -> LHEOptions:
    """The validated options of a config that names the lhe simulator (ConfigError naming the field)."""
    opts, issues = parse_section(LHEOptions, cfg.simulator.options, "simulator.options")
    if opts is None:
        raise ConfigError("", issues)
    return opts


def morphing(cfg: AnalysisConfig) -> Morphing:
    """The morphing of an LHE run: quadratic in the parameters, on the config's benchmarks (the ONE place)."""
    return Morphing(quadratic_powers(len(cfg.parameters)), np.asarray(cfg.benchmark_matrix(), dtype=np.float64))


def _latent_names(opts: LHEOptions) -> list[str]:
    names: list[str] = []
    for group in opts.latent:
        if group == "truth":
            m = opts.max_particles
            names += Particles.flat_names(m, "true") + DetectorNoise.flat_names(m, "true")
        elif group == "partons":
            names += ["x1", "x2", "parton1_pid", "parton2_pid"]
        else:
            names += ["scale", "process_id"]
    return names


@dataclass(frozen=True)
class ConvertedBatch:
    """An LHE batch after the detector, observables and cuts: `events` (an EventBatch of the passing events,
    weights in raw LHE units), `passing` (positions in the batch), `nominal_sum` (sum of XWGTUP over ALL
    events of the batch: the normalisation of the file's weights)."""

    events: EventBatch
    passing: np.ndarray
    nominal_sum: float


@register_simulator
class LHESimulator:
    """Events read from LHE files; see the module docstring. `simulate` is refused: run `sbi-core ingest-lhe`."""

    name: ClassVar[str] = "lhe"

    # ------------------------------------------------------------------ config
    @classmethod
    def check_config(cls, cfg: AnalysisConfig) -> list[tuple[str, str]]:
        """Options, observables, nuisance kinds, weight mapping, the morphing basis and the shard count."""
        try:
            opts = options_of(cfg)
        except ConfigError as exc:
            return list(exc.issues)
        issues: list[tuple[str, str]] = quadratic_morphing_issues(cfg, cls.name)
        bnames = cfg.benchmark_names
        for wid, b in opts.weights.items():
            if b not in bnames:
                issues.append((f"simulator.options.weights.{wid}", f"unknown benchmark {b!r} (known: {bnames})"))
        for i, b in enumerate(opts.nominal):
            if b not in bnames:
                issues.append((f"simulator.options.nominal[{i}]", f"unknown benchmark {b!r} (known: {bnames})"))
        targets = [b for b in opts.weights.values()]
        dupes = sorted({b for b in targets if targets.count(b) > 1})
        if dupes:
            issues.append(("simulator.options.weights", f"several weight ids map to benchmarks {dupes}"))
        uncovered = [b for b in bnames if b not in targets and b not in opts.nominal]
        if uncovered:
            issues.append(("simulator.options.weights",
                           f"benchmarks {uncovered} get no weight: map a weight id to them or list them in nominal"))
        for i, o in enumerate(cfg.observables):
            try:
                obs_lib.parse(o.name)
            except obs_lib.UnknownObservable as exc:
                issues.append((f"observables[{i}].name", str(exc)))
        kinds = {n.name: str(n.kind) for n in cfg.nuisance}
        for i, nu in enumerate(cfg.nuisance):
            kind = str(nu.kind)
            if kind not in _SUPPORTED_NUISANCE:
                issues.append((f"nuisance[{i}].kind", f"{kind!r} is not supported by the lhe simulator "
                                                      f"(supported: {list(_SUPPORTED_NUISANCE)})"))
            if kind == "shape_weight" and nu.name not in opts.variations:
                issues.append((f"nuisance[{i}]", f"shape_weight nuisance {nu.name!r} needs "
                                                 f"simulator.options.variations.{nu.name} (up and down weight ids)"))
            if kind == "observable_scale":
                if nu.observables is not None:
                    issues.append((f"nuisance[{i}].observables",
                                   "the lhe simulator scales detector objects, not observables: name the object "
                                   f"types in simulator.options.energy_scale.{nu.name}"))
                if "truth" not in opts.latent:
                    issues.append((f"nuisance[{i}]", "observable_scale needs 'truth' in simulator.options.latent "
                                                     "(the events are observed again from their true particles)"))
        for name in opts.variations:
            if kinds.get(name) != "shape_weight":
                issues.append((f"simulator.options.variations.{name}", "not a shape_weight nuisance of the config"))
        for name in opts.energy_scale:
            if kinds.get(name) != "observable_scale":
                issues.append((f"simulator.options.energy_scale.{name}",
                               "not an observable_scale nuisance of the config"))
        if cfg.generation.shards != len(opts.files):
            issues.append(("generation.shards", f"must equal the number of input files ({len(opts.files)}): "
                                                "each file is one shard"))
        try:
            morphing(cfg)
        except InputError as exc:
            issues.append(("benchmarks", str(exc)))
        return issues

    @classmethod
    def resolve_inputs(cls, cfg: AnalysisConfig, config_uri: str) -> tuple[AnalysisConfig, list[str]]:
        """The config with relative file paths made absolute (relative to the config file), and the input URIs.

        configure calls this for simulators that read files: one shard per input, sizes unknown in advance."""
        from sbi_core.config import validate_config

        opts = options_of(cfg)
        base = config_uri.rsplit("/", 1)[0] if "/" in config_uri else "."
        files = []
        for f in opts.files:
            uri = f.uri
            if not storage.is_remote(uri) and not uri.startswith(("/", "file://", "~")):
                uri = storage.join(storage.normalize(base) if not storage.is_remote(base) else base, uri)
            files.append(uri)
        data = cfg.model_dump(mode="json")
        data["simulator"]["options"]["files"] = [
            {**spec.model_dump(mode="json"), "uri": uri} for spec, uri in zip(opts.files, files, strict=True)
        ]
        _check_files(opts, files)
        return validate_config(data, config_uri), files

    def __init__(self, cfg: AnalysisConfig) -> None:
        issues = self.check_config(cfg)
        if issues:
            raise ConfigError(f"simulator {self.name!r}", issues)
        self.cfg = cfg
        self.options = opts = options_of(cfg)
        self.detector = Detector(opts.detector)
        self._morphing = morphing(cfg)
        self._observables = cfg.observable_names
        bnames = cfg.benchmark_names
        # Weight ids to read: the benchmark ids first (config benchmark order), then the variations'.
        by_benchmark = {b: wid for wid, b in opts.weights.items()}
        self._bench_ids = [by_benchmark.get(b) for b in bnames]
        self._nominal = np.array([b in opts.nominal for b in bnames])
        self._var_ids = [(opts.variations[n.name].up, opts.variations[n.name].down)
                         if str(n.kind) == "shape_weight" else None for n in cfg.nuisance]
        ids = [w for w in self._bench_ids if w is not None]
        ids += [w for pair in self._var_ids if pair for w in pair if w not in ids]
        self.weight_ids = list(dict.fromkeys(ids))
        self._scale_types = {n.name: opts.energy_scale.get(n.name, list(VISIBLE_TYPES))
                             for n in cfg.nuisance if str(n.kind) == "observable_scale"}

    # ------------------------------------------------------------------ contract properties
    @property
    def latent_names(self) -> list[str]:
        return _latent_names(self.options)

    @property
    def morphing_powers(self) -> np.ndarray:
        return self._morphing.powers.copy()

    # ------------------------------------------------------------------ conversion of read events
    def convert(self, batch: LHEBatch, header: LHEHeader, rng: np.random.Generator) -> ConvertedBatch:
        """Detector, observables, cuts and weights of one LHE batch of the file `header` describes; InputError
        naming the file and the event when an event lacks a weight the mapping needs."""
        from sbi_core.physics.base import EventBatch
        from sbi_core.physics.cuts import cut_mask

        n = len(batch)
        col = {w: j for j, w in enumerate(self.weight_ids)}
        noise = self.detector.draw_noise(batch.particles, rng)
        reco = self.detector.respond(batch.particles, noise)
        x = obs_lib.compute(self._observables, reco)
        with np.errstate(invalid="ignore"):
            passing = np.flatnonzero(cut_mask(self.cfg, x) & obs_lib.finite_mask(x))
        weights = np.empty((n, len(self._bench_ids)))
        for b, wid in enumerate(self._bench_ids):
            w = batch.weights[:, col[wid]] if wid is not None else np.full(n, np.nan)
            weights[:, b] = np.where(np.isnan(w) & self._nominal[b], batch.nominal, w)
        nuis = np.ones((n, len(self.cfg.nuisance), 2))
        for k, nu in enumerate(self.cfg.nuisance):
            kind = str(nu.kind)
            if kind == "normalization":
                nuis[:, k, 0], nuis[:, k, 1] = 1.0 + nu.size, 1.0 / (1.0 + nu.size)
            elif kind == "shape_weight":
                up, down = self._var_ids[k]  # type: ignore[misc]
                with np.errstate(divide="ignore", invalid="ignore"):
                    nuis[:, k, 0] = batch.weights[:, col[up]] / batch.nominal
                    nuis[:, k, 1] = batch.weights[:, col[down]] / batch.nominal
        sel_w, sel_n = weights[passing], nuis[passing]
        bad = ~np.isfinite(sel_w).all(axis=1) | ~np.isfinite(sel_n).all(axis=(1, 2))
        if bad.any():
            i = int(passing[np.flatnonzero(bad)[0]])
            lacking = [b for b in range(weights.shape[1]) if not np.isfinite(weights[i, b])]
            if lacking:
                what = ", ".join(f"{self.cfg.benchmark_names[b]} (id {self._bench_ids[b]!r})" for b in lacking)
                why = f"no weight for benchmarks {what}"
            else:
                why = self._variation_problem(batch, i, col)
            raise InputError(f"LHE file {header.uri}, event {batch.first_event + i + 1}: {why}")
        latent = self._latent(batch, header, noise)
        events = EventBatch(np.ascontiguousarray(x[passing]), np.ascontiguousarray(latent[passing]),
                            np.ascontiguousarray(sel_w), np.ascontiguousarray(sel_n))
        return ConvertedBatch(events, passing, float(batch.nominal.sum()))

    def _variation_problem(self, batch: LHEBatch, i: int, col: dict[str, int]) -> str:
        """Which variation weight of event i is missing (its id and nuisance), or that XWGTUP is 0."""
        if batch.nominal[i] == 0:
            return "XWGTUP is 0: no shape-variation weight ratio can be formed"
        for nu, ids in zip(self.cfg.nuisance, self._var_ids, strict=True):
            for side, wid in zip(("up", "down"), ids or (), strict=False):
                if not np.isfinite(batch.weights[i, col[wid]]):
                    return (f"no weight with id {wid!r} (simulator.options.variations.{nu.name}.{side}) in this "
                            "event")
        return "a non-finite shape-variation weight"

    def _latent(self, batch: LHEBatch, header: LHEHeader, noise: DetectorNoise) -> np.ndarray:
        cols: list[np.ndarray] = []
        for group in self.options.latent:
            if group == "truth":
                cols += [batch.particles.flat(), noise.flat()]
            elif group == "partons":
                beams = np.array(header.beam_energies)
                x = batch.incoming.p4[..., 0] / np.where(beams > 0, beams, np.inf)  # massless partons: E = x E_beam
                cols += [x, batch.incoming.pid.astype(np.float64)]
            else:
                cols += [batch.scale[:, None], batch.process_id[:, None].astype(np.float64)]
        n = len(batch)
        return np.concatenate(cols, axis=1) if cols else np.empty((n, 0))

    # ------------------------------------------------------------------ the Simulator protocol
    def observations_at(self, observations: np.ndarray, latent: np.ndarray, nu: np.ndarray) -> np.ndarray:
        """The same events at nuisance values nu: observable_scale nuisances scale the energies of their object
        types by (1 + size * nu) before the detector's acceptance; the events are observed again from their
        `truth` latent columns with their own detector noise (exact). Objects lost at nu make NaN observables."""
        x = np.asarray(observations, dtype=np.float64)
        z = np.asarray(latent, dtype=np.float64)
        names = self.latent_names
        if x.ndim != 2 or x.shape[1] != len(self._observables) or z.shape != (x.shape[0], len(names)):
            raise ValueError(f"observations_at: expected observations (n, {len(self._observables)}) and latent "
                             f"(n, {len(names)}), got {x.shape} and {z.shape}")
        nu = np.asarray(nu, dtype=np.float64)
        if nu.shape != (len(self.cfg.nuisance),):
            raise ValueError(f"nu: expected shape ({len(self.cfg.nuisance)},), got {nu.shape}")
        factors = dict.fromkeys(VISIBLE_TYPES, 1.0)
        moved = False
        for k, n in enumerate(self.cfg.nuisance):
            if str(n.kind) == "observable_scale" and nu[k] != 0.0:
                moved = True
                for t in self._scale_types[n.name]:
                    factors[t] *= 1.0 + n.size * nu[k]
        if not moved:
            return x.copy()
        m = self.options.max_particles
        start = names.index("true0_pid")
        truth = Particles.from_flat(z[:, start : start + 5 * m])
        noise = DetectorNoise.from_flat(z[:, start + 5 * m : start + 7 * m])
        return obs_lib.compute(self._observables, self.detector.respond(truth, noise, scale=factors))

    def simulate(self, n: int, rng: np.random.Generator) -> EventBatch:
        raise InputError("the lhe simulator reads events from files: run `sbi-core ingest-lhe`, not `generate`")

    def cross_section(self, theta: np.ndarray) -> float:
        raise NotImplementedError("lhe: the cross section is the sum of the weights (morphed to theta)")

    def joint_log_likelihood(self, x: np.ndarray, z: np.ndarray, theta: np.ndarray,
                             nu: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError("lhe: joint quantities come from the event weights through morphing")

    def joint_score(self, x: np.ndarray, z: np.ndarray, theta: np.ndarray) -> np.ndarray:
        raise NotImplementedError("lhe: joint quantities come from the event weights through morphing")

    def log_likelihood(self, x: np.ndarray, theta: np.ndarray, nu: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError("lhe: no exact likelihood")
