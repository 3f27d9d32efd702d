"""Read a MadMiner 0.9.6 event file (after MadMiner's `combine_and_shuffle`) into a run of this pipeline.

`sbi-core import-madminer --file URI --run RUN` (the step is `sbi_core.steps.import_madminer`) lets a MadMiner
user bring their events without simulating again: this module reads and checks the file (`read_madminer`), turns
its header into an analysis config naming the `madminer` simulator (`analysis_dict`), and writes the run's events
file (`write_events`). Order of work, so that a bad file leaves nothing behind: every group is checked and one
pass over the events counts, checks and summarises them before anything is written; then setup.h5, events.h5,
config.yaml and plan.json (last) are written atomically.

What is carried, and how (docs/data-format.md, "Importing a MadMiner file"):
- parameters (names, val_ranges; true values default to the reference benchmark's), the physics benchmarks
  that form the morphing basis, MadMiner's morphing components (checked: the morphing matrix must be the one
  they and the benchmarks give), observables (their MadMiner definitions kept as descriptions);
- weights times MadMiner's sampling factor n_b / n_signal of each event's sampling benchmark (1 for
  backgrounds), which is how MadMiner's own readers normalise a file combined from several sampling benchmarks;
- each nuisance parameter with a +1 benchmark: `normalization` when its weight ratio to the reference is the
  same constant c > 1 for every event (and its -1 benchmark, if any, 1 / c), size c - 1; `shape_weight`
  otherwise. A nuisance with only a +1 benchmark gets the -1 column of MadMiner's own model (exp(-a) with
  a = log(w+ / w_ref), clipped to +-10 as MadMiner does);
- the event's MadMiner sampling benchmark id as its one latent column.
Refused (exit 2, naming the HDF5 group): missing or malformed groups, no events, no morphing (finite
differences only), several morphing bases, a matrix that does not match, non-finite weights, a reference
benchmark outside the basis, nuisance parameters without a +1 benchmark. Events with a non-finite observable
are dropped (our files hold no NaN) and counted; physics benchmarks outside the basis are dropped and named.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from sbi_core.errors import InputError

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.plan import GenerationPlan

__all__ = ["MadMinerFile", "analysis_dict", "read_madminer", "write_events"]

log = logging.getLogger(__name__)
#: Rows read at once from the MadMiner file.
CHUNK_ROWS = 65536
#: MadMiner clips the nuisance coefficients a(x), b(x) to this (`sanitize_array` in its NuisanceMorpher).
MADMINER_CLIP = 10.0
_CONSTANT = 1e-9  # relative spread below which a nuisance's weight ratio counts as one number


def _bad(uri: str, group: str, message: str) -> InputError:
    return InputError(f"MadMiner file {uri}: {group}: {message}")


def _names(f: h5py.File, key: str, uri: str) -> list[str]:
    try:
        return [b.decode("ascii") if isinstance(b, bytes) else str(b) for b in np.atleast_1d(f[key][()])]
    except KeyError:
        raise _bad(uri, key, "missing") from None
    except (UnicodeDecodeError, OSError, TypeError) as exc:
        raise _bad(uri, key, f"unreadable names ({exc})") from None


def _array(f: h5py.File, key: str, uri: str, ndim: int, dtype: Any = np.float64) -> np.ndarray:
    try:
        a = np.asarray(f[key][()], dtype=dtype)
    except KeyError:
        raise _bad(uri, key, "missing") from None
    except (OSError, TypeError, ValueError) as exc:
        raise _bad(uri, key, f"unreadable ({exc})") from None
    if a.ndim != ndim:
        raise _bad(uri, key, f"expected {ndim} dimension(s), got shape {a.shape}")
    return a


@dataclass(frozen=True)
class Nuisance:
    """A MadMiner nuisance parameter as imported: its columns (in the file), kind and size."""

    name: str
    systematic: str
    positive: int
    negative: int | None
    kind: str = "shape_weight"
    size: float = 1.0


@dataclass
class MadMinerFile:
    """A checked MadMiner event file: its header and what the pass over its events found."""

    uri: str
    parameters: list[str]
    ranges: np.ndarray  # (P, 2)
    benchmarks: list[str]  # every benchmark, file order
    values: np.ndarray  # (B_all, P)
    physics: list[int]  # positions of the physics (not nuisance) benchmarks: MadMiner's sampling ids index them
    basis: list[int]  # positions of the morphing basis benchmarks (the first physics ones)
    reference: int  # position of the reference (our sampling benchmark)
    components: np.ndarray  # (C, P)
    observables: list[str]
    definitions: list[str]
    nuisance: list[Nuisance]
    n_events: int
    sampling_factors: np.ndarray  # (B_phys + 1,): per sampling id, the last for backgrounds (-1)
    has_ids: bool
    kept: int = 0
    dropped_nonfinite: int = 0
    dropped_benchmarks: list[str] = field(default_factory=list)
    unused_benchmarks: list[str] = field(default_factory=list)
    systematics: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ reading
def _header(f: h5py.File, uri: str) -> MadMinerFile:
    params = _names(f, "parameters/names", uri)
    ranges = _array(f, "parameters/val_ranges", uri, 2)
    if ranges.shape != (len(params), 2) or not np.all(np.isfinite(ranges)) or np.any(ranges[:, 0] >= ranges[:, 1]):
        raise _bad(uri, "parameters/val_ranges", f"expected finite [low, high] with low < high per parameter, got "
                                                 f"{ranges.tolist()}")
    names = _names(f, "benchmarks/names", uri)
    values = _array(f, "benchmarks/values", uri, 2)
    if values.shape != (len(names), len(params)):
        raise _bad(uri, "benchmarks/values", f"shape {values.shape}, expected ({len(names)}, {len(params)})")
    nuis_flags = _flags(f, "benchmarks/is_nuisance", len(names), uri)
    ref_flags = _flags(f, "benchmarks/is_reference", len(names), uri)
    if "morphing" not in f:
        raise _bad(uri, "morphing", "missing: the file has no morphing setup (finite differences only?); the "
                                    "pipeline morphs between basis benchmarks")
    components = _array(f, "morphing/components", uri, 2, np.int64)
    matrix = _array(f, "morphing/morphing_matrix", uri, 2)
    physics = [i for i in range(len(names)) if not nuis_flags[i]]
    if components.shape[1:] != (len(params),) or matrix.shape[0] != components.shape[0]:
        raise _bad(uri, "morphing/components", f"shape {components.shape} with a matrix {matrix.shape} and "
                                               f"{len(params)} parameters")
    if matrix.shape[1] != components.shape[0] or len(physics) < matrix.shape[1]:
        raise _bad(uri, "morphing/morphing_matrix", f"shape {matrix.shape}: the pipeline morphs with one basis of "
                                                    f"{components.shape[0]} benchmarks (MadMiner n_bases > 1?)")
    basis = physics[: matrix.shape[1]]
    _check_matrix(uri, components, values[basis], matrix)
    refs = [i for i in range(len(names)) if ref_flags[i]]
    observables = _names(f, "observables/names", uri)
    definitions = _names(f, "observables/definitions", uri) if "observables/definitions" in f else []
    return MadMinerFile(
        uri=uri, parameters=params, ranges=ranges, benchmarks=names, values=values, physics=physics, basis=basis,
        reference=refs[0] if refs else -1, components=components, observables=observables,
        definitions=definitions if len(definitions) == len(observables) else ["None"] * len(observables),
        nuisance=_nuisance(f, names, uri), n_events=0, sampling_factors=np.ones(1), has_ids=False,
        dropped_benchmarks=[names[i] for i in physics[matrix.shape[1]:]], systematics=_systematics(f, uri))


def _flags(f: h5py.File, key: str, n: int, uri: str) -> np.ndarray:
    if key not in f:
        return np.zeros(n, dtype=bool)
    flags = _array(f, key, uri, 1).astype(bool)
    if flags.shape != (n,):
        raise _bad(uri, key, f"{flags.shape[0]} flags for {n} benchmarks")
    return flags


def _check_matrix(uri: str, components: np.ndarray, basis: np.ndarray, matrix: np.ndarray) -> None:
    from sbi_core.physics.morphing import Morphing

    try:
        ours = Morphing(components, basis).matrix
    except (InputError, ValueError) as exc:
        raise _bad(uri, "morphing/components", f"no morphing with these benchmarks ({exc})") from None
    if not np.allclose(ours, matrix, rtol=1e-6, atol=1e-9 * float(np.abs(ours).max())):
        raise _bad(uri, "morphing/morphing_matrix", "differs from the inverse of the basis benchmarks' monomials "
                                                    "(components and benchmark values do not give this matrix)")


def _nuisance(f: h5py.File, benchmarks: list[str], uri: str) -> list[Nuisance]:
    if "nuisance_parameters" not in f:
        return []
    names = _names(f, "nuisance_parameters/names", uri)
    systematics = _names(f, "nuisance_parameters/systematics", uri) if "nuisance_parameters/systematics" in f \
        else names
    pos = _names(f, "nuisance_parameters/benchmark_positive", uri)
    neg = _names(f, "nuisance_parameters/benchmark_negative", uri)
    if not len(names) == len(systematics) == len(pos) == len(neg):
        raise _bad(uri, "nuisance_parameters", "names, systematics and benchmarks differ in length")
    out = []
    for name, syst, p, n in zip(names, systematics, pos, neg, strict=True):
        if p in ("None", ""):
            raise _bad(uri, "nuisance_parameters/benchmark_positive", f"nuisance parameter {name!r} has no +1 "
                                                                      "benchmark (MadMiner cannot morph it either)")
        for b in (p, n):
            if b not in ("None", "") and b not in benchmarks:
                raise _bad(uri, "nuisance_parameters", f"nuisance parameter {name!r} names benchmark {b!r}, "
                                                       "which benchmarks/names lacks")
        out.append(Nuisance(name, syst, benchmarks.index(p), None if n in ("None", "") else benchmarks.index(n)))
    return out


def _systematics(f: h5py.File, uri: str) -> dict[str, str]:
    """Systematic name -> MadMiner type (norm, scale, pdf), for the record."""
    if "systematics/names" not in f or "systematics/types" not in f:
        return {}
    return dict(zip(_names(f, "systematics/names", uri), _names(f, "systematics/types", uri), strict=False))


def _chunks(f: h5py.File, uri: str, n: int, ids: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(start, observations, weights, sampling ids) per chunk of CHUNK_ROWS events."""
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        try:
            x = np.asarray(f["samples/observations"][start:stop], dtype=np.float64)
            w = np.asarray(f["samples/weights"][start:stop], dtype=np.float64)
            s = np.asarray(f["samples/sampling_benchmarks"][start:stop], dtype=np.int64) if ids \
                else np.full(stop - start, -2, dtype=np.int64)
        except (OSError, ValueError) as exc:
            raise _bad(uri, "samples", f"unreadable rows {start}..{stop} ({exc})") from None
        yield start, x, w, s


