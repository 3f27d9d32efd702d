"""The per-event likelihood arrays: the contract between learning (evaluate writes) and inference (the fit reads).

Version 2 (`sbi-likelihood`, docs/likelihood-model.md is the reference a reader is written from): the model is
a sum of named *samples*, as in HistFactory. Each column b of the per-event arrays belongs to one sample
(`benchmark_sample[b]`) and has a morphing weight w_b(theta) = monomials(theta) @ morphing_matrix[:, b] (a
basis benchmark of a morphed sample, or the constant 1 for a theta-independent sample such as a background).
Every nuisance parameter k modifies the samples its row of `modifier_mask` (K, S) names, with per-sample
ratios; per event i:

    log_ratio[i, b]           = log dsigma_b(x_i) / dsigma_ref(x_i)       (ref: one fixed reference rate)
    log_ratio_var[i, k, j, s] = log dsigma_s(x_i | nu_k = +1 (j=0) / -1 (j=1)) / dsigma_s(x_i | nu = 0)
    weight[i]                 = the event's weight in the dataset (1 for observed data)

plus, per column, the fiducial cross sections `xsec` (B,) and `xsec_var` (K, 2, B), and per nuisance its
auxiliary datum `aux` (K,) (the global observable of its Gaussian constraint: 0 for observed data, the fitted
value in an Asimov dataset, a draw in a toy). The extended unbinned NLL is

    NLL(theta, nu) = L sigma(theta, nu) - sum_i weight_i log( sum_b w_b(theta) exp(log_ratio[i, b])
                                                             * prod_k G(log_ratio_var[i, k, :, s(b)], nu_k) )
                     + sum_k (nu_k - aux_k)^2 / 2

Version 1 files (no samples) still read: one sample, every nuisance on every column, aux 0.

What to use when: `LikelihoodArrays` holds one dataset's arrays in memory and checks every shape (its
`log_ratio_var` is always (n, K, 2, S); a (n, K, 2) array is accepted as the one-sample form);
`write_arrays` / `read_arrays` store it (HDF5); `iter_event_chunks` streams the per-event arrays of a large
file in bounded memory; `concatenate` joins per-batch files of one dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_core.errors import InputError

__all__ = [
    "CONSTRAINTS", "FORMAT_NAME", "FORMAT_VERSION", "LikelihoodArrays", "SOURCES", "V1_SAMPLE", "concatenate",
    "iter_event_chunks", "read_arrays", "write_arrays",
]

FORMAT_NAME = "sbi-likelihood"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
SOURCES = ("exact", "learned", "sally")
#: Constraint terms a nuisance parameter may have (the only one: a unit Gaussian around its auxiliary datum).
CONSTRAINTS = ("gaussian",)
#: The name of the single sample of a version-1 file (and of arrays built without samples).
V1_SAMPLE = "total"
_STR = "S256"
_EVENT_ARRAYS = ("log_ratio", "log_ratio_var", "weight", "log_ratio_std")
#: Where each field lives in the file: error messages name the array as a reader of the file sees it.
PATHS = {
    "benchmark_values": "benchmarks/values", "benchmark_sample": "benchmarks/sample",
    "morphing_components": "morphing/components", "morphing_matrix": "morphing/morphing_matrix",
    "nuisance_sizes": "nuisance/sizes", "modifier_mask": "nuisance/samples", "aux": "nuisance/aux",
    "constraints": "nuisance/constraint", "nuisance_kinds": "nuisance/kinds", "samples": "samples/names",
    "xsec": "xsec/benchmarks", "xsec_var": "xsec/variations", "log_ratio": "events/log_ratio",
    "log_ratio_var": "events/log_ratio_var", "weight": "events/weight", "log_ratio_std": "events/log_ratio_std",
    "reference": "attribute reference",
}
#: Arrays a version-2 file must hold besides the version-1 ones (the per-sample model and the global observables).
V2_REQUIRED = ("samples/names", "benchmarks/sample", "nuisance/samples", "nuisance/aux", "nuisance/constraint")


@dataclass(frozen=True)
class LikelihoodArrays:
    """One dataset's per-event arrays and the model description the fit needs. Shapes are checked, never broadcast.

    parameters (P,); benchmarks (B,): the columns, with benchmark_values (B, P) (NaN rows for a column that is
    no point of parameter space, e.g. a theta-independent sample), morphing_components (C, P) int and
    morphing_matrix (C, B) (column weights at theta = monomials(theta) @ matrix); reference: the name of the
    reference rate the log ratios are relative to; nuisance (K,) names with nuisance_kinds / nuisance_sizes;
    xsec (B,) fiducial sigma_b in pb; xsec_var (K, 2, B) sigma_b at nu_k = +1, -1; per event: log_ratio (n, B),
    log_ratio_var (n, K, 2, S), weight (n,), and optionally log_ratio_std (n, B), the spread of a learned
    ensemble. Version 2: samples (S,) names, benchmark_sample (B,) the sample of each column, modifier_mask
    (K, S) bool (nuisance k acts on sample s; where it does not, its log ratios are 0 and the column's xsec_var
    equals xsec), aux (K,) auxiliary data and constraints (K,) ("gaussian"). Left at None they take the
    one-sample defaults: ["total"], zeros, all True, zeros, gaussian. `source` is `exact` or `learned`;
    `meta` is free provenance (dataset URI, networks).
    """

    source: str
    parameters: list[str]
    benchmarks: list[str]
    benchmark_values: np.ndarray
    reference: str
    morphing_components: np.ndarray
    morphing_matrix: np.ndarray
    nuisance: list[str]
    nuisance_kinds: list[str]
    nuisance_sizes: np.ndarray
    xsec: np.ndarray
    xsec_var: np.ndarray
    log_ratio: np.ndarray
    log_ratio_var: np.ndarray
    weight: np.ndarray
    log_ratio_std: np.ndarray | None = None
    config_hash: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    samples: list[str] | None = None
    benchmark_sample: np.ndarray | None = None
    modifier_mask: np.ndarray | None = None
    aux: np.ndarray | None = None
    constraints: list[str] | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source: expected one of {SOURCES}, got {self.source!r}")
        p, b, k, n = len(self.parameters), len(self.benchmarks), len(self.nuisance), self.weight.shape[0]
        self._defaults(b, k, n)
        s = len(self.samples or ())
        c = self.morphing_components.shape[0]
        expected = {
            "benchmark_values": ((b, p), np.floating),
            "benchmark_sample": ((b,), np.integer),
            "morphing_components": ((c, p), np.integer),
            "morphing_matrix": ((c, b), np.floating),
            "nuisance_sizes": ((k,), np.floating),
            "modifier_mask": ((k, s), np.bool_),
            "aux": ((k,), np.floating),
            "xsec": ((b,), np.floating),
            "xsec_var": ((k, 2, b), np.floating),
            "log_ratio": ((n, b), np.floating),
            "log_ratio_var": ((n, k, 2, s), np.floating),
            "weight": ((n,), np.floating),
        }
        if self.log_ratio_std is not None:
            expected["log_ratio_std"] = ((n, b), np.floating)
        for name, (shape, kind) in expected.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != shape or not np.issubdtype(arr.dtype, kind):
                got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise ValueError(f"{PATHS[name]}: expected {kind.__name__} {shape}, got {got}")
        self._check_model(b, k, s)

    def _defaults(self, b: int, k: int, n: int) -> None:
        """Fill the version-2 fields left at None with the one-sample model; accept (n, K, 2) variations."""
        put = object.__setattr__
        if self.samples is None:
            put(self, "samples", [V1_SAMPLE])
        if self.benchmark_sample is None:
            put(self, "benchmark_sample", np.zeros(b, dtype=np.int64))
        if self.modifier_mask is None:
            put(self, "modifier_mask", np.ones((k, len(self.samples or ())), dtype=bool))
        if self.aux is None:
            put(self, "aux", np.zeros(k))
        if self.constraints is None:
            put(self, "constraints", ["gaussian"] * k)
        lrv = self.log_ratio_var
        if isinstance(lrv, np.ndarray) and lrv.ndim == 3 and len(self.samples or ()) == 1:
            put(self, "log_ratio_var", lrv[..., None])  # the one-sample form (n, K, 2) -> (n, K, 2, 1)

    def _check_model(self, b: int, k: int, s: int) -> None:
        samples = list(self.samples or ())
        if not samples or len(set(samples)) != s or not all(isinstance(x, str) and x for x in samples):
            raise ValueError(f"samples/names: expected unique non-empty names, got {samples}")
        if not (isinstance(self.reference, str) and self.reference):
            raise ValueError(f"attribute reference: expected a non-empty name, got {self.reference!r}")
        if len(self.nuisance_kinds) != k:
            raise ValueError(f"nuisance/kinds: expected {k} entries, got {len(self.nuisance_kinds)}")
        constraints = list(self.constraints or ())
        if len(constraints) != k or any(c not in CONSTRAINTS for c in constraints):
            raise ValueError(f"nuisance/constraint: expected {k} entries from {CONSTRAINTS}, got {constraints}")
        owner = np.asarray(self.benchmark_sample)
        if np.any(owner < 0) or np.any(owner >= s):
            raise ValueError(f"benchmarks/sample: sample indices must lie in 0..{s - 1}, got {owner.tolist()}")
        empty = [samples[i] for i in range(s) if not np.any(owner == i)]
        if empty:
            raise ValueError(f"benchmarks/sample: samples {empty} own no column")
        if not np.all(np.isfinite(np.asarray(self.aux))):
            raise ValueError("nuisance/aux: auxiliary data must be finite")
        if not np.all(self.xsec > 0) or not np.all(self.xsec_var > 0):
            raise ValueError("xsec/benchmarks and xsec/variations must be > 0 (fiducial cross sections)")
        mask = np.asarray(self.modifier_mask)
        for kk, ss in zip(*np.nonzero(~mask), strict=True):
            cols = owner == ss
            if np.any(self.log_ratio_var[:, kk, :, ss] != 0.0):
                raise ValueError(f"events/log_ratio_var: nuisance {self.nuisance[kk]!r} does not act on sample "
                                 f"{samples[ss]!r} (nuisance/samples) but its log ratios there are not 0")
            if not np.allclose(self.xsec_var[kk][:, cols], self.xsec[cols][None, :], rtol=1e-12, atol=0.0):
                raise ValueError(f"xsec/variations: nuisance {self.nuisance[kk]!r} does not act on sample "
                                 f"{samples[ss]!r} (nuisance/samples) but changes its cross sections")

    @property
    def n_events(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_samples(self) -> int:
        return len(self.samples or ())

    def select(self, rows: np.ndarray | slice) -> LikelihoodArrays:
        """The same model with only some events (a toy's resampled rows, a chunk)."""
        std = None if self.log_ratio_std is None else self.log_ratio_std[rows]
        return replace(
            self, log_ratio=self.log_ratio[rows], log_ratio_var=self.log_ratio_var[rows], weight=self.weight[rows],
            log_ratio_std=std,
        )

    def same_model(self, other: LikelihoodArrays) -> bool:
        """Whether `other` describes the same model (parameters, columns, samples, nuisances, morphing)."""
        return (
            self.parameters == other.parameters and self.benchmarks == other.benchmarks
            and self.nuisance == other.nuisance and self.reference == other.reference
            and self.samples == other.samples
            and np.array_equal(np.asarray(self.benchmark_sample), np.asarray(other.benchmark_sample))
            and np.array_equal(np.asarray(self.modifier_mask), np.asarray(other.modifier_mask))
            and np.array_equal(self.morphing_matrix, other.morphing_matrix)
            and np.array_equal(self.morphing_components, other.morphing_components)
        )


def _ascii(names: Sequence[str]) -> np.ndarray:
    return np.array([n.encode("ascii") for n in names], dtype=_STR)


def _names(ds: h5py.Dataset) -> list[str]:
    return [v.decode("ascii") for v in ds[()]]


def write_arrays(path: Path | str, arrays: LikelihoodArrays, *, chunk_rows: int = 65536) -> None:
    """Write arrays to a new local HDF5 file, format version 2 (wrap in storage.atomic_write for a URI)."""
    with h5py.File(path, "w") as f:
        a = f.attrs
        a["format"], a["format_version"] = FORMAT_NAME, FORMAT_VERSION
        a["source"], a["reference"], a["config_hash"] = arrays.source, arrays.reference, arrays.config_hash
        a["n_events"] = arrays.n_events
        for key, value in arrays.meta.items():
            a[f"meta_{key}"] = value if isinstance(value, int | float | str) else str(value)
        f["parameters/names"] = _ascii(arrays.parameters)
        f["benchmarks/names"] = _ascii(arrays.benchmarks)
        f["benchmarks/values"] = arrays.benchmark_values.astype(np.float64)
        f["benchmarks/sample"] = np.asarray(arrays.benchmark_sample).astype(np.int64)
        f["samples/names"] = _ascii(arrays.samples or ())
        f["morphing/components"] = arrays.morphing_components.astype(np.int64)
        f["morphing/morphing_matrix"] = arrays.morphing_matrix.astype(np.float64)
        f["nuisance/names"] = _ascii(arrays.nuisance)
        f["nuisance/kinds"] = _ascii(arrays.nuisance_kinds)
        f["nuisance/sizes"] = arrays.nuisance_sizes.astype(np.float64)
        f["nuisance/samples"] = np.asarray(arrays.modifier_mask).astype(np.uint8)
        f["nuisance/aux"] = np.asarray(arrays.aux).astype(np.float64)
        f["nuisance/constraint"] = _ascii(arrays.constraints or ())
        f["xsec/benchmarks"] = arrays.xsec.astype(np.float64)
        f["xsec/variations"] = arrays.xsec_var.astype(np.float64)
        for name in _EVENT_ARRAYS:
            arr = getattr(arrays, name)
            if arr is None:
                continue
            rows = max(1, min(chunk_rows, arr.shape[0]))
            f.create_dataset(f"events/{name}", data=arr, chunks=(rows, *arr.shape[1:]) if arr.shape[0] else None)


def _version(f: h5py.File, where: str) -> int:
    if f.attrs.get("format") != FORMAT_NAME:
        raise InputError(f"{where}: not an {FORMAT_NAME} file (format attribute {f.attrs.get('format')!r})")
    version = int(f.attrs.get("format_version", -1))
    if version not in READABLE_VERSIONS:
        raise InputError(f"{where}: format_version {f.attrs.get('format_version')} is not one this reader knows "
                         f"({list(READABLE_VERSIONS)})")
    required = ["parameters/names", "benchmarks/names", "benchmarks/values", "morphing/components",
                "morphing/morphing_matrix", "nuisance/names", "nuisance/kinds", "nuisance/sizes", "xsec/benchmarks",
                "xsec/variations", "events/log_ratio", "events/log_ratio_var", "events/weight"]
    if version == 2:
        required += list(V2_REQUIRED)
    missing = [name for name in required if name not in f]
    if missing:
        raise InputError(f"{where}: format_version {version} file lacks {missing[0]}"
                         + (f" (and {missing[1:]})" if len(missing) > 1 else ""))
    return version


def _open_header(f: h5py.File, where: str) -> tuple[int, dict[str, Any]]:
    version = _version(f, where)
    header: dict[str, Any] = {
        "source": str(f.attrs["source"]),
        "parameters": _names(f["parameters/names"]),
        "benchmarks": _names(f["benchmarks/names"]),
        "benchmark_values": f["benchmarks/values"][()],
        "reference": str(f.attrs["reference"]),
        "morphing_components": f["morphing/components"][()],
        "morphing_matrix": f["morphing/morphing_matrix"][()],
        "nuisance": _names(f["nuisance/names"]),
        "nuisance_kinds": _names(f["nuisance/kinds"]),
        "nuisance_sizes": f["nuisance/sizes"][()],
        "xsec": f["xsec/benchmarks"][()],
        "xsec_var": f["xsec/variations"][()],
        "config_hash": str(f.attrs.get("config_hash", "")),
        "meta": {k.removeprefix("meta_"): v for k, v in f.attrs.items() if k.startswith("meta_")},
    }
    if version == 2:
        mask = f["nuisance/samples"][()]
        header.update(samples=_names(f["samples/names"]), benchmark_sample=f["benchmarks/sample"][()],
                      modifier_mask=mask.astype(bool) if mask.dtype.kind in "biu" else mask,
                      aux=f["nuisance/aux"][()], constraints=_names(f["nuisance/constraint"]))
    return version, header


def read_arrays(path: Path | str, *, where: str | None = None, rows: slice | None = None) -> LikelihoodArrays:
    """Read a file written by write_arrays (version 2, or a version-1 file as one sample; all events, or `rows`).
    InputError naming the file (and the array) when it is not one, lacks an array or holds one of a wrong shape."""
    where = where or str(path)
    try:
        with h5py.File(path, "r") as f:
            version, header = _open_header(f, where)
            sl = rows if rows is not None else slice(None)
            events = {name: f[f"events/{name}"][sl] for name in _EVENT_ARRAYS if f"events/{name}" in f}
    except OSError as exc:
        raise InputError(f"{where}: unreadable likelihood arrays ({exc})") from None
    lrv = events["log_ratio_var"]
    if version == 1 and lrv.ndim != 3:
        raise InputError(f"{where}: events/log_ratio_var of a format_version 1 file must be (n, K, 2), got {lrv.shape}")
    try:
        return LikelihoodArrays(**header, **events)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None


def iter_event_chunks(path: Path | str, chunk_rows: int, *, where: str | None = None) -> Iterator[LikelihoodArrays]:
    """The file's events in chunks of at most chunk_rows (each a full LikelihoodArrays): bounded memory."""
    with h5py.File(path, "r") as f:
        n = int(f["events/weight"].shape[0])
    for start in range(0, n, chunk_rows):
        yield read_arrays(path, where=where, rows=slice(start, min(n, start + chunk_rows)))


def concatenate(parts: Sequence[LikelihoodArrays]) -> LikelihoodArrays:
    """Join per-batch arrays of one dataset (same model header, events in the given order; aux of part 0)."""
    if not parts:
        raise ValueError("concatenate: no parts")
    first = parts[0]
    for i, p in enumerate(parts[1:], 1):
        same = (p.source == first.source and p.same_model(first) and np.array_equal(p.xsec, first.xsec)
                and np.array_equal(p.xsec_var, first.xsec_var) and np.array_equal(p.aux, first.aux))
        if not same:
            raise InputError(f"likelihood arrays part {i} describes another model than part 0: cannot join them")
    has_std = all(p.log_ratio_std is not None for p in parts)
    return replace(
        first,
        log_ratio=np.concatenate([p.log_ratio for p in parts]),
        log_ratio_var=np.concatenate([p.log_ratio_var for p in parts]),
        weight=np.concatenate([p.weight for p in parts]),
        log_ratio_std=np.concatenate([p.log_ratio_std for p in parts]) if has_std else None,  # type: ignore[misc]
    )
