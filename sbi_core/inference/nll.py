"""The extended unbinned NLL of the likelihood contract (docs/likelihood-model.md, version 2), in JAX.

What to use when:
- `NLLModel.from_arrays(arrays, luminosity=...)` builds the model from one dataset's `LikelihoodArrays`
  held in memory; `NLLModel.from_file(path, ...)` streams a likelihood file chunk by chunk, so only the
  arrays the NLL keeps are ever held.
- `model.value(p)`, `grad(p)`, `value_and_grad(p)`, `hvp(p, v)`, `hvp_rows(p, V)` take the parameter
  vector p: the parameters of interest (config order), then the nuisance parameters (config order);
  `model.names` and `model.n_pois` say which is which. Any of them is an `Objective`
  (`sbi_core.inference.objective`) for `sbi_core.inference.fit.minimize`.
- `model.hessian(p)` builds the Hessian from HVP row blocks (`sbi_core.inference.hessian`: bounded
  memory, what the fit's errors use); `model.hessian_autodiff(p)` is `jax.hessian` of the whole NLL at once.

The model (theta = POIs, nu = nuisances, alpha_b(theta) = monomials(theta) @ morphing_matrix, samples s
owning columns b, F_k(nu_k) = (f_up, f_down) the interpolation basis of nuisance k, `interpolation.py`):

    rate_i = exp(C_i . F_c) * sum_s [ sum_{b in s} alpha_b exp(log_ratio[i, b]) ] * t_is(nu)
    t_is   = exp(V_is . F_m) * (1 + D_is . F_a)
    NLL    = L sigma(theta, nu) - sum_i weight_i log rate_i + sum_k (nu_k - aux_k)^2 / 2

The nuisance parameters fall into three groups, decided once when the model is built:
- common (c): a multiplicative scheme (`exponential`, `polyexp`) and the same per-event log ratios on every
  sample (always the case with one sample). log rate_i is linear in their F, so the events contribute
  S . F_c with S = sum_i weight_i C_i summed once: one pass over the data costs O(n B), independent of
  their number. This is the whole model of a version-1 file.
- per-sample multiplicative (m): a multiplicative scheme on some samples only, or with other log ratios per
  sample; V_is their per-sample log ratios (0 where the nuisance does not act).
- additive (a): the `linear` scheme (HistFactory code 0); D_is = exp(log ratio) - 1, the changes of all
  additive nuisances of a sample add up, as HistFactory adds histosys deltas.
With any m or a nuisance, each call evaluates the per-sample factors per event: O(n (B + S (|m| + |a|))).

The auxiliary data aux_k (global observables) are the dataset's (`LikelihoodArrays.aux`: 0 for observed
data, the conditional fit's nuisance values in an Asimov dataset, a draw from the constraint in a toy);
every constraint is a unit Gaussian, (nu_k - aux_k)^2 / 2 (constants dropped).

The expected rate sigma(theta, nu) (`normalization`):
- None (the contract's cross sections): sum_b alpha_b sigma_b exp(X_b . F_mult) (1 + Y_b . F_a) with
  X = log(xsec_var / sigma_b) and Y = xsec_var / sigma_b - 1 per column (so per sample). Cheap, but
  inconsistent with the per-event model between the +-1 points for shape nuisances (the integral of
  dsigma(x) exp(u(x) . F(nu)) is not (integral of dsigma e^u)^nu when u varies; seen on the benchmark's
  energy scale: a -3.9 sigma pull with 1300 events).
- an MC sample (`normalization=` arrays of the run's events, weights = their MC weights at the reference):
  sigma(theta, nu) = sum_j m_j rate_j(theta, nu), the same per-event model summed over the MC: normalised at
  every nu, so an Asimov dataset of the same events has its minimum exactly at its truth. A call reads per
  sample event its E, m and the common nuisances' log ratios C_j; a nuisance whose down log ratio is a fixed
  multiple of its up one on every event keeps one column (C = C' Q, C_j . F = C'_j . (Q F):
  `variation_pairs`; `fold_variations=False` keeps both). On one CPU device the sample is held in one part
  per core: `value_and_grad` runs the parts' passes (value and gradient in (alpha, Q F)) in threads and feeds
  the sums to the NLL; `value`, HVPs and Hessians scan the parts in turn.

How it is computed: per event the shifted ratios E[i, b] = exp(log_ratio[i, b] - m_i), m_i = max_b, are
stored once (dtype float64 or float32) with sum_i weight_i m_i kept aside, in chunks of at most
`chunk_rows` events (on CPU also at most ~256 KiB of arrays, to stay in cache; the last chunk padded with
weight-0 rows), events on the last axis, scanned by `lax.scan`, so the working memory is one chunk.
Without per-sample or additive nuisances the event term has a custom JVP that returns its value and its
gradient in alpha from the same pass over a chunk; otherwise JAX differentiates the scan (its body
rematerialised, so memory stays one chunk). Second derivatives (HVP, `jax.hessian`) differentiate that
pass again. Chunk sums are accumulated in float64 whatever the dtype (x64 is switched on when this module is
imported). One compiled function serves every model with the same shapes and structure: compiled once per
shape, never per call (the auxiliary data and the luminosity are data, not structure).

Signed morphing: alpha_b(theta) can be negative, so an event's rate can round to <= 0 (or be negative where
theta leaves the physical region of a learned model, or an additive variation overshoots). Such an event's
rate is floored at the rounding-error bound of its sum, B eps_dtype sum_s sum_b |alpha_b E_ib t_is| (at least
the dtype's smallest normal number): the NLL stays finite and differentiable and pays a large -log(floor)
for it, which pushes a fit back to where every observed event has a positive rate. `n_floored(p)` counts them.

Devices: with several JAX devices (or `devices=`), the event axis of every chunk is sharded across them
(`NamedSharding` on a 1-D mesh); the result equals the single-device one up to summation order.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.data.likelihood_arrays import LikelihoodArrays, iter_event_chunks
from sbi_core.inference.compilation import configure_jax
from sbi_core.inference.interpolation import ADDITIVE, basis_functions, schemes_for
from sbi_core.inference.objective import tolerance_floor
from sbi_core.inference.passes import morphing_weights as _alpha
from sbi_core.inference.variation_pairs import PairScan

configure_jax()  # float64 on, the persistent compilation cache: before the first compile of any inference step

__all__ = ["DTYPES", "EventSource", "NLLModel", "trace_count"]

DTYPES = ("float64", "float32")
_TRACES: Counter[str] = Counter()
_MIN_ROWS = 256  # smallest chunk: datasets smaller than a chunk are padded to a power of two above this
# per-event bytes per chunk on CPU: stays in cache between the two passes (XLA copies a scanned chunk out, then
# reads it twice); measured at 10^6 events, float32: 256 KiB chunks beat 2 MiB ones by 1.3-1.5x (data and MC)
CPU_CHUNK_BYTES = 256 << 10


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@cache
def _pool() -> ThreadPoolExecutor:
    """Threads for the normalisation sample's parts (JAX releases the GIL while a computation runs)."""
    return ThreadPoolExecutor(_cores(), thread_name_prefix="nll-norm")


