"""The per-event likelihood arrays: the contract between learning (evaluate writes) and inference (the fit reads).

The fit never runs a simulator or, for morphing-based models, a network inside its loop. It reads,
once, for every event i of a dataset and every basis benchmark b and nuisance parameter k:

    log_ratio[i, b]        = log dsigma_b(x_i) / dsigma_ref(x_i)           (ref = sampling benchmark, nu = 0)
    log_ratio_var[i, k, j] = log dsigma(x_i | nu_k = +1 (j=0) / -1 (j=1)) / dsigma(x_i | nu = 0), at ref
    weight[i]              = the event's weight in the dataset (1 for observed data)

plus the fiducial cross sections sigma_b (`xsec`, at nu = 0) and sigma_b at nu_k = +-1 (`xsec_var`).
Both variation arrays are ratios of *differential cross sections*, not of normalised densities, so a
normalisation systematic is the constant log(1 + size) per event and the rate change of a shape
systematic is in the per-event numbers too. With morphing weights w_b(theta) (`morphing_matrix`) the
extended unbinned NLL is

    NLL(theta, nu) = L sigma(theta, nu) - sum_i weight_i log( sum_b w_b(theta) exp(log_ratio[i, b])
                                                             * prod_k G(log_ratio_var[i, k], nu_k) )
                     + sum_k nu_k^2 / 2,     sigma(theta, nu) = sum_b w_b(theta) sigma_b prod_k G(xsec_var[k, :, b] / sigma_b, nu_k)

with G interpolating between the -1, 0, +1 values (HistFactory's exponential or polynomial-exponential).
Documented for users in docs/likelihood-model.md.

What to use when: `LikelihoodArrays` holds one dataset's arrays in memory and checks every shape;
`write_arrays` / `read_arrays` store it (HDF5, format `sbi-likelihood`); `iter_event_chunks` streams the
per-event arrays of a large file in bounded memory; `concatenate` joins per-batch files of one dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_core.errors import InputError

FORMAT_NAME = "sbi-likelihood"
FORMAT_VERSION = 1
SOURCES = ("exact", "learned")
_STR = "S256"
_EVENT_ARRAYS = ("log_ratio", "log_ratio_var", "weight", "log_ratio_std")


@dataclass(frozen=True)
class LikelihoodArrays:
    """One dataset's per-event arrays and the model description the fit needs. Shapes are checked, never broadcast.

    parameters (P,), benchmarks (B,) with benchmark_values (B, P), morphing_components (C, P) int and
    morphing_matrix (C, B) (weights at theta = monomials(theta) @ matrix @ weights at the basis), reference:
    the benchmark the ratios are relative to; nuisance (K,) names with nuisance_kinds / nuisance_sizes;
    xsec (B,) fiducial sigma_b in pb; xsec_var (K, 2, B) sigma_b at nu_k = +1, -1; per event: log_ratio
    (n, B), log_ratio_var (n, K, 2), weight (n,), and optionally log_ratio_std (n, B), the spread of a
    learned ensemble. `source` is `exact` or `learned`; `meta` is free provenance (dataset URI, networks).
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

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source: expected one of {SOURCES}, got {self.source!r}")
        p, b, k, n = len(self.parameters), len(self.benchmarks), len(self.nuisance), self.weight.shape[0]
        c = self.morphing_components.shape[0]
        expected = {
            "benchmark_values": ((b, p), np.floating),
            "morphing_components": ((c, p), np.integer),
            "morphing_matrix": ((c, b), np.floating),
            "nuisance_sizes": ((k,), np.floating),
            "xsec": ((b,), np.floating),
            "xsec_var": ((k, 2, b), np.floating),
            "log_ratio": ((n, b), np.floating),
            "log_ratio_var": ((n, k, 2), np.floating),
            "weight": ((n,), np.floating),
        }
        if self.log_ratio_std is not None:
            expected["log_ratio_std"] = ((n, b), np.floating)
        for name, (shape, kind) in expected.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != shape or not np.issubdtype(arr.dtype, kind):
                got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise ValueError(f"LikelihoodArrays.{name}: expected {kind.__name__} {shape}, got {got}")
        if self.reference not in self.benchmarks:
            raise ValueError(f"reference {self.reference!r} is not a benchmark ({self.benchmarks})")
        if len(self.nuisance_kinds) != k:
            raise ValueError(f"nuisance_kinds: expected {k} entries, got {len(self.nuisance_kinds)}")
        if not np.all(self.xsec > 0) or not np.all(self.xsec_var > 0):
            raise ValueError("xsec and xsec_var must be > 0 (fiducial cross sections)")

    @property
    def n_events(self) -> int:
        return int(self.weight.shape[0])

    def select(self, rows: np.ndarray | slice) -> LikelihoodArrays:
        """The same model with only some events (a toy's resampled rows, a chunk)."""
        std = None if self.log_ratio_std is None else self.log_ratio_std[rows]
        return replace(
            self, log_ratio=self.log_ratio[rows], log_ratio_var=self.log_ratio_var[rows], weight=self.weight[rows],
            log_ratio_std=std,
        )