def read_madminer(path: Path | str, uri: str) -> MadMinerFile:
    """Check every group of a MadMiner event file and pass once over its events; InputError naming the group."""
    try:
        with h5py.File(path, "r") as f:
            mm = _header(f, uri)
            _scan_events(f, mm)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"MadMiner file {uri}: not a readable HDF5 file ({exc})") from None
    return mm


def _scan_events(f: h5py.File, mm: MadMinerFile) -> None:
    """Shapes, sampling factors, dropped rows, non-finite weights and each nuisance's kind, in one pass."""
    uri = mm.uri
    for key in ("samples/observations", "samples/weights"):
        if key not in f:
            raise _bad(uri, key, "missing: the file holds no events (a setup file? run MadMiner's LHEReader or "
                                 "DelphesReader, then combine_and_shuffle)")
    shape_x, shape_w = f["samples/observations"].shape, f["samples/weights"].shape
    n = shape_x[0] if len(shape_x) == 2 else -1
    if len(shape_x) != 2 or shape_x[1] != len(mm.observables) or n < 1:
        raise _bad(uri, "samples/observations", f"shape {shape_x}, expected (n >= 1, {len(mm.observables)})")
    if shape_w != (n, len(mm.benchmarks)):
        raise _bad(uri, "samples/weights", f"shape {shape_w}, expected ({n}, {len(mm.benchmarks)})")
    mm.n_events = n
    mm.has_ids = "samples/sampling_benchmarks" in f and f["samples/sampling_benchmarks"].shape == (n,)
    n_phys = len(mm.physics)
    ratios = [[np.inf, -np.inf, np.inf, -np.inf] for _ in mm.nuisance]  # min/max of up, then of up x down
    counts = np.zeros(n_phys + 1, dtype=np.int64)
    for start, x, w, s in _chunks(f, uri, n, mm.has_ids):
        keep = np.isfinite(x).all(axis=1)
        mm.dropped_nonfinite += int(np.count_nonzero(~keep))
        if not np.isfinite(w[keep]).all():
            row = start + int(np.flatnonzero(keep & ~np.isfinite(w).all(axis=1))[0])
            raise _bad(uri, "samples/weights", f"event {row} has a non-finite weight")
        if mm.has_ids:
            if np.any((s < -1) | (s >= n_phys)):
                raise _bad(uri, "samples/sampling_benchmarks", f"ids outside -1..{n_phys - 1}")
            counts += np.bincount(np.where(s < 0, n_phys, s), minlength=n_phys + 1)
        _nuisance_ratios(mm, w[keep], ratios)
    mm.kept = n - mm.dropped_nonfinite
    if mm.kept < 1:
        raise _bad(uri, "samples/observations", "no event has finite observables")
    mm.sampling_factors = _sampling_factors(f, mm, counts, n_phys)
    _choose_reference(mm, counts)
    mm.nuisance = [_kind(nu, r) for nu, r in zip(mm.nuisance, ratios, strict=True)]
    used = {nu.positive for nu in mm.nuisance} | {nu.negative for nu in mm.nuisance if nu.negative is not None}
    mm.unused_benchmarks = [b for i, b in enumerate(mm.benchmarks) if i not in mm.physics and i not in used]