if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads: a new pool there
    os.register_at_fork(after_in_child=_pool.cache_clear)


def trace_count(name: str = "nll") -> int:
    """How many times the NLL has been traced (compiled) in this process: tests check it does not grow."""
    return _TRACES[name]


@dataclass(frozen=True)
class _Structure:
    """The static part of a model (hashable: one compilation per structure and data shape)."""

    powers: tuple[tuple[int, ...], ...]
    n_pois: int
    n_nuis: int
    schemes: tuple[str, ...]
    eps_rel: float
    tiny: float
    mc_norm: bool = False
    common: tuple[int, ...] = ()  # nuisances in the separable term (multiplicative, alike on every sample)
    mult: tuple[int, ...] = ()  # multiplicative, per sample
    add: tuple[int, ...] = ()  # additive (linear scheme)

    @property
    def general(self) -> bool:
        """Whether per-sample factors are evaluated per event (any per-sample or additive nuisance)."""
        return bool(self.mult or self.add)

    @property
    def multiplicative(self) -> tuple[int, ...]:
        return tuple(sorted(self.common + self.mult))


# ---------------------------------------------------------------------------------------------- pure functions
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


def _linear_in(value: Any, g_alpha: Any, g_f: Any, tangents: tuple[Any, ...]) -> tuple[Any, Any]:
    """(value, its first-order change g_alpha . d_alpha + g_f . d_f) for tangents (d_alpha, d_f, ...)."""
    out = jnp.zeros_like(value)
    if type(tangents[0]) is not jax.custom_derivatives.SymbolicZero:
        out = out + g_alpha @ tangents[0]
    if type(tangents[1]) is not jax.custom_derivatives.SymbolicZero:
        out = out + g_f @ tangents[1]
    return value, out


def _norm_term_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
    return _linear_in(*_norm_scan(*primals, True), tangents)


_norm_term.defjvp(_norm_term_jvp, symbolic_zeros=True)


@jax.custom_jvp
def _norm_from_sums(alpha: Any, f: Any, value: Any, g_alpha: Any, g_f: Any) -> Any:
    """sigma from a normalisation pass's sums computed beforehand (`_norm_sums_jit`): first derivatives only."""
    return value


_norm_from_sums.defjvp(lambda primals, tangents: _linear_in(*primals[2:], tangents), symbolic_zeros=True)
_norm_sums_jit = jax.jit(lambda alpha, f, e, v, m: _norm_scan(alpha, f, e, v, m, True))