def _ascii(names: Sequence[str]) -> np.ndarray:
    return np.array([n.encode("ascii") for n in names], dtype=_STR)


def _names(ds: h5py.Dataset) -> list[str]:
    return [v.decode("ascii") for v in ds[()]]


def write_arrays(path: Path | str, arrays: LikelihoodArrays, *, chunk_rows: int = 65536) -> None:
    """Write arrays to a new local HDF5 file (wrap in storage.atomic_write for a URI)."""
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
        f["morphing/components"] = arrays.morphing_components.astype(np.int64)
        f["morphing/morphing_matrix"] = arrays.morphing_matrix.astype(np.float64)
        f["nuisance/names"] = _ascii(arrays.nuisance)
        f["nuisance/kinds"] = _ascii(arrays.nuisance_kinds)
        f["nuisance/sizes"] = arrays.nuisance_sizes.astype(np.float64)
        f["xsec/benchmarks"] = arrays.xsec.astype(np.float64)
        f["xsec/variations"] = arrays.xsec_var.astype(np.float64)
        for name in _EVENT_ARRAYS:
            arr = getattr(arrays, name)
            if arr is None:
                continue
            rows = max(1, min(chunk_rows, arr.shape[0]))
            f.create_dataset(f"events/{name}", data=arr, chunks=(rows, *arr.shape[1:]) if arr.shape[0] else None)


def _open_header(f: h5py.File, where: str) -> dict[str, Any]:
    if f.attrs.get("format") != FORMAT_NAME:
        raise InputError(f"{where}: not an {FORMAT_NAME} file (format attribute {f.attrs.get('format')!r})")
    if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
        raise InputError(f"{where}: format_version {f.attrs.get('format_version')} != {FORMAT_VERSION}")
    return {
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


def read_arrays(path: Path | str, *, where: str | None = None, rows: slice | None = None) -> LikelihoodArrays:
    """Read a file written by write_arrays (all events, or `rows`); InputError naming the file if it is not one."""
    where = where or str(path)
    try:
        with h5py.File(path, "r") as f:
            header = _open_header(f, where)
            sl = rows if rows is not None else slice(None)
            events = {name: f[f"events/{name}"][sl] for name in _EVENT_ARRAYS if f"events/{name}" in f}
    except OSError as exc:
        raise InputError(f"{where}: unreadable likelihood arrays ({exc})") from None
    return LikelihoodArrays(**header, **events)


def iter_event_chunks(path: Path | str, chunk_rows: int, *, where: str | None = None) -> Iterator[LikelihoodArrays]:
    """The file's events in chunks of at most chunk_rows (each a full LikelihoodArrays): bounded memory."""
    with h5py.File(path, "r") as f:
        n = int(f["events/weight"].shape[0])
    for start in range(0, n, chunk_rows):
        yield read_arrays(path, where=where, rows=slice(start, min(n, start + chunk_rows)))


def concatenate(parts: Sequence[LikelihoodArrays]) -> LikelihoodArrays:
    """Join per-batch arrays of one dataset (same model header, events in the given order)."""
    if not parts:
        raise ValueError("concatenate: no parts")
    first = parts[0]
    for i, p in enumerate(parts[1:], 1):
        same = (
            p.source == first.source and p.parameters == first.parameters and p.benchmarks == first.benchmarks
            and p.nuisance == first.nuisance and p.reference == first.reference
            and np.array_equal(p.morphing_matrix, first.morphing_matrix) and np.array_equal(p.xsec, first.xsec)
            and np.array_equal(p.xsec_var, first.xsec_var)
        )
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