def _nuisance_ratios(mm: MadMinerFile, w: np.ndarray, ratios: list[list[float]]) -> None:
    ref = w[:, mm.reference] if mm.reference >= 0 else w[:, mm.basis[0]]
    ok = ref > 0
    for nu, r in zip(mm.nuisance, ratios, strict=True):
        up = w[ok, nu.positive] / ref[ok]
        prod = up * (w[ok, nu.negative] / ref[ok]) if nu.negative is not None else np.ones_like(up)
        if up.size:
            r[0], r[1] = min(r[0], float(up.min())), max(r[1], float(up.max()))
            r[2], r[3] = min(r[2], float(prod.min())), max(r[3], float(prod.max()))


def _kind(nu: Nuisance, r: list[float]) -> Nuisance:
    """normalization when the +1 ratio is one constant c in (1, 2] (and the -1 ratio 1 / c), else shape_weight."""
    lo, hi, plo, phi = r
    constant = np.isfinite(lo) and hi - lo <= _CONSTANT * abs(hi) and abs(plo - 1) <= _CONSTANT \
        and abs(phi - 1) <= _CONSTANT
    if constant and 1.0 < hi <= 2.0:
        return Nuisance(nu.name, nu.systematic, nu.positive, nu.negative, "normalization", float(hi - 1.0))
    size = float(np.clip(max(abs(hi - 1.0), abs(lo - 1.0)) if np.isfinite(lo) else 1.0, 1e-6, 1.0))
    return Nuisance(nu.name, nu.systematic, nu.positive, nu.negative, "shape_weight", size)