def _norm_parts(alpha: Any, f: Any, data: dict[str, Any]) -> Any:
    """sigma of the normalisation sample, held in one chunk stack or in a tuple of parts (`NLLModel._parts`)."""
    if "mc_sums" in data:
        return _norm_from_sums(alpha, f, *data["mc_sums"])
    e, v, m = data["mc_e"], data["mc_v"], data["mc_w"]
    if not isinstance(e, tuple):
        return _norm_term(alpha, f, e, v, m)
    return sum(_norm_term(alpha, f, *part) for part in zip(e, v, m, strict=True))


# ---------------------------------------------------------------------------------------------- per-sample path
def _sample_factors(fm: Any, fa: Any, vmc: Any, dac: Any, shape: tuple[int, int], dtype: Any) -> Any:
    """t (S, R): exp(V_s . F_m) (1 + D_s . F_a) per sample and event of a chunk (vmc (S, 2Km, R), dac (S, 2Ka, R))."""
    t = jnp.ones(shape, dtype)
    if vmc is not None:
        t = t * jnp.exp(jnp.einsum("f,sfr->sr", fm.astype(vmc.dtype), vmc))
    if dac is not None:
        t = t * (1.0 + jnp.einsum("f,sfr->sr", fa.astype(dac.dtype), dac))
    return t


def _general_rates(alpha: Any, fm: Any, fa: Any, owner: Any, ec: Any, vmc: Any, dac: Any,
                   eps: float, tiny: float) -> tuple[Any, Any]:
    """(rate (R,), floor (R,)) of one chunk: sum_s (sum_{b in s} alpha_b E_b) t_s, and its rounding bound."""
    r = (owner * alpha[None, :]).astype(ec.dtype) @ ec  # (S, R)
    r_abs = (owner * jnp.abs(alpha)[None, :]).astype(ec.dtype) @ ec
    t = _sample_factors(fm, fa, vmc, dac, r.shape, ec.dtype)
    rate = jnp.sum(r * t, axis=0)
    floor = jnp.maximum(eps * jnp.sum(r_abs * jnp.abs(t), axis=0), tiny)
    return rate, floor


def _event_general(alpha: Any, fm: Any, fa: Any, owner: Any, e: Any, w: Any, vm: Any, da: Any,
                   eps: float, tiny: float) -> Any:
    """sum_i w_i log max(rate_i, floor_i) over the chunks, differentiated by JAX (body rematerialised)."""

    @jax.checkpoint
    def body(carry: Any, xs: Any) -> tuple[Any, None]:
        ec, wc, vmc, dac = xs
        rate, floor = _general_rates(alpha, fm, fa, owner, ec, vmc, dac, eps, tiny)
        # padded rows (weight 0) take log(1): their 0 x log(tiny) would make second derivatives 0 x inf
        safe = jnp.where(wc != 0, jnp.where(rate > floor, rate, floor), 1.0)
        return carry + jnp.sum(wc * jnp.log(safe)).astype(jnp.float64), None

    return jax.lax.scan(body, jnp.zeros((), jnp.float64), (e, w, vm, da))[0]


def _norm_general(alpha: Any, fc: Any, fm: Any, fa: Any, owner: Any, e: Any, m: Any, v: Any, vm: Any,
                  da: Any) -> Any:
    """sum_j m_j exp(C_j . F_c) sum_s R_js t_js over the chunks of a normalisation sample."""

    @jax.checkpoint
    def body(carry: Any, xs: Any) -> tuple[Any, None]:
        ec, mc, vc, vmc, dac = xs
        r = (owner * alpha[None, :]).astype(ec.dtype) @ ec
        t = _sample_factors(fm, fa, vmc, dac, r.shape, ec.dtype)
        per_event = jnp.sum(r * t, axis=0)
        if vc is not None:
            per_event = per_event * jnp.exp(fc.astype(vc.dtype) @ vc)
        return carry + jnp.sum(mc * per_event).astype(jnp.float64), None

    return jax.lax.scan(body, jnp.zeros((), jnp.float64), (e, m, v, vm, da))[0]


# ---------------------------------------------------------------------------------------------- the NLL
def _basis(nu: Any, st: _Structure) -> Any:
    """F (K, 2): every nuisance's (f_up, f_down) with its own scheme."""
    if len(set(st.schemes)) == 1:  # one scheme for all: no gather/scatter in the compiled graph
        up, down = basis_functions(st.schemes[0])(nu)
        return jnp.stack([up, down], axis=1)
    out = jnp.zeros((st.n_nuis, 2), dtype=nu.dtype)
    for scheme in sorted(set(st.schemes)):
        idx = np.array([k for k, s in enumerate(st.schemes) if s == scheme])
        up, down = basis_functions(scheme)(nu[idx])
        out = out.at[idx].set(jnp.stack([up, down], axis=1))
    return out


