"""The contract's NLL over events held in blocks: bounded memory, and the exact Hessian in one pass.

`BlockNLL` evaluates the same NLL as `sbi_core.inference.nll.NLLModel` (same conventions: p = POIs then
nuisances, `value`/`grad`/`value_and_grad`/`hessian`, an `Objective` for `fit.minimize`), built for the
ATLAS-scale fit (10^7 events, 100 nuisance parameters):

- memory: the per-event arrays live in `EventStore`s (`sbi_core.inference.event_store`): resident on the
  device while they fit in `memory_budget` bytes, the rest streamed from a scratch file at every pass; the
  likelihood files are read chunk by chunk, so nothing ever holds a whole (n, K, 2) array;
- the Hessian: one pass (`sbi_core.inference.passes`), not one per block of Hessian-vector products, so
  Migrad's Hessian seed and the errors at the minimum cost about two NLL+gradient passes;
- `value(p)` computes the gradient too (a pass reads the same bytes either way) and keeps it for the
  `grad(p)` Migrad asks for next.

What to use when: `BlockNLL.from_file(path, normalization=mc_path, memory_budget=8 << 30)` for a large
run (the fit at scale, `python -m bench fit --full`); `NLLModel` for everything that differentiates the
NLL again (profile scans of HVPs, `jax.hessian`) and for several devices. The two agree to rounding (tested).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.data.likelihood_arrays import LikelihoodArrays
from sbi_core.errors import InputError
from sbi_core.inference.event_store import EventStore, StoreWriter, block_nbytes, plan_layout
from sbi_core.inference.interpolation import INTERPOLATIONS
from sbi_core.inference.objective import tolerance_floor
from sbi_core.inference.passes import Structure, assemble, data_pass, mc_pass, prepare

__all__ = ["BlockNLL"]

DTYPES = ("float64", "float32")
READ_ROWS = 1 << 16  # events per read from a likelihood file while building

#: (header, chunks, number of events): events read chunk by chunk (as `sbi_core.inference.nll`).
EventSource = tuple[LikelihoodArrays, Iterable[LikelihoodArrays], int]


def _check_part(part: LikelihoodArrays, where: str, variations_sum: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(log_ratio float64, row maxima) of a chunk; InputError naming the file when values are unusable.
    Finiteness of the (n, K, 2) variations is checked through a float64 sum over them (`variations_sum`, when
    the caller has one already; NaN or inf anywhere makes it non-finite)."""
    lr = np.asarray(part.log_ratio, dtype=np.float64)
    if variations_sum is None:
        variations_sum = float(np.sum(part.log_ratio_var, dtype=np.float64))
    if not (np.all(np.isfinite(part.weight)) and np.isfinite(variations_sum)):
        raise InputError(f"{where}: events/weight and events/log_ratio_var must be finite")
    if np.any(np.isnan(lr)) or np.any(np.isposinf(lr)):
        raise InputError(f"{where}: events/log_ratio must not be NaN or +inf (-inf: a benchmark with zero rate)")
    m = lr.max(axis=1) if lr.shape[1] else np.zeros(lr.shape[0])
    if not np.all(np.isfinite(m)):
        raise InputError(f"{where}: an event has zero rate at every benchmark (events/log_ratio all -inf)")
    return lr, m


def _same_model(a: LikelihoodArrays, b: LikelihoodArrays) -> bool:
    return (a.parameters == b.parameters and a.benchmarks == b.benchmarks and a.nuisance == b.nuisance
            and a.reference == b.reference and np.array_equal(a.morphing_matrix, b.morphing_matrix)
            and np.array_equal(a.morphing_components, b.morphing_components))


def _memory_source(arrays: LikelihoodArrays) -> EventSource:
    return arrays, (arrays.select(slice(s, s + READ_ROWS)) for s in range(0, arrays.n_events, READ_ROWS)), \
        arrays.n_events


def _read_chunks(path: Path | str, header: LikelihoodArrays, n: int, rows: int) -> Iterator[LikelihoodArrays]:
    """The file's events in chunks of `rows`, read with one open file into reused buffers (`read_direct`:
    no per-chunk reopening or reallocation; at 10^7 events x 100 nuisances this is most of the loading).
    A chunk is valid until the next one is read: the builders copy what they keep."""
    import h5py

    with h5py.File(path, "r") as f:
        ds = {name: f[f"events/{name}"] for name in ("log_ratio", "log_ratio_var", "weight")}
        buffers = {name: np.empty((min(rows, n), *d.shape[1:]), dtype=d.dtype) for name, d in ds.items()}
        for start in range(0, n, rows):
            m = min(rows, n - start)
            out = {name: buf[:m] for name, buf in buffers.items()}  # reused: valid until the next chunk
            for name, d in ds.items():
                if m:
                    d.read_direct(out[name], np.s_[start : start + m])
            yield replace(header, log_ratio=out["log_ratio"], log_ratio_var=out["log_ratio_var"],
                          weight=out["weight"], log_ratio_std=None)