def _sampling_factors(f: h5py.File, mm: MadMinerFile, counts: np.ndarray, n_phys: int) -> np.ndarray:
    """MadMiner's factor per sampling id (DataAnalyzer._calculate_sampling_factors): signal events of the id over
    all signal events, from sample_summary (as MadMiner reads it) or else the ids' counts; 1 for backgrounds."""
    if not mm.has_ids:
        return np.ones(n_phys + 1)
    signal = counts[:n_phys].astype(np.float64)
    if "sample_summary/signal_events" in f:
        summary = np.atleast_1d(np.asarray(f["sample_summary/signal_events"][()], dtype=np.float64))
        if summary.shape == (n_phys,) and summary.sum() > 0:
            if not np.array_equal(summary, signal):
                log.warning("MadMiner file %s: sample_summary/signal_events %s differs from the events' sampling "
                            "ids %s; using the summary, as MadMiner does", mm.uri, summary.tolist(), signal.tolist())
            signal = summary
    if signal.sum() <= 0 and counts[:n_phys].sum() > 0:
        raise _bad(mm.uri, "sample_summary/signal_events", "no signal events, but events have signal sampling ids")
    return np.r_[signal / max(signal.sum(), 1.0), 1.0]


def _choose_reference(mm: MadMinerFile, counts: np.ndarray) -> None:
    """The sampling benchmark of the run: MadMiner's reference, else the basis benchmark most events were drawn
    at, else the first one. The reference must be in the basis (nuisance weights are rescaled to it)."""
    if mm.reference >= 0:
        if mm.reference not in mm.basis:
            raise _bad(mm.uri, "benchmarks/is_reference", f"reference {mm.benchmarks[mm.reference]!r} is not one of "
                                                          "the morphing basis benchmarks")
        return
    if mm.nuisance:
        raise _bad(mm.uri, "benchmarks/is_reference", "no reference benchmark, but nuisance parameters (their "
                                                      "weights are relative to the reference)")
    n_basis = len(mm.basis)  # the basis is the first physics benchmarks: ids 0 .. n_basis - 1
    mm.reference = mm.basis[int(np.argmax(counts[:n_basis]))] if counts[:n_basis].sum() else mm.basis[0]