def _flat(f: Any, idx: tuple[int, ...]) -> Any:
    """The (2 len(idx),) slice of F for the nuisances idx, indexed 2k + j."""
    if not idx:
        return jnp.zeros((0,), dtype=f.dtype)
    if idx == tuple(range(f.shape[0])):
        return f.reshape(-1)
    return f[np.array(idx)].reshape(-1)


def _alpha_f(p: Any, data: dict[str, Any], st: _Structure) -> tuple[Any, Any]:
    """Morphing weights alpha(theta) and the interpolation basis F(nu), (K, 2)."""
    alpha = _alpha(p[: st.n_pois], data["matrix"], st.powers)
    return alpha, _basis(p[st.n_pois :], st)


def _sigma(p: Any, data: dict[str, Any], st: _Structure) -> Any:
    """sigma(theta, nu): the contract's interpolated cross sections, or the normalisation sample's sum."""
    alpha, f = _alpha_f(p, data, st)
    fc, fm, fa = _flat(f, st.common), _flat(f, st.mult), _flat(f, st.add)
    if st.mc_norm:
        fq = data["mc_q"] @ fc  # the folded basis of the sample's common columns (`variation_pairs`)
        if st.general:
            return _norm_general(alpha, fq, fm, fa, data["owner"], data["mc_e"], data["mc_w"], data.get("mc_v"),
                                 data.get("mc_vm"), data.get("mc_da"))
        return _norm_parts(alpha, fq, data)
    per_b = data["xsec"] * jnp.exp(data["xsec_log"] @ _flat(f, st.multiplicative))
    if st.add:
        per_b = per_b * (1.0 + data["xsec_add"] @ fa)
    return jnp.sum(alpha * per_b)


def _nll(p: Any, data: dict[str, Any], st: _Structure) -> Any:
    """The NLL at p (POIs then nuisances) for the model `data` with structure `st`."""
    _TRACES["nll"] += 1  # runs once per trace, never per call
    nu = p[st.n_pois :]
    alpha, f = _alpha_f(p, data, st)
    sigma = _sigma(p, data, st)
    if st.general:
        events = _event_general(alpha, _flat(f, st.mult), _flat(f, st.add), data["owner"], data["e"], data["w"],
                                data.get("vm"), data.get("da"), st.eps_rel, st.tiny)
    else:
        events = _event_term(alpha, data["e"], data["w"], st.eps_rel, st.tiny)
    constraint = 0.5 * jnp.sum((nu - data["aux"]) ** 2)
    return data["lumi"] * sigma - events - data["shape_sum"] @ _flat(f, st.common) - data["weight_shift"] + constraint


def _n_floored(p: Any, data: dict[str, Any], st: _Structure) -> Any:
    alpha, f = _alpha_f(p, data, st)
    fm, fa = _flat(f, st.mult), _flat(f, st.add)

    def body(carry: Any, xs: Any) -> tuple[Any, None]:
        ec, wc, vmc, dac = xs
        if st.general:
            s, floor = _general_rates(alpha, fm, fa, data["owner"], ec, vmc, dac, st.eps_rel, st.tiny)
        else:
            s = alpha.astype(ec.dtype) @ ec
            floor = jnp.maximum(st.eps_rel * jnp.sum(jnp.abs(alpha)), st.tiny)
        bad = (s <= floor) & (wc != 0)
        return carry + jnp.sum(bad), None

    xs = (data["e"], data["w"], data.get("vm"), data.get("da"))
    return jax.lax.scan(body, jnp.zeros((), jnp.int64), xs)[0]


def _hvp(p: Any, v: Any, data: dict[str, Any], st: _Structure) -> Any:
    return jax.jvp(lambda q: jax.grad(_nll)(q, data, st), (p,), (v,))[1]


_value_jit = jax.jit(_nll, static_argnums=2)
_value_and_grad_jit = jax.jit(jax.value_and_grad(_nll), static_argnums=2)
_hvp_jit = jax.jit(_hvp, static_argnums=3)
_hvp_rows_jit = jax.jit(jax.vmap(_hvp, in_axes=(None, 0, None, None)), static_argnums=3)
_hessian_jit = jax.jit(jax.hessian(_nll), static_argnums=2)
_n_floored_jit = jax.jit(_n_floored, static_argnums=2)
_expected_jit = jax.jit(lambda p, data, st: data["lumi"] * _sigma(p, data, st), static_argnums=2)


@partial(jax.jit, static_argnums=2)
def _norm_basis_jit(p: Any, data: dict[str, Any], st: _Structure) -> tuple[Any, Any]:
    """(alpha, Q F_c): what a normalisation pass needs at p."""
    alpha, f = _alpha_f(p, data, st)
    return alpha, data["mc_q"] @ _flat(f, st.common)


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


