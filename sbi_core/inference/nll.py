"""The extended unbinned NLL of the likelihood contract (docs/likelihood-model.md), in JAX.

What to use when:
- `NLLModel.from_arrays(arrays, luminosity=...)` builds the model from one dataset's `LikelihoodArrays`
  held in memory; `NLLModel.from_file(path, ...)` streams a likelihood file chunk by chunk, so only the
  arrays the NLL keeps (n x B numbers) are ever held, never the (n, K, 2) variations.
- `model.value(p)`, `grad(p)`, `value_and_grad(p)`, `hvp(p, v)`, `hvp_rows(p, V)` take the parameter
  vector p: the parameters of interest (config order), then the nuisance parameters (config order);
  `model.names` and `model.n_pois` say which is which. Any of them is an `Objective`
  (`sbi_core.inference.objective`) for `sbi_core.inference.fit.minimize`.
- `model.hessian(p)` builds the Hessian from HVP row blocks (`sbi_core.inference.hessian`: bounded
  memory, what the fit's errors use); `model.hessian_autodiff(p)` is `jax.hessian` of the whole NLL at once.

The model (theta = POIs, nu = nuisances, w_b(theta) = monomials(theta) @ morphing_matrix = alpha_b):

    NLL = L sum_b alpha_b sigma_b exp(X_b . F(nu)) - sum_i weight_i log(sum_b alpha_b exp(log_ratio[i, b]))
          - S . F(nu) + sum_k nu_k^2 / 2

F(nu) = (f_up(nu_k), f_down(nu_k))_k are the interpolation basis functions (`interpolation.py`): both
schemes interpolate the log of a variation linearly in its +-1 log ratios, so the per-event shape factor
prod_k G_k(x_i, nu_k) contributes sum_i weight_i log_ratio_var[i] . F(nu) = S . F(nu) with
S = sum_i weight_i log_ratio_var[i] summed once when the model is built: exact, and it makes one pass over
the data cost O(n B), independent of the number of nuisance parameters K.

The expected rate sigma(theta, nu) (`normalization`):
- None (the contract's formula, above): X_b holds log(xsec_var / sigma_b), interpolated like the events.
  Cheap, but inconsistent with the per-event model between the +-1 points: the integral of
  dsigma(x) exp(u(x) . F(nu)) is not (integral of dsigma e^u)^nu when the per-event log ratio u varies, so a
  shape nuisance gets a spurious pull of order n var(u) / 2 and loses its shape information (seen on the
  benchmark's energy scale: -3.9 sigma with 1300 events).
- an MC sample (`normalization=` arrays of the run's events, weights = their MC weights at the reference):
  sigma(theta, nu) = sum_j m_j sum_b alpha_b exp(log_ratio[j, b]) exp(log_ratio_var[j] . F(nu)), the same
  per-event model summed over the MC: normalised at every nu, so an Asimov dataset of the same events has
  its minimum exactly at its truth. One pass over the MC sample per call: O(M (B + 2K)).

How it is computed: per event the shifted ratios E[i, b] = exp(log_ratio[i, b] - m_i), m_i = max_b, are
stored once (dtype float64 or float32) with sum_i weight_i m_i kept aside, in chunks of at most
`chunk_rows` events (on CPU also at most ~2 MiB of arrays, to stay in cache; the last chunk padded with
weight-0 rows), benchmark-major (B, rows), scanned by `lax.scan`, so the working memory is one chunk.
The event term has a custom JVP that returns its value and its gradient in alpha from the same pass over
a chunk; second derivatives (HVP, `jax.hessian`) differentiate that pass again. Chunk sums are
accumulated in float64 whatever the dtype (x64 is switched on when this module is imported). One
compiled function serves every model with the same shapes: compiled once per shape, never per call.

Signed morphing: alpha_b(theta) can be negative, so the per-event rate r_i = E_i . alpha can round to
<= 0 (or be negative where theta leaves the physical region of a learned model). Such an event's rate is
floored at the rounding-error bound of the sum, B eps_dtype sum_b |alpha_b| (E <= 1; and at least the
dtype's smallest normal number): the NLL stays finite and differentiable and pays a large -log(floor) for
it, which pushes a fit back to where every observed event has a positive rate. `n_floored(p)` counts them.

Devices: with several JAX devices (or `devices=`), the event axis of every chunk is sharded across them
(`NamedSharding` on a 1-D mesh); the result equals the single-device one up to summation order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.data.likelihood_arrays import LikelihoodArrays, iter_event_chunks
from sbi_core.inference.compilation import configure_jax
from sbi_core.inference.interpolation import INTERPOLATIONS, basis_functions

configure_jax()  # float64 on, the persistent compilation cache: before the first compile of any inference step

__all__ = ["DTYPES", "NLLModel", "trace_count"]

DTYPES = ("float64", "float32")
_TRACES: Counter[str] = Counter()
_MIN_ROWS = 256  # smallest chunk: datasets smaller than a chunk are padded to a power of two above this
CPU_CHUNK_BYTES = 2 << 20  # per-event bytes per chunk on CPU: stays in cache between the two passes


def trace_count(name: str = "nll") -> int:
    """How many times the NLL has been traced (compiled) in this process: tests check it does not grow."""
    return _TRACES[name]


@dataclass(frozen=True)
class _Structure:
    """The static part of a model (hashable: one compilation per structure and data shape)."""

    powers: tuple[tuple[int, ...], ...]
    n_pois: int
    n_nuis: int
    interpolation: str
    eps_rel: float
    tiny: float
    mc_norm: bool = False


# ---------------------------------------------------------------------------------------------- pure functions
def _alpha(theta: Any, matrix: Any, powers: tuple[tuple[int, ...], ...]) -> Any:
    """Morphing weights alpha_b(theta) = monomials(theta) @ matrix; integer powers keep d/dtheta finite at 0."""
    monos = []
    for row in powers:
        m = jnp.ones((), dtype=theta.dtype)
        for j, k in enumerate(row):
            if k:
                m = m * theta[j] ** k
        monos.append(m)
    return jnp.stack(monos) @ matrix


def _chunk_terms(alpha: Any, ec: Any, wc: Any, eps: float, tiny: float, with_grad: bool) -> tuple[Any, Any]:
    """sum_i w_i log max(E_i . alpha, floor) over one chunk (ec: (B, R)), and (optionally) its gradient in
    alpha, float64. floor = eps sum_b |alpha_b| bounds the rounding error of E_i . alpha (E <= 1)."""
    scale = jnp.sum(jnp.abs(alpha))
    floor = jnp.maximum(eps * scale, tiny).astype(ec.dtype)
    s = alpha.astype(ec.dtype) @ ec  # one gemv over the chunk
    ok = s > floor
    safe = jnp.where(ok, s, floor)
    value = jnp.sum(wc * jnp.log(safe)).astype(jnp.float64)
    if not with_grad:
        return value, None
    # d/dalpha log(s) = E / s; a floored event's log(eps sum|alpha|) has gradient sign(alpha) / sum|alpha|
    g = (ec @ jnp.where(ok, wc / safe, 0.0).astype(ec.dtype)).astype(jnp.float64)
    w_floored = jnp.sum(jnp.where(ok, 0.0, wc)).astype(jnp.float64) * (eps * scale > tiny)
    return value, g + jnp.sign(alpha) * w_floored / jnp.where(scale > 0, scale, 1.0)


def _event_scan(alpha: Any, e: Any, w: Any, eps: float, tiny: float, with_grad: bool) -> tuple[Any, Any]:
    """Scan the chunks: (sum of the event term, its gradient in alpha or None)."""
    if with_grad:
        def body(carry: Any, xs: Any) -> tuple[Any, None]:
            v, g = _chunk_terms(alpha, xs[0], xs[1], eps, tiny, True)
            return (carry[0] + v, carry[1] + g), None

        init = (jnp.zeros((), jnp.float64), jnp.zeros(alpha.shape, jnp.float64))
        (v, g), _ = jax.lax.scan(body, init, (e, w))
        return v, g

    def body_v(carry: Any, xs: Any) -> tuple[Any, None]:
        return carry + _chunk_terms(alpha, xs[0], xs[1], eps, tiny, False)[0], None

    v, _ = jax.lax.scan(body_v, jnp.zeros((), jnp.float64), (e, w))
    return v, None


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _event_term(alpha: Any, e: Any, w: Any, eps: float, tiny: float) -> Any:
    """sum_i w_i log(E_i . alpha) (floored), value only."""
    return _event_scan(alpha, e, w, eps, tiny, False)[0]


def _event_term_jvp(eps: float, tiny: float, primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
    alpha, e, w = primals
    value, grad = _event_scan(alpha, e, w, eps, tiny, True)
    d_alpha = tangents[0]
    if type(d_alpha) is jax.custom_derivatives.SymbolicZero:
        return value, jnp.zeros_like(value)
    return value, grad @ d_alpha  # the data (E, w) are never differentiated


_event_term.defjvp(_event_term_jvp, symbolic_zeros=True)


def _norm_scan(alpha: Any, f: Any, e: Any, v: Any, m: Any, with_grad: bool) -> tuple[Any, Any, Any]:
    """sum_j m_j (E_j . alpha) exp(V_j . f) over the chunks of a normalisation sample, and its gradients."""

    def terms(ec: Any, vc: Any, mc: Any) -> tuple[Any, Any, Any]:
        rate = alpha.astype(ec.dtype) @ ec  # ec (B, R), vc (2K, R)
        shape = jnp.exp(f.astype(vc.dtype) @ vc)
        value = jnp.sum(mc * rate * shape).astype(jnp.float64)
        if not with_grad:
            return value, None, None
        g_alpha = (ec @ (mc * shape)).astype(jnp.float64)
        g_f = (vc @ (mc * rate * shape)).astype(jnp.float64)
        return value, g_alpha, g_f

    if not with_grad:
        def body_v(carry: Any, xs: Any) -> tuple[Any, None]:
            return carry + terms(*xs)[0], None

        return jax.lax.scan(body_v, jnp.zeros((), jnp.float64), (e, v, m))[0], None, None

    def body(carry: Any, xs: Any) -> tuple[Any, None]:
        val, ga, gf = terms(*xs)
        return (carry[0] + val, carry[1] + ga, carry[2] + gf), None

    init = (jnp.zeros((), jnp.float64), jnp.zeros(alpha.shape, jnp.float64), jnp.zeros(f.shape, jnp.float64))
    return jax.lax.scan(body, init, (e, v, m))[0]


@jax.custom_jvp
def _norm_term(alpha: Any, f: Any, e: Any, v: Any, m: Any) -> Any:
    """The fiducial cross section at (alpha, f) from a normalisation sample, value only."""
    return _norm_scan(alpha, f, e, v, m, False)[0]


def _norm_term_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
    alpha, f, e, v, m = primals
    value, g_alpha, g_f = _norm_scan(alpha, f, e, v, m, True)
    out = jnp.zeros_like(value)
    if type(tangents[0]) is not jax.custom_derivatives.SymbolicZero:
        out = out + g_alpha @ tangents[0]
    if type(tangents[1]) is not jax.custom_derivatives.SymbolicZero:
        out = out + g_f @ tangents[1]
    return value, out


_norm_term.defjvp(_norm_term_jvp, symbolic_zeros=True)


def _alpha_f(p: Any, data: dict[str, Any], st: _Structure) -> tuple[Any, Any]:
    """Morphing weights alpha(theta) and the interpolation basis F(nu), (2K,) indexed 2k + j."""
    alpha = _alpha(p[: st.n_pois], data["matrix"], st.powers)
    f_up, f_down = basis_functions(st.interpolation)(p[st.n_pois :])
    return alpha, jnp.stack([f_up, f_down], axis=1).reshape(-1)


def _sigma(p: Any, data: dict[str, Any], st: _Structure) -> Any:
    """sigma(theta, nu): the contract's interpolated cross sections, or the normalisation sample's sum."""
    alpha, f = _alpha_f(p, data, st)
    if st.mc_norm:
        return _norm_term(alpha, f, data["mc_e"], data["mc_v"], data["mc_w"])
    return jnp.sum(alpha * data["xsec"] * jnp.exp(data["xsec_log"] @ f))


def _nll(p: Any, data: dict[str, Any], st: _Structure) -> Any:
    """The NLL at p (POIs then nuisances) for the model `data` with structure `st`."""
    _TRACES["nll"] += 1  # runs once per trace, never per call
    nu = p[st.n_pois :]
    alpha, f = _alpha_f(p, data, st)
    sigma = _sigma(p, data, st)
    events = _event_term(alpha, data["e"], data["w"], st.eps_rel, st.tiny)
    return data["lumi"] * sigma - events - data["shape_sum"] @ f - data["weight_shift"] + 0.5 * jnp.sum(nu * nu)


def _n_floored(p: Any, data: dict[str, Any], st: _Structure) -> Any:
    alpha = _alpha(p[: st.n_pois], data["matrix"], st.powers)

    def body(carry: Any, xs: Any) -> tuple[Any, None]:
        ec, wc = xs
        s = alpha.astype(ec.dtype) @ ec
        bad = (s <= jnp.maximum(st.eps_rel * jnp.sum(jnp.abs(alpha)), st.tiny)) & (wc != 0)
        return carry + jnp.sum(bad), None

    return jax.lax.scan(body, jnp.zeros((), jnp.int64), (data["e"], data["w"]))[0]


def _hvp(p: Any, v: Any, data: dict[str, Any], st: _Structure) -> Any:
    return jax.jvp(lambda q: jax.grad(_nll)(q, data, st), (p,), (v,))[1]


_value_jit = jax.jit(_nll, static_argnums=2)
_value_and_grad_jit = jax.jit(jax.value_and_grad(_nll), static_argnums=2)
_hvp_jit = jax.jit(_hvp, static_argnums=3)
_hvp_rows_jit = jax.jit(jax.vmap(_hvp, in_axes=(None, 0, None, None)), static_argnums=3)
_hessian_jit = jax.jit(jax.hessian(_nll), static_argnums=2)
_n_floored_jit = jax.jit(_n_floored, static_argnums=2)
_expected_jit = jax.jit(lambda p, data, st: data["lumi"] * _sigma(p, data, st), static_argnums=2)


# ---------------------------------------------------------------------------------------------- the model
def _chunk_layout(n: int, chunk_rows: int, n_devices: int, row_bytes: int = 0,
                  platform: str = "cpu") -> tuple[int, int]:
    """(rows per chunk, chunks): at most chunk_rows; on CPU also at most ~CPU_CHUNK_BYTES of per-event arrays
    (a power of two), so a chunk read twice (value, then gradient) is read from cache the second time. A
    dataset smaller than a chunk is padded to a power of two (so datasets of similar size, e.g. toys, share
    one compilation); rows are a multiple of the device count."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected >= 1, got {chunk_rows}")
    if platform == "cpu" and row_bytes > 0:
        chunk_rows = min(chunk_rows, max(_MIN_ROWS, 1 << max(0, CPU_CHUNK_BYTES // row_bytes).bit_length() - 1))
    rows = chunk_rows if n > chunk_rows else min(chunk_rows, max(_MIN_ROWS, 1 << max(0, n - 1).bit_length()))
    rows = -(-rows // n_devices) * n_devices
    return rows, max(1, -(-n // rows))


class _Accumulator:
    """Builds the arrays the NLL keeps from event chunks.

    Data (`normalization=False`): E = exp(log_ratio - m) and weights, with S = sum_i w_i log_ratio_var[i] and
    sum_i w_i m_i kept aside. Normalisation sample (`True`): E, V = log_ratio_var (flattened to 2K) and the
    weight times exp(m), so sum_j weight_j exp(log_ratio_j) . alpha exp(V_j . F) = sum_j mw_j E_j . alpha ..."""

    def __init__(self, n: int, n_benchmarks: int, n_nuis: int, rows: int, chunks: int, dtype: np.dtype,
                 normalization: bool = False) -> None:
        self.e = np.zeros((chunks * rows, n_benchmarks), dtype=dtype)
        self.w = np.zeros(chunks * rows, dtype=dtype)
        self.v = np.zeros((chunks * rows, 2 * n_nuis), dtype=dtype) if normalization else None
        self.shape_sum = np.zeros(2 * n_nuis)
        self.weight_shift = 0.0
        self.n = 0
        self.total = n
        self.rows, self.chunks = rows, chunks

    def add(self, part: LikelihoodArrays) -> None:
        lr = np.asarray(part.log_ratio, dtype=np.float64)
        w = np.asarray(part.weight, dtype=np.float64)
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(part.log_ratio_var))):
            raise ValueError("likelihood arrays: weight and log_ratio_var must be finite")
        if np.any(np.isnan(lr)) or np.any(np.isposinf(lr)):
            raise ValueError("likelihood arrays: log_ratio must not be NaN or +inf (-inf: a benchmark with zero rate)")
        m = lr.max(axis=1)
        if not np.all(np.isfinite(m)):
            raise ValueError("likelihood arrays: an event has zero rate at every benchmark (log_ratio all -inf)")
        k = part.n_events
        if self.n + k > self.total:
            raise ValueError(f"likelihood arrays: more than the expected {self.total} events")
        sl = slice(self.n, self.n + k)
        self.e[sl] = np.exp(lr - m[:, None])
        if self.v is not None:
            self.v[sl] = part.log_ratio_var.reshape(k, -1)
            self.w[sl] = w * np.exp(m)
        else:
            self.w[sl] = w
            self.shape_sum += np.einsum("i,ikj->kj", w, part.log_ratio_var).reshape(-1)
            self.weight_shift += float(w @ m)
        self.n += k

    def done(self) -> tuple[np.ndarray, ...]:
        if self.n != self.total:
            raise ValueError(f"likelihood arrays: expected {self.total} events, got {self.n}")
        b = self.e.shape[1]
        # benchmark-major chunks (chunks, B, R), variation-major (chunks, 2K, R): events are the last axis
        out = [np.ascontiguousarray(self.e.reshape(self.chunks, self.rows, b).transpose(0, 2, 1)),
               self.w.reshape(self.chunks, self.rows)]
        if self.v is not None:
            out.append(np.ascontiguousarray(self.v.reshape(self.chunks, self.rows, -1).transpose(0, 2, 1)))
        return tuple(out)


def _same_model(a: LikelihoodArrays, b: LikelihoodArrays) -> bool:
    return (a.parameters == b.parameters and a.benchmarks == b.benchmarks and a.nuisance == b.nuisance
            and a.reference == b.reference and np.array_equal(a.morphing_matrix, b.morphing_matrix)
            and np.array_equal(a.morphing_components, b.morphing_components))


#: (header, chunks, number of events): events read chunk by chunk.
EventSource = tuple[LikelihoodArrays, Iterable[LikelihoodArrays], int]


def _memory_source(arrays: LikelihoodArrays, chunk_rows: int) -> EventSource:
    step = max(1, chunk_rows)
    return arrays, (arrays.select(slice(s, s + step)) for s in range(0, arrays.n_events, step)), arrays.n_events


def _file_source(path: Path | str, chunk_rows: int, where: str | None) -> EventSource:
    import h5py

    from sbi_core.data.likelihood_arrays import read_arrays

    header = read_arrays(path, where=where, rows=slice(0, 0))
    with h5py.File(path, "r") as f:
        n = int(f["events/weight"].shape[0])
    return header, iter_event_chunks(path, max(1, chunk_rows), where=where), n


class NLLModel:
    """The contract's NLL for one dataset: a callable objective of p = (POIs, nuisances). See the module doc."""

    def __init__(
        self,
        events: EventSource,
        *,
        luminosity: float,
        normalization: EventSource | None = None,
        interpolation: str = "polyexp",
        dtype: str = "float64",
        chunk_rows: int = 262144,
        devices: Sequence[Any] | None = None,
    ) -> None:
        """Prefer `from_arrays` / `from_file`. events: the dataset; normalization: an optional MC sample whose
        weighted sum gives sigma(theta, nu) (see the module doc; None: the contract's xsec interpolation)."""
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {interpolation!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
        if not (math.isfinite(luminosity) and luminosity > 0):
            raise ValueError(f"luminosity: expected a finite value > 0, got {luminosity}")
        header, chunks, n_events = events
        self.devices = list(devices) if devices is not None else jax.devices()
        self.names = list(header.parameters) + list(header.nuisance)
        self.n_pois = len(header.parameters)
        self.n_params = len(self.names)
        self.n_events = int(n_events)
        self.luminosity = float(luminosity)
        self.interpolation = interpolation
        self.dtype = dtype
        self.normalization = "xsec" if normalization is None else "mc"
        np_dtype = np.dtype(dtype)
        n_b, n_k = len(header.benchmarks), len(header.nuisance)
        platform = self.devices[0].platform
        rows, n_chunks = _chunk_layout(self.n_events, chunk_rows, len(self.devices), (n_b + 1) * np_dtype.itemsize,
                                       platform)
        self.chunk_rows, self.n_chunks = rows, n_chunks
        acc = _Accumulator(self.n_events, n_b, n_k, rows, n_chunks, np_dtype)
        for part in chunks:
            acc.add(part)
        e, w = acc.done()
        xsec = np.asarray(header.xsec, dtype=np.float64)
        xsec_log = np.log(np.asarray(header.xsec_var, dtype=np.float64) / xsec[None, None, :])  # (K, 2, B)
        self._st = _Structure(
            powers=tuple(tuple(int(x) for x in row) for row in np.asarray(header.morphing_components)),
            n_pois=self.n_pois,
            n_nuis=n_k,
            interpolation=interpolation,
            eps_rel=float(n_b * np.finfo(np_dtype).eps),
            tiny=float(np.finfo(np_dtype).tiny),
            mc_norm=normalization is not None,
        )
        if len(self.devices) > 1:
            from jax.sharding import Mesh, NamedSharding
            from jax.sharding import PartitionSpec as P

            mesh = Mesh(np.array(self.devices), ("events",))

            def put_events(x: np.ndarray) -> Any:
                return jax.device_put(x, NamedSharding(mesh, P(*([None] * (x.ndim - 1)), "events")))

            put = partial(jax.device_put, device=NamedSharding(mesh, P()))
        else:
            put = put_events = partial(jax.device_put, device=self.devices[0])
        self._data = {
            "e": put_events(e),
            "w": put_events(w),
            "matrix": put(np.asarray(header.morphing_matrix, dtype=np.float64)),
            "xsec": put(xsec),
            "xsec_log": put(np.ascontiguousarray(xsec_log.transpose(2, 0, 1).reshape(n_b, 2 * n_k))),
            "shape_sum": put(acc.shape_sum),
            "weight_shift": put(np.float64(acc.weight_shift)),
            "lumi": put(np.float64(self.luminosity)),
        }
        self.n_normalization = 0
        if normalization is not None:
            n_header, n_chunks_iter, n_mc = normalization
            if not _same_model(header, n_header):
                raise ValueError("normalization sample: its arrays describe another model than the dataset's")
            mrows, mchunks = _chunk_layout(int(n_mc), chunk_rows, len(self.devices),
                                           (n_b + 1 + 2 * n_k) * np_dtype.itemsize, platform)
            macc = _Accumulator(int(n_mc), n_b, n_k, mrows, mchunks, np_dtype, normalization=True)
            for part in n_chunks_iter:
                macc.add(part)
            me, mw, mv = macc.done()
            self._data.update(mc_e=put_events(me), mc_w=put_events(mw), mc_v=put_events(mv))
            self.n_normalization = int(n_mc)
        self._cache: tuple[bytes, float, np.ndarray] | None = None

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_arrays(cls, arrays: LikelihoodArrays, *, luminosity: float,
                    normalization: LikelihoodArrays | None = None, interpolation: str = "polyexp",
                    dtype: str = "float64", chunk_rows: int = 262144,
                    devices: Sequence[Any] | None = None) -> NLLModel:
        """The NLL of arrays held in memory (normalization: the MC sample's arrays, weights = MC weights)."""
        norm = None if normalization is None else _memory_source(normalization, chunk_rows)
        return cls(_memory_source(arrays, chunk_rows), luminosity=luminosity, normalization=norm,
                   interpolation=interpolation, dtype=dtype, chunk_rows=chunk_rows, devices=devices)

    @classmethod
    def from_file(cls, path: Path | str, *, luminosity: float, normalization: Path | str | None = None,
                  interpolation: str = "polyexp", dtype: str = "float64", chunk_rows: int = 262144,
                  devices: Sequence[Any] | None = None, where: str | None = None) -> NLLModel:
        """The NLL of a likelihood file (`write_arrays` format), read chunk by chunk (bounded memory)."""
        norm = None if normalization is None else _file_source(normalization, chunk_rows, None)
        return cls(_file_source(path, chunk_rows, where), luminosity=luminosity, normalization=norm,
                   interpolation=interpolation, dtype=dtype, chunk_rows=chunk_rows, devices=devices)

    # ------------------------------------------------------------------ evaluation
    def _p(self, p: Any, name: str = "p") -> jax.Array:
        arr = np.asarray(p, dtype=np.float64)
        if arr.shape != (self.n_params,):
            raise ValueError(f"{name}: expected shape ({self.n_params},) for parameters {self.names}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: values must be finite, got {arr.tolist()}")
        return jnp.asarray(arr)

    def value(self, p: Any) -> float:
        """NLL(p)."""
        arr = np.asarray(p, dtype=np.float64)
        if self._cache is not None and self._cache[0] == arr.tobytes():
            return self._cache[1]
        return float(_value_jit(self._p(arr), self._data, self._st))

    def value_and_grad(self, p: Any) -> tuple[float, np.ndarray]:
        """(NLL(p), dNLL/dp) from one pass over the events."""
        arr = np.asarray(p, dtype=np.float64)
        if self._cache is not None and self._cache[0] == arr.tobytes():
            return self._cache[1], self._cache[2].copy()
        v, g = _value_and_grad_jit(self._p(arr), self._data, self._st)
        out = (float(v), np.asarray(g, dtype=np.float64))
        self._cache = (arr.tobytes(), out[0], out[1])
        return out[0], out[1].copy()

    def grad(self, p: Any) -> np.ndarray:
        """dNLL/dp (the value of the same pass is kept: a following value(p) at the same p is free)."""
        return self.value_and_grad(p)[1]

    def hvp(self, p: Any, v: Any) -> np.ndarray:
        """Hessian-vector product H(p) v (forward-over-reverse)."""
        return np.asarray(_hvp_jit(self._p(p), self._p(v, "v"), self._data, self._st))

    def hvp_rows(self, p: Any, vectors: Any) -> np.ndarray:
        """H(p) V^T for a block of vectors V (m, n_params), vmapped: rows of H when V holds unit vectors."""
        vs = np.asarray(vectors, dtype=np.float64)
        if vs.ndim != 2 or vs.shape[1] != self.n_params:
            raise ValueError(f"vectors: expected shape (m, {self.n_params}), got {vs.shape}")
        return np.asarray(_hvp_rows_jit(self._p(p), jnp.asarray(vs), self._data, self._st))

    def hessian(self, p: Any, block_rows: int = 16) -> np.ndarray:
        """The Hessian from HVP row blocks of `block_rows` rows (memory: one block of tangents at a time)."""
        from sbi_core.inference.hessian import hessian_by_rows

        return hessian_by_rows(self, p, block_rows)

    def hessian_autodiff(self, p: Any) -> np.ndarray:
        """The Hessian by `jax.hessian` (all n_params tangents at once: memory grows with n_params)."""
        return np.asarray(_hessian_jit(self._p(p), self._data, self._st))

    def n_floored(self, p: Any) -> int:
        """Events whose morphed rate at p is at or below the rounding floor (see the module doc)."""
        return int(_n_floored_jit(self._p(p), self._data, self._st))

    def expected_events(self, p: Any) -> float:
        """L sigma(theta, nu): the expected number of events at p."""
        return float(_expected_jit(self._p(p), self._data, self._st))

    @property
    def event_arrays(self) -> dict[str, Any]:
        """The per-event device arrays one NLL call reads (benchmarks compare against reading them once)."""
        return {k: v for k, v in self._data.items() if k in ("e", "w", "mc_e", "mc_w", "mc_v")}

    def __call__(self, p: Any) -> float:
        return self.value(p)

    def __repr__(self) -> str:
        return (f"NLLModel({self.n_events} events, {self.n_pois} POIs + {self.n_params - self.n_pois} nuisances, "
                f"{self.dtype}, {self.n_chunks} x {self.chunk_rows} rows, {len(self.devices)} device(s))")