# ------------------------------------------------------------------------------------------------ the config
def identifiers(names: list[str], taken: set[str] | None = None) -> list[str]:
    """Names made identifiers (other characters -> _, a leading digit prefixed), unique among themselves and
    `taken`."""
    seen = set(taken or ())
    out = []
    for name in names:
        base = re.sub(r"\W", "_", name, flags=re.ASCII) or "_"
        base = f"_{base}" if base[0].isdigit() else base
        base = base[:60]
        cand, k = base, 2
        while cand in seen:
            cand, k = f"{base}_{k}", k + 1
        seen.add(cand)
        out.append(cand)
    return out


def analysis_dict(mm: MadMinerFile, run_uri: str) -> dict[str, Any]:
    """The analysis config of the imported run (plain dict; the step validates it and applies --set)."""
    params = identifiers(mm.parameters)
    bench = identifiers([mm.benchmarks[i] for i in mm.basis])
    obs = identifiers(mm.observables)
    nuis = identifiers([n.name for n in mm.nuisance], set(params))
    renamed = {ours: theirs for ours, theirs in zip(params + bench + obs + nuis, mm.parameters
               + [mm.benchmarks[i] for i in mm.basis] + mm.observables + [n.name for n in mm.nuisance], strict=True)
               if ours != theirs}
    ref = mm.values[mm.reference]
    powers = mm.components
    return {
        "name": f"madminer import of {mm.uri.rsplit('/', 1)[-1]}",
        "description": f"Events imported from the MadMiner file {mm.uri} by sbi-core import-madminer.",
        "parameters": [{"name": p, "range": [float(lo), float(hi)], "description": f"MadMiner parameter {orig}",
                        "true_value": float(t) if lo <= t <= hi else None}
                       for p, orig, (lo, hi), t in zip(params, mm.parameters, mm.ranges, ref, strict=True)],
        "benchmarks": [{"name": b, "values": {p: float(v) for p, v in zip(params, mm.values[i], strict=True)}}
                       for b, i in zip(bench, mm.basis, strict=True)],
        "observables": [{"name": o, "description": f"MadMiner observable {orig}: {d}"[:500]}
                        for o, orig, d in zip(obs, mm.observables, mm.definitions, strict=True)],
        "nuisance": [{"name": n, "kind": nu.kind, "size": round(nu.size, 12)} for n, nu in zip(nuis, mm.nuisance,
                                                                                                 strict=True)],
        "simulator": {"name": "madminer", "options": {
            "file": mm.uri, "components": powers.tolist(), "renamed": renamed,
            "definitions": {o: d for o, d in zip(obs, mm.definitions, strict=True) if d not in ("None", "")}}},
        "morphing": {"max_power": {p: int(powers[:, k].max()) for k, p in enumerate(params)},
                     "max_overall_power": int(powers.sum(axis=1).max()), "basis": "given"},
        "generation": {"events": mm.kept, "shards": 1, "shards_per_group": 1, "seed": 0,
                       "sampling_benchmark": bench[mm.basis.index(mm.reference)]},
        "output": run_uri,
        "inference": {"source": "learned"},
    }