def _per_sample(lrv: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    """(k, S, 2 len(idx)) per-sample values of the nuisances idx from (k, K, 2, S) log ratios."""
    sel = lrv[:, list(idx)]  # (k, m, 2, S)
    return sel.transpose(0, 3, 1, 2).reshape(lrv.shape[0], lrv.shape[3], 2 * len(idx))


class _Accumulator:
    """Builds the arrays the NLL keeps from event chunks (see the module doc for the three nuisance groups).

    Data (`normalization=False`): E = exp(log_ratio - m) and weights, with S = sum_i w_i C_i and sum_i w_i m_i
    kept aside. Normalisation sample (`True`): E, C (the common log ratios, flattened to 2|c|) and the weight
    times exp(m). Both: V (per-sample log ratios of the m group) and D (exp(log ratio) - 1 of the a group)."""

    def __init__(self, n: int, n_benchmarks: int, st: _Structure, rows: int, chunks: int, dtype: np.dtype,
                 normalization: bool = False) -> None:
        size = chunks * rows
        self.st = st
        self.e = np.zeros((size, n_benchmarks), dtype=dtype)
        self.w = np.zeros(size, dtype=dtype)
        self.v = np.zeros((size, 2 * len(st.common)), dtype=dtype) if normalization else None
        self.pairs = PairScan(len(st.common), rtol=16 * np.finfo(dtype).eps) if normalization else None
        self.vm: np.ndarray | None = None
        self.da: np.ndarray | None = None
        self.normalization = normalization
        self.shape_sum = np.zeros(2 * len(st.common))
        self.weight_shift = 0.0
        self.n = 0
        self.total = n
        self.rows, self.chunks, self.dtype = rows, chunks, dtype

    def _per_sample_arrays(self, n_samples: int) -> None:
        size = self.chunks * self.rows
        if self.st.mult and self.vm is None:
            self.vm = np.zeros((size, n_samples, 2 * len(self.st.mult)), dtype=self.dtype)
        if self.st.add and self.da is None:
            self.da = np.zeros((size, n_samples, 2 * len(self.st.add)), dtype=self.dtype)

    def add(self, part: LikelihoodArrays) -> None:
        lr = np.asarray(part.log_ratio, dtype=np.float64)
        w = np.asarray(part.weight, dtype=np.float64)
        lrv = np.asarray(part.log_ratio_var, dtype=np.float64)
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(lrv))):
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
        common = lrv[:, :, :, 0][:, list(self.st.common)].reshape(k, 2 * len(self.st.common))
        if self.normalization:
            assert self.v is not None and self.pairs is not None
            self.v[sl] = common
            self.pairs.add(common)
            self.w[sl] = w * np.exp(m)
        else:
            self.w[sl] = w
            self.shape_sum += w @ common
            self.weight_shift += float(w @ m)
        self._per_sample_arrays(lrv.shape[3])
        if self.vm is not None:
            self.vm[sl] = _per_sample(lrv, self.st.mult)
        if self.da is not None:
            self.da[sl] = np.expm1(_per_sample(lrv, self.st.add))
        self.n += k

    def fold(self) -> np.ndarray:
        """Fold the normalisation sample's variation pairs (`variation_pairs`): keep the columns a pass needs;
        Q (kept, 2|c|) maps the common nuisances' basis to theirs (identity when nothing folds)."""
        assert self.v is not None and self.pairs is not None
        columns, q = self.pairs.fold()
        self.v = np.ascontiguousarray(self.v[:, columns])
        return q

    def relayout(self, rows: int, chunks: int) -> None:
        """Chunks of another size (after folding, a row holds fewer bytes): the padding rows change only."""
        size = rows * chunks
        for name in ("e", "w", "v", "vm", "da"):
            arr = getattr(self, name)
            if arr is not None:
                out = np.zeros((size, *arr.shape[1:]), dtype=arr.dtype)
                out[: self.n] = arr[: self.n]
                setattr(self, name, out)
        self.rows, self.chunks = rows, chunks

    def _chunked(self, arr: np.ndarray | None) -> np.ndarray | None:
        """(rows total, *shape) -> (chunks, *shape, rows): events on the last axis."""
        if arr is None:
            return None
        out = arr.reshape(self.chunks, self.rows, *arr.shape[1:])
        return np.ascontiguousarray(np.moveaxis(out, 1, -1))

    def done(self) -> dict[str, np.ndarray | None]:
        if self.n != self.total:
            raise ValueError(f"likelihood arrays: expected {self.total} events, got {self.n}")
        return {"e": self._chunked(self.e), "w": self.w.reshape(self.chunks, self.rows), "v": self._chunked(self.v),
                "vm": self._chunked(self.vm), "da": self._chunked(self.da)}


#: (header, chunks, number of events): events read chunk by chunk. `chunks` is an iterable, or a callable that
#: returns a fresh one (needed when the nuisance groups depend on the data: several samples).
EventSource = tuple[LikelihoodArrays, Iterable[LikelihoodArrays] | Callable[[], Iterable[LikelihoodArrays]], int]