def _file_source(path: Path | str, where: str | None) -> EventSource:
    import h5py

    from sbi_core.data.likelihood_arrays import read_arrays

    header = read_arrays(path, where=where, rows=slice(0, 0))
    with h5py.File(path, "r") as f:
        n = int(f["events/weight"].shape[0])
    return header, _read_chunks(path, header, n, READ_ROWS), n


def _accumulate(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum the passes' dicts, waiting for the one before each new pass (bounded memory in flight)."""
    total: Any = None
    previous: Any = None
    for part in parts:
        if previous is not None:
            jax.block_until_ready(previous)
        total = part if total is None else jax.tree.map(jnp.add, total, part)
        previous = part
    return total


class BlockNLL:
    """The contract's NLL of one dataset, its events in blocks (see the module doc)."""

    def __init__(
        self,
        events: EventSource,
        *,
        luminosity: float,
        normalization: EventSource | None = None,
        interpolation: str = "polyexp",
        dtype: str = "float64",
        chunk_rows: int = 262144,
        memory_budget: int | None = None,
        scratch_dir: str | None = None,
        device: Any = None,
        where: str = "likelihood arrays",
        normalization_where: str | None = None,
    ) -> None:
        """events: the dataset; normalization: the MC sample whose weighted sum is sigma(theta, nu) (None: the
        contract's cross-section interpolation); memory_budget: bytes of per-event arrays kept on the device
        (None: all), the rest streamed from a scratch file in `scratch_dir`."""
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {interpolation!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
        if not (math.isfinite(luminosity) and luminosity > 0):
            raise ValueError(f"luminosity: expected a finite value > 0, got {luminosity}")
        if memory_budget is not None and memory_budget < 0:
            raise ValueError(f"memory_budget: expected bytes >= 0 or None, got {memory_budget}")
        header, chunks, n_events = events
        self.device = device if device is not None else jax.devices()[0]
        self.names = list(header.parameters) + list(header.nuisance)
        self.n_pois = len(header.parameters)
        self.n_params = len(self.names)
        self.n_events = int(n_events)
        self.luminosity = float(luminosity)
        self.interpolation, self.dtype = interpolation, dtype
        self.normalization = "xsec" if normalization is None else "mc"
        np_dtype = np.dtype(dtype)
        n_b, n_k = len(header.benchmarks), len(header.nuisance)
        opts = {"dtype": np_dtype, "scratch_dir": scratch_dir, "device": self.device, "chunk_rows": chunk_rows,
                "platform": self.device.platform, "where": where,
                "norm_where": normalization_where or f"{where} (normalisation sample)"}
        if normalization is not None and not _same_model(header, normalization[0]):
            raise InputError(f"{where}: the normalisation sample's arrays describe another model than the dataset's")
        self.n_normalization = 0 if normalization is None else int(normalization[2])
        self._data, self._mc, shape_sum, weight_shift = self._build_stores(chunks, normalization, n_b, n_k,
                                                                           memory_budget, opts)
        xsec = np.asarray(header.xsec, dtype=np.float64)
        xsec_log = np.log(np.asarray(header.xsec_var, dtype=np.float64) / xsec[None, None, :])  # (K, 2, B)
        self._st = Structure(
            powers=tuple(tuple(int(x) for x in row) for row in np.asarray(header.morphing_components)),
            n_pois=self.n_pois, n_nuis=n_k, interpolation=interpolation,
            eps_rel=float(n_b * np.finfo(np_dtype).eps), tiny=float(np.finfo(np_dtype).tiny),
            mc_norm=normalization is not None)
        put = lambda x: jax.device_put(np.asarray(x, dtype=np.float64), self.device)  # noqa: E731
        self._const = {"matrix": put(header.morphing_matrix), "xsec": put(xsec),
                       "xsec_log": put(xsec_log.transpose(2, 0, 1).reshape(n_b, 2 * n_k)),
                       "shape_sum": put(shape_sum), "weight_shift": put(weight_shift),
                       "lumi": put(self.luminosity)}
        self._cache: tuple[bytes, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ building
    def _build_stores(self, chunks: Iterable[LikelihoodArrays], normalization: EventSource | None, n_b: int,
                      n_k: int, budget: int | None, opts: dict[str, Any]) -> tuple[Any, ...]:
        """(data store, normalisation store or None, S, sum_i w_i max_i): the two files are read at once, in two
        threads (reading and numpy release the GIL for most of the time). The budget goes to the data first."""
        data_shapes = {"e": (n_b,), "w": ()}
        data_layout = plan_layout(self.n_events, (n_b + 1) * opts["dtype"].itemsize, chunk_rows=opts["chunk_rows"],
                                  platform=opts["platform"], budget=budget)
        left = None
        if budget is not None:
            nbytes = block_nbytes(data_layout, data_shapes, opts["dtype"])
            left = max(0, budget - min(data_layout.blocks, budget // nbytes) * nbytes)
        with ThreadPoolExecutor(2, thread_name_prefix="nll-load") as pool:
            data = pool.submit(self._build_data, chunks, data_layout, data_shapes, n_k, budget, opts)
            mc = None if normalization is None else \
                pool.submit(self._build_mc, normalization[1], n_b, n_k, left, opts)
            store, shape_sum, shift = data.result()
            return store, None if mc is None else mc.result(), shape_sum, shift

    def _build_data(self, chunks: Iterable[LikelihoodArrays], layout: Any, shapes: dict[str, tuple[int, ...]],
                    n_k: int, budget: int | None, opts: dict[str, Any]) -> tuple[EventStore, np.ndarray, float]:
        """The data store (E = exp(log_ratio - max), w) and the sums kept aside: S = sum_i w_i log_ratio_var[i]
        (the events' shape terms, linear in F) and sum_i w_i max_i."""
        where = opts["where"]
        writer = StoreWriter(layout, shapes, opts["dtype"], budget=budget, scratch_dir=opts["scratch_dir"],
                             device=opts["device"], transposed=frozenset({"e"}))
        shape_sum, shift, seen = np.zeros(2 * n_k), 0.0, 0
        for part in chunks:
            w = np.asarray(part.weight, dtype=np.float64)
            # float64 sums without a float64 copy of the variations (einsum casts in buffered pieces); a NaN or
            # inf variation makes them non-finite whatever its weight (0 x inf is NaN)
            part_sum = np.einsum("i,ij->j", w, part.log_ratio_var.reshape(part.n_events, -1), dtype=np.float64)
            lr, m = _check_part(part, where, float(part_sum.sum()))
            shape_sum += part_sum
            shift += float(w @ m)
            writer.add({"e": np.exp(lr - m[:, None]), "w": w})  # cast to the store's dtype as they are copied
            seen += part.n_events
        if seen != self.n_events:
            raise InputError(f"{where}: expected {self.n_events} events, read {seen}")
        return writer.finish(), shape_sum, shift

    def _build_mc(self, chunks: Iterable[LikelihoodArrays], n_b: int, n_k: int, budget: int | None,
                  opts: dict[str, Any]) -> EventStore:
        """The normalisation store: W = weight x exp(log_ratio) (the sample's weight at every benchmark), V."""
        n_mc, where = self.n_normalization, opts["norm_where"]
        layout = plan_layout(n_mc, (n_b + 2 * n_k) * opts["dtype"].itemsize, chunk_rows=opts["chunk_rows"],
                             platform=opts["platform"], budget=budget)
        writer = StoreWriter(layout, {"e": (n_b,), "v": (2 * n_k,)}, opts["dtype"], budget=budget,
                             scratch_dir=opts["scratch_dir"], device=opts["device"], transposed=frozenset({"e"}))
        seen = 0
        for part in chunks:
            lr, _ = _check_part(part, where)
            w = np.asarray(part.weight, dtype=np.float64)
            writer.add({"e": w[:, None] * np.exp(lr), "v": part.log_ratio_var.reshape(part.n_events, -1)})
            seen += part.n_events
        if seen != n_mc:
            raise InputError(f"{where}: expected {n_mc} events, read {seen}")
        return writer.finish()

    @classmethod
    def from_arrays(cls, arrays: LikelihoodArrays, *, luminosity: float,
                    normalization: LikelihoodArrays | None = None, **kwargs: Any) -> BlockNLL:
        """The NLL of arrays held in memory (normalization: the MC sample's arrays, weights = MC weights)."""
        norm = None if normalization is None else _memory_source(normalization)
        return cls(_memory_source(arrays), luminosity=luminosity, normalization=norm, **kwargs)

    @classmethod
    def from_file(cls, path: Path | str, *, luminosity: float, normalization: Path | str | None = None,
                  where: str | None = None, **kwargs: Any) -> BlockNLL:
        """The NLL of a likelihood file (and of a normalisation sample's file), read chunk by chunk."""
        where = where or str(path)
        norm = None if normalization is None else _file_source(normalization, str(normalization))
        return cls(_file_source(path, where), luminosity=luminosity, normalization=norm, where=where,
                   normalization_where=None if normalization is None else str(normalization), **kwargs)

    # ------------------------------------------------------------------ evaluation
    def _p(self, p: Any, name: str = "p") -> np.ndarray:
        arr = np.asarray(p, dtype=np.float64)
        if arr.shape != (self.n_params,):
            raise ValueError(f"{name}: expected shape ({self.n_params},) for parameters {self.names}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: values must be finite, got {arr.tolist()}")
        return arr

    def _sums(self, p: np.ndarray, order: int) -> dict[str, Any]:
        """Every block's pass at p, summed on the device (one transfer at the end). At most two passes are in
        flight: JAX dispatches asynchronously, and a streamed block's device copy lives until its pass is done."""
        alpha, f, d = prepare(jnp.asarray(p), self._const["matrix"], self._st)
        kw = {"eps": self._st.eps_rel, "tiny": self._st.tiny, "order": order}
        sums = {"data": _accumulate(data_pass(alpha, b["e"], b["w"], **kw) for b in self._data.blocks())}
        if self._mc is not None:
            sums["mc"] = _accumulate(mc_pass(alpha, f, d, b["e"], b["v"], order=order) for b in self._mc.blocks())
        return sums

    def evaluate(self, p: Any, order: int = 1) -> dict[str, Any]:
        """{value, grad, sigma, n_floored} (and hess for order 2) at p, as numpy."""
        arr = self._p(p)
        key = arr.tobytes()
        if self._cache is not None and self._cache[0] == key and (order < 2 or "hess" in self._cache[1]):
            return self._cache[1]
        out = assemble(jnp.asarray(arr), self._sums(arr, order), self._const, st=self._st, order=order)
        result = {k: np.asarray(v) for k, v in jax.device_get(out).items()}
        self._cache = (key, result)
        return result

    def value(self, p: Any) -> float:
        """NLL(p) (its gradient is computed in the same pass and kept)."""
        return float(self.evaluate(p)["value"])

    def grad(self, p: Any) -> np.ndarray:
        """dNLL/dp."""
        return self.evaluate(p)["grad"].astype(np.float64)

    def value_and_grad(self, p: Any) -> tuple[float, np.ndarray]:
        out = self.evaluate(p)
        return float(out["value"]), out["grad"].astype(np.float64)

    def hessian(self, p: Any) -> np.ndarray:
        """The exact Hessian at p from one pass over the events (see `sbi_core.inference.passes`)."""
        return self.evaluate(p, order=2)["hess"].astype(np.float64)

    def hvp_rows(self, p: Any, vectors: Any) -> np.ndarray:
        """H(p) V^T for vectors V (m, n_params): rows of H for unit vectors (`hessian.RowHessian`)."""
        vs = np.asarray(vectors, dtype=np.float64)
        if vs.ndim != 2 or vs.shape[1] != self.n_params:
            raise ValueError(f"vectors: expected shape (m, {self.n_params}), got {vs.shape}")
        return vs @ self.hessian(p)

    @property
    def tolerance_floor(self) -> float:
        """The smallest Migrad tolerance this NLL's rounding allows (`objective.tolerance_floor`)."""
        return tolerance_floor(self.dtype)

    def expected_events(self, p: Any) -> float:
        """L sigma(theta, nu)."""
        return self.luminosity * float(self.evaluate(p)["sigma"])

    def n_floored(self, p: Any) -> int:
        """Data events whose morphed rate at p is at or below the rounding floor (`nll` module doc)."""
        return int(self.evaluate(p)["n_floored"])

    @property
    def event_arrays(self) -> dict[str, Any]:
        """The resident per-event device arrays a pass reads (benchmarks compare against reading them once)."""
        out = {}
        for part, store in (("data", self._data), ("mc", self._mc)):
            for i, block in enumerate(store.blocks() if store is not None and not store.n_streamed else ()):
                out.update({f"{part}_{name}_{i}": arr for name, arr in block.items()})
        return out

    def describe(self) -> dict[str, Any]:
        """Where the arrays are: resident and streamed bytes of the data and of the normalisation sample."""
        return {"data": self._data.describe(), "normalization": None if self._mc is None else self._mc.describe()}

    def __call__(self, p: Any) -> float:
        return self.value(p)

    def __repr__(self) -> str:
        mc = f", {self.n_normalization} normalisation events" if self._mc is not None else ""
        return (f"BlockNLL({self.n_events} events{mc}, {self.n_pois} POIs + {self.n_params - self.n_pois} "
                f"nuisances, {self.dtype}, {self.describe()})")