# ------------------------------------------------------------------------------------------------ the events
def _batch(mm: MadMinerFile, x: np.ndarray, w: np.ndarray, s: np.ndarray) -> Any:
    """Our EventBatch of one chunk's kept events: basis weights x sampling factor, nuisance ratios."""
    from sbi_core.physics.base import EventBatch

    keep = np.isfinite(x).all(axis=1)
    x, w, s = x[keep], w[keep], s[keep]
    ref = w[:, mm.reference]
    ratios = np.ones((x.shape[0], len(mm.nuisance), 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, nu in enumerate(mm.nuisance):
            ratios[:, k, 0] = np.where(ref != 0, w[:, nu.positive] / ref, 1.0)
            if nu.negative is not None:
                ratios[:, k, 1] = np.where(ref != 0, w[:, nu.negative] / ref, 1.0)
            else:  # MadMiner's model of a one-sided nuisance: w(nu) / w(0) = exp(a nu), a clipped
                a = np.clip(np.log(np.where(ref > 0, ratios[:, k, 0], 1.0)), -MADMINER_CLIP, MADMINER_CLIP)
                ratios[:, k, 1] = np.exp(-a)
    weights = w[:, mm.basis]
    if mm.has_ids:  # MadMiner's sampling factor of each event's sampling benchmark (the last entry: backgrounds)
        weights = weights * mm.sampling_factors[np.where(s < 0, len(mm.sampling_factors) - 1, s)][:, None]
    latent = s.astype(np.float64)[:, None] if mm.has_ids else np.full((x.shape[0], 1), -1.0)
    return EventBatch(np.ascontiguousarray(x), latent, np.ascontiguousarray(weights), ratios)


def write_events(path: Path | str, mm: MadMinerFile, cfg: AnalysisConfig, plan: GenerationPlan, out: Path,
                 header: dict[str, Any]) -> None:
    """Write the run's events file at the local path `out` from the MadMiner file at `path` (streamed)."""
    from sbi_core.data.format import LATENT, OBSERVATIONS, WEIGHTS, EventFileWriter, weight_columns

    widths = {OBSERVATIONS: len(cfg.observables), WEIGHTS: len(weight_columns(cfg)), LATENT: 1}
    writer = EventFileWriter(out, cfg, chunk_rows=plan.chunk_rows, widths=widths, n_rows=mm.kept, header=header)
    with h5py.File(path, "r") as f:
        for _, x, w, s in _chunks(f, mm.uri, mm.n_events, mm.has_ids):
            writer.append(_batch(mm, x, w, s), 1.0)
    writer.close(mm.n_events)