def _memory_source(arrays: LikelihoodArrays, chunk_rows: int) -> EventSource:
    step = max(1, chunk_rows)
    return arrays, lambda: (arrays.select(slice(s, s + step)) for s in range(0, arrays.n_events, step)), arrays.n_events


def _file_source(path: Path | str, chunk_rows: int, where: str | None) -> EventSource:
    import h5py

    from sbi_core.data.likelihood_arrays import read_arrays

    header = read_arrays(path, where=where, rows=slice(0, 0))
    with h5py.File(path, "r") as f:
        n = int(f["events/weight"].shape[0])
    return header, lambda: iter_event_chunks(path, max(1, chunk_rows), where=where), n


def _chunks(source: EventSource) -> Iterable[LikelihoodArrays]:
    chunks = source[1]
    return chunks() if callable(chunks) else chunks


def _groups(header: LikelihoodArrays, schemes: tuple[str, ...],
            sources: Sequence[EventSource]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], list[Any]]:
    """(common, per-sample multiplicative, additive) nuisance indices, and the sources' chunks to read next.

    A multiplicative nuisance is common when it acts on every sample with the same per-event log ratios: with
    one sample always; with several, checked on every event of every source (one extra pass over them)."""
    mask = np.asarray(header.modifier_mask)
    add = tuple(k for k, s in enumerate(schemes) if s in ADDITIVE)
    mult_all = [k for k, s in enumerate(schemes) if s not in ADDITIVE]
    if header.n_samples == 1:
        return tuple(mult_all), (), add, [_chunks(s) for s in sources]
    candidates = {k for k in mult_all if mask[k].all()}
    if candidates:
        for source in sources:
            for part in _chunks(source):
                lrv = part.log_ratio_var
                for k in list(candidates):
                    if not np.all(lrv[:, k] == lrv[:, k, :, :1]):
                        candidates.discard(k)
    common = tuple(k for k in mult_all if k in candidates)
    return common, tuple(k for k in mult_all if k not in candidates), add, [_chunks(s) for s in sources]


class NLLModel:
    """The contract's NLL for one dataset: a callable objective of p = (POIs, nuisances). See the module doc."""

    def __init__(
        self,
        events: EventSource,
        *,
        luminosity: float,
        normalization: EventSource | None = None,
        interpolation: str = "polyexp",
        schemes: Mapping[str, str] | None = None,
        aux: Sequence[float] | np.ndarray | None = None,
        dtype: str = "float64",
        chunk_rows: int = 262144,
        devices: Sequence[Any] | None = None,
        fold_variations: bool = True,
    ) -> None:
        """Prefer `from_arrays` / `from_file`. events: the dataset; normalization: an optional MC sample whose
        weighted sum gives sigma(theta, nu) (see the module doc; None: the contract's xsec interpolation);
        interpolation: the scheme of every nuisance, `schemes` {name: scheme} overriding it for some;
        aux: the auxiliary data (default: the dataset's `aux`); fold_variations: False keeps both columns of
        every variation pair of the normalisation sample (the unfolded reference path)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
        if not (math.isfinite(luminosity) and luminosity > 0):
            raise ValueError(f"luminosity: expected a finite value > 0, got {luminosity}")
        header, _, n_events = events
        self.schemes = schemes_for(header.nuisance, interpolation, schemes)
        self.devices = list(devices) if devices is not None else jax.devices()
        self.names = list(header.parameters) + list(header.nuisance)
        self.n_pois = len(header.parameters)
        self.n_params = len(self.names)
        self.n_events = int(n_events)
        self.luminosity = float(luminosity)
        self.interpolation = interpolation
        self.dtype = dtype
        self.normalization = "xsec" if normalization is None else "mc"
        self.samples = list(header.samples or ())
        n_k = len(header.nuisance)
        self.aux = self._aux(header.aux if aux is None else aux, n_k)
        np_dtype = np.dtype(dtype)
        sources = [self._reiterable(events)]
        if normalization is not None:
            if not header.same_model(normalization[0]):
                raise ValueError("normalization sample: its arrays describe another model than the dataset's")
            sources.append(self._reiterable(normalization))
        common, mult, add, chunk_iters = _groups(header, self.schemes, sources)
        self._st = _Structure(
            powers=tuple(tuple(int(x) for x in row) for row in np.asarray(header.morphing_components)),
            n_pois=self.n_pois, n_nuis=n_k, schemes=self.schemes, eps_rel=float(len(header.benchmarks)
                                                                                 * np.finfo(np_dtype).eps),
            tiny=float(np.finfo(np_dtype).tiny), mc_norm=normalization is not None, common=common, mult=mult, add=add,
        )
        self.groups = {"common": [header.nuisance[k] for k in common], "per_sample": [header.nuisance[k] for k in mult],
                       "additive": [header.nuisance[k] for k in add]}
        put, put_events = self._placement()
        data = self._accumulate(header, self.n_events, chunk_iters[0], chunk_rows, np_dtype, False)
        self.chunk_rows, self.n_chunks = data.pop("rows"), data.pop("chunks")
        self._data = {name: put_events(arr) for name, arr in data.items() if isinstance(arr, np.ndarray)
                      and name not in ("shape_sum", "weight_shift")}
        self._data.update(self._model_arrays(header, put, data))
        self.n_normalization = self.mc_columns = 0
        if normalization is not None:
            n_mc = int(normalization[2])
            norm = self._accumulate(header, n_mc, chunk_iters[1], chunk_rows, np_dtype, True, fold_variations)
            parts = self._n_parts(norm["e"].shape[0])
            for name in ("e", "w", "v", "vm", "da"):
                if norm[name] is not None:
                    self._data[f"mc_{name}"] = put_events(norm[name]) if parts < 2 or name in ("vm", "da") \
                        else tuple(put_events(x) for x in np.array_split(norm[name], parts))
            self._data["mc_q"] = put(norm["q"])
            self.mc_columns = int(norm["q"].shape[0])  # variation columns per sample event, of 2 x common
            self.n_normalization = n_mc
        self._cache: tuple[bytes, float, np.ndarray] | None = None

    def _n_parts(self, n_chunks: int) -> int:
        """On one CPU device, the common-only normalisation sample is held in parts of whole chunks, one per
        core: `value_and_grad` runs their passes in parallel threads (a pass of small chunks is one thread)."""
        if self._st.general or len(self.devices) > 1 or self.devices[0].platform != "cpu":
            return 1
        return min(_cores(), n_chunks)

    def _with_norm_sums(self, p: Any) -> dict[str, Any]:
        """The model's arrays with the normalisation sample's parts replaced by their summed passes at p."""
        alpha, fq = _norm_basis_jit(p, self._data, self._st)
        parts = zip(self._data["mc_e"], self._data["mc_v"], self._data["mc_w"], strict=True)
        sums = list(_pool().map(lambda part: jax.block_until_ready(_norm_sums_jit(alpha, fq, *part)), parts))
        data = {k: v for k, v in self._data.items() if k not in ("mc_e", "mc_v", "mc_w")}
        data["mc_sums"] = tuple(sum(terms[1:], terms[0]) for terms in zip(*sums, strict=True))
        return data

    @staticmethod
    def _aux(aux: Any, n_k: int) -> np.ndarray:
        arr = np.asarray(aux, dtype=np.float64)
        if arr.shape != (n_k,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"aux: expected {n_k} finite auxiliary data, got {arr.tolist()}")
        return arr

    @staticmethod
    def _reiterable(source: EventSource) -> EventSource:
        """A source whose chunks can be read twice (a plain iterable is kept in memory)."""
        if callable(source[1]):
            return source
        parts = list(source[1])
        return source[0], lambda: parts, source[2]

    def _placement(self) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        """(put a model array, put a per-event array): device_put, sharded over the event axis with several devices."""
        if len(self.devices) > 1:
            from jax.sharding import Mesh, NamedSharding
            from jax.sharding import PartitionSpec as P

            mesh = Mesh(np.array(self.devices), ("events",))

            def put_events(x: np.ndarray) -> Any:
                return jax.device_put(x, NamedSharding(mesh, P(*([None] * (x.ndim - 1)), "events")))

            return partial(jax.device_put, device=NamedSharding(mesh, P())), put_events
        put = partial(jax.device_put, device=self.devices[0])
        return put, put

    def _accumulate(self, header: LikelihoodArrays, n: int, chunks: Iterable[LikelihoodArrays], chunk_rows: int,
                    np_dtype: np.dtype, normalization: bool, fold: bool = False) -> dict[str, Any]:
        st = self._st
        n_b, n_s = len(header.benchmarks), header.n_samples

        def layout(n_common: int) -> tuple[int, int]:
            row_bytes = (n_b + 1 + n_common + n_s * 2 * (len(st.mult) + len(st.add))) * np_dtype.itemsize
            return _chunk_layout(n, chunk_rows, len(self.devices), row_bytes, self.devices[0].platform)

        rows, n_chunks = layout(2 * len(st.common) if normalization else 0)
        acc = _Accumulator(n, n_b, st, rows, n_chunks, np_dtype, normalization=normalization)
        for part in chunks:
            acc.add(part)
        q = None
        if normalization:
            q = acc.fold() if fold else np.eye(2 * len(st.common))
            rows, n_chunks = layout(q.shape[0])
            if (rows, n_chunks) != (acc.rows, acc.chunks):
                acc.relayout(rows, n_chunks)
        out: dict[str, Any] = acc.done()
        out["q"] = q
        out.update(shape_sum=acc.shape_sum, weight_shift=acc.weight_shift, rows=rows, chunks=n_chunks)
        return out

    def _model_arrays(self, header: LikelihoodArrays, put: Callable[[Any], Any], data: dict[str, Any]) -> dict[str, Any]:
        """The model's small arrays: morphing, cross sections, sample ownership, the constant sums, aux, L."""
        st = self._st
        n_b = len(header.benchmarks)
        xsec = np.asarray(header.xsec, dtype=np.float64)
        ratio = np.asarray(header.xsec_var, dtype=np.float64) / xsec[None, None, :]  # (K, 2, B)

        def per_column(values: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
            return np.ascontiguousarray(values[list(idx)].transpose(2, 0, 1).reshape(n_b, 2 * len(idx)))

        owner = np.zeros((header.n_samples, n_b))
        owner[np.asarray(header.benchmark_sample), np.arange(n_b)] = 1.0
        return {
            "matrix": put(np.asarray(header.morphing_matrix, dtype=np.float64)),
            "xsec": put(xsec),
            "xsec_log": put(per_column(np.log(ratio), st.multiplicative)),
            "xsec_add": put(per_column(ratio - 1.0, st.add)),
            "owner": put(owner),
            "shape_sum": put(np.asarray(data["shape_sum"], dtype=np.float64)),
            "weight_shift": put(np.float64(data["weight_shift"])),
            "lumi": put(np.float64(self.luminosity)),
            "aux": put(self.aux),
        }

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_arrays(cls, arrays: LikelihoodArrays, *, luminosity: float,
                    normalization: LikelihoodArrays | None = None, interpolation: str = "polyexp",
                    schemes: Mapping[str, str] | None = None, aux: Sequence[float] | np.ndarray | None = None,
                    dtype: str = "float64", chunk_rows: int = 262144,
                    devices: Sequence[Any] | None = None, fold_variations: bool = True) -> NLLModel:
        """The NLL of arrays held in memory (normalization: the MC sample's arrays, weights = MC weights)."""
        norm = None if normalization is None else _memory_source(normalization, chunk_rows)
        return cls(_memory_source(arrays, chunk_rows), luminosity=luminosity, normalization=norm,
                   interpolation=interpolation, schemes=schemes, aux=aux, dtype=dtype, chunk_rows=chunk_rows,
                   devices=devices, fold_variations=fold_variations)

    @classmethod
    def from_file(cls, path: Path | str, *, luminosity: float, normalization: Path | str | None = None,
                  interpolation: str = "polyexp", schemes: Mapping[str, str] | None = None,
                  aux: Sequence[float] | np.ndarray | None = None, dtype: str = "float64", chunk_rows: int = 262144,
                  devices: Sequence[Any] | None = None, where: str | None = None,
                  fold_variations: bool = True) -> NLLModel:
        """The NLL of a likelihood file (`write_arrays` format), read chunk by chunk (bounded memory)."""
        norm = None if normalization is None else _file_source(normalization, chunk_rows, None)
        return cls(_file_source(path, chunk_rows, where), luminosity=luminosity, normalization=norm,
                   interpolation=interpolation, schemes=schemes, aux=aux, dtype=dtype, chunk_rows=chunk_rows,
                   devices=devices, fold_variations=fold_variations)

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
        p_dev = self._p(arr)
        data = self._with_norm_sums(p_dev) if isinstance(self._data.get("mc_e"), tuple) else self._data
        v, g = _value_and_grad_jit(p_dev, data, self._st)
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
        """Events whose rate at p is at or below the rounding floor (see the module doc)."""
        return int(_n_floored_jit(self._p(p), self._data, self._st))

    @property
    def tolerance_floor(self) -> float:
        """The smallest Migrad tolerance this NLL's rounding allows (`objective.tolerance_floor`)."""
        return tolerance_floor(self.dtype)

    def expected_events(self, p: Any) -> float:
        """L sigma(theta, nu): the expected number of events at p."""
        return float(_expected_jit(self._p(p), self._data, self._st))

    @property
    def event_arrays(self) -> dict[str, Any]:
        """The per-event device arrays one NLL call reads (benchmarks compare against reading them once)."""
        keys = ("e", "w", "vm", "da", "mc_e", "mc_w", "mc_v", "mc_vm", "mc_da")
        out = {}
        for k, v in self._data.items():
            if k in keys:
                out.update({f"{k}.{i}": x for i, x in enumerate(v)} if isinstance(v, tuple) else {k: v})
        return out

    def __call__(self, p: Any) -> float:
        return self.value(p)

    def __repr__(self) -> str:
        return (f"NLLModel({self.n_events} events, {self.n_pois} POIs + {self.n_params - self.n_pois} nuisances, "
                f"{len(self.samples)} sample(s), {self.dtype}, {self.n_chunks} x {self.chunk_rows} rows, "
                f"{len(self.devices)} device(s))")
