"""The NLL of a theta-parametrised learned ratio (ALICES, ALICE, RASCAL, CARL, ROLR), evaluated inside the fit.

What to use when:
- `ParametrisedNLL(log_ratio, params, observations, arrays, ...)` is an `Objective`: log r(x | theta) comes from
  a JAX function of (params, x, theta) evaluated at every call, in chunks of events (memory bounded by one
  chunk), jitted once per shape, its gradient (and Hessian) in theta and nu by autodiff.
- `exported_ensemble(exports, n_observables, n_parameters, where)` turns an ensemble's `export.npz` members
  (`sbi_core.ml.export`) into that function (the members' mean log r) and its parameters.
- `load_exports(layout, method)` reads the members of a run's `METHOD/theta/nominal` ensemble (no torch);
  `ensemble_function(root, method, ...)` is both, once per process (every model of that network shares one
  compiled NLL per shape).
- `ParametrisedGenerator(pool, model, ...)`: toys and Asimov datasets of the run's events drawn and weighted with
  the network's rates (`model.mc_log_rates`); `stats_steps` fits each through the network (scans, limits, toys).

The model (one sample; the rate arrays come from `learned_arrays(..., estimator=METHOD)`, docs/likelihood-model.md):

    rate_i(theta, nu) = sigma(theta) / sigma_ref * rhat(x_i | theta) / Z(theta) * T_i(nu)
    NLL = L sigma(theta, nu) - sum_i w_i log rate_i + sum_k (nu_k - aux_k)^2 / 2

with sigma(theta) = sum_b alpha_b(theta) sigma_b (the morphed fiducial cross sections: the networks learn the
shape p(x|theta) / p(x|ref), not the rate), T_i(nu) the per-event variation factors of the contract's
`log_ratio_var` (normalisations: constants; shape systematics: the per-variation networks, taken at the
reference) interpolated as in `NLLModel`, and
- normalisation `mc`: Z(theta) = sum_j m_j rhat_j / sum_j m_j and sigma(theta, nu) = sigma(theta) sum_j m_j rhat_j
  T_j / sum_j m_j rhat_j over the run's own events (MC weights m_j at the reference): the learned density is
  normalised over the MC at every theta and the shape nuisances' rate effect is weighted by it;
- normalisation `xsec` (no MC sample): Z = 1 and sigma(theta, nu) = sum_b alpha_b sigma_b T_b(nu) from the
  contract's `xsec/variations` (the network is trusted to be normalised).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbi_core.data.likelihood_arrays import LikelihoodArrays
from sbi_core.errors import InputError
from sbi_core.inference.compilation import configure_jax
from sbi_core.inference.interpolation import ADDITIVE, schemes_for
from sbi_core.inference.nll import _basis, _Structure
from sbi_core.inference.normalization_table import NormalizationTable, chebyshev_log_z
from sbi_core.inference.passes import morphing_weights as _alpha
from sbi_core.inference.toys import ToyGenerator, toy_rng

configure_jax()

__all__ = ["ParametrisedGenerator", "ParametrisedNLL", "ensemble_function", "exported_ensemble", "load_exports"]

LogRatioFn = Callable[[Any, Any, Any], Any]  # (params, x (R, O), theta (P,)) -> log r (R,)
_MIN_ROWS = 256


def load_exports(layout: Any, method: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(member ids, export dicts) of the run's METHOD/theta/nominal ensemble; InputError naming what is missing."""
    from sbi_core import storage
    from sbi_core.ml.export import load_export

    uri = layout.ensemble(method, "theta", "nominal")
    if not storage.exists(uri):
        raise InputError(f"inference.estimator {method}: no ensemble {method}/theta/nominal in run {layout.root} "
                         f"({uri} is missing): train it (training.methods) and run `sbi-core ensemble`")
    record = storage.read_json(uri)
    if record.get("status") != "ok" or not record.get("members"):
        raise InputError(f"inference.estimator {method}: ensemble {method}/theta/nominal has no usable members")
    members = list(record["members"])
    return members, [load_export(layout.network_file(nid, "export.npz")) for nid in members]


def exported_ensemble(exports: Sequence[dict[str, Any]], n_observables: int, n_parameters: int,
                      where: str = "ensemble") -> tuple[LogRatioFn, Any]:
    """(log_ratio(params, x, theta), params): the mean over members of each export's log r(x | theta), in JAX.

    InputError naming the ensemble and the events when a member's input size is not the events' observables or
    the parameters' count, or when it is not a parametrised log-ratio network."""
    from sbi_core.ml.export import forward

    statics, params = [], []
    for i, ex in enumerate(exports):
        n_x, n_t = int(ex["x_mean"].shape[0]), int(ex["theta_mean"].shape[0])
        if str(ex["output"]) != "log_ratio" or n_t == 0:
            raise InputError(f"{where} member {i}: a {str(ex['output'])} network of x{' and theta' if n_t else ''}; "
                             "the parametrised source needs log r(x | theta)")
        if n_x != n_observables:
            raise InputError(f"{where} member {i} takes {n_x} observables, the events have {n_observables}: the "
                             "networks were trained on other observables (retrain, or fit the run they belong to)")
        if n_t != n_parameters:
            raise InputError(f"{where} member {i} takes {n_t} parameters, the model has {n_parameters}")
        statics.append({k: ex[k] for k in ("activation", "n_layers", "output")})
        params.append({k: jnp.asarray(np.asarray(v, dtype=np.float64)) for k, v in ex.items()
                       if k.startswith(("weight_", "bias_")) or k in ("x_mean", "x_std", "theta_mean", "theta_std")})

    def log_ratio(p: Any, x: Any, theta: Any) -> Any:
        t = jnp.broadcast_to(theta, (x.shape[0], theta.shape[0]))
        outs = [forward({**s, **m}, x, t, xp=jnp)[:, 0] for s, m in zip(statics, p, strict=True)]
        return sum(outs) / len(outs)

    return log_ratio, params


@functools.lru_cache(maxsize=16)
def ensemble_function(root: str, method: str, n_observables: int, n_parameters: int) -> tuple[LogRatioFn, Any]:
    """`exported_ensemble` of a run's METHOD/theta/nominal ensemble, loaded once per process: every model built with
    it (the dataset's, Asimov datasets', toys') shares one compiled NLL per shape."""
    from sbi_core.layout import RunLayout

    layout = RunLayout(root)
    return exported_ensemble(load_exports(layout, method)[1], n_observables, n_parameters,
                             where=f"ensemble {method}/theta/nominal ({root})")


def _chunked(a: np.ndarray, rows: int, chunks: int) -> np.ndarray:
    """(n, ...) -> (chunks, rows, ...), padded with copies of the first row (their weights are 0)."""
    n = a.shape[0]
    pad = chunks * rows - n
    if pad:
        a = np.concatenate([a, np.broadcast_to(a[:1], (pad, *a.shape[1:]))], axis=0)
    return np.ascontiguousarray(a).reshape(chunks, rows, *a.shape[1:])


def _layout(n: int, chunk_rows: int) -> tuple[int, int]:
    """(rows per chunk, chunks): n rounded up to an eighth of its power of two (at most 12.5% padding, few shapes
    to compile across toys of varying size), in chunks of at most chunk_rows."""
    chunks = max(1, math.ceil(n / chunk_rows))
    per = math.ceil(max(n, 1) / chunks)
    step = max(_MIN_ROWS // 8, (1 << max(0, math.ceil(math.log2(per)))) // 8)
    return max(_MIN_ROWS, math.ceil(per / step) * step), chunks


class ParametrisedNLL:
    """The extended NLL of a parametrised learned ratio (see the module doc); an `Objective`."""

    def __init__(self, log_ratio: LogRatioFn, params: Any, observations: np.ndarray, arrays: LikelihoodArrays, *,
                 luminosity: float, normalization: tuple[np.ndarray, LikelihoodArrays] | None = None,
                 interpolation: str = "polyexp", schemes: dict[str, str] | None = None,
                 chunk_rows: int = 65536, table: NormalizationTable | None = None,
                 where: str = "likelihood arrays") -> None:
        if arrays.n_samples != 1:
            raise InputError(f"{where}: the parametrised source has one sample, the arrays have {arrays.samples}")
        x = np.asarray(observations, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != arrays.n_events:
            raise InputError(f"{where}: observations {x.shape} do not match the arrays' {arrays.n_events} events")
        self.names = [*arrays.parameters, *arrays.nuisance]
        self.n_pois, self.n_params = len(arrays.parameters), len(self.names)
        self.n_events = arrays.n_events
        k = len(arrays.nuisance)
        sch = schemes_for(arrays.nuisance, interpolation, schemes)
        self._st = _Structure(tuple(map(tuple, np.asarray(arrays.morphing_components).tolist())), self.n_pois, k,
                              sch, 0.0, 0.0)
        self._add = np.array([s in ADDITIVE for s in sch], dtype=bool)
        ref = arrays.benchmarks.index(arrays.reference)
        xs = np.asarray(arrays.xsec, dtype=np.float64)
        xlog = np.log(np.asarray(arrays.xsec_var, dtype=np.float64) / xs[None, None, :])  # (K, 2, B)
        self._data: dict[str, Any] = {
            "matrix": jnp.asarray(arrays.morphing_matrix), "xsec": jnp.asarray(xs),
            "log_xsec_ref": float(np.log(xs[ref])), "xsec_log": jnp.asarray(xlog),
            "aux": jnp.asarray(arrays.aux), "lumi": float(luminosity), "params": params,
        }
        self._data.update(self._events("", x, arrays, chunk_rows))
        self.n_normalization = 0
        if normalization is not None:
            x_mc, mc = normalization
            x_mc = np.asarray(x_mc, dtype=np.float64)
            if x_mc.ndim != 2 or x_mc.shape != (mc.n_events, x.shape[1]):
                raise InputError(f"{where}: normalisation observations {x_mc.shape} do not match its "
                                 f"{mc.n_events} events of {x.shape[1]} observables")
            self._data.update(self._events("mc_", x_mc, mc, chunk_rows))
            self._data["mc_total"] = float(np.sum(mc.weight))
            self.n_normalization = mc.n_events
        self._mc = normalization is not None
        self.table = table
        #: where the objective is defined (`fit.minimize` bounds its fits to it): the table's box
        self.domain = {} if table is None else {n: (float(lo), float(hi)) for n, lo, hi in
                                                zip(arrays.parameters, table.lo, table.hi, strict=True)}
        if table is not None:
            self._data.update(table=table.arrays(), v_const=jnp.asarray(_constant_variations(arrays, normalization,
                                                                                              where)))
        mode = "table" if table is not None else "mc" if self._mc else "xsec"
        self._log_ratio = log_ratio
        self._value, self._vg, self._hess, self._sigma = _compiled(log_ratio, self._st, tuple(self._add.tolist()),
                                                                   mode)

    @staticmethod
    def _events(prefix: str, x: np.ndarray, arrays: LikelihoodArrays, chunk_rows: int) -> dict[str, Any]:
        rows, chunks = _layout(x.shape[0], chunk_rows)
        w = np.zeros(chunks * rows)
        w[: x.shape[0]] = arrays.weight
        v = np.asarray(arrays.log_ratio_var, dtype=np.float64)[..., 0]  # (n, K, 2): one sample
        return {f"{prefix}x": jnp.asarray(_chunked(x, rows, chunks)), f"{prefix}w": jnp.asarray(w.reshape(chunks, rows)),
                f"{prefix}v": jnp.asarray(_chunked(v, rows, chunks))}

    def _p(self, p: Any) -> Any:
        a = np.asarray(p, dtype=np.float64)
        if a.shape != (self.n_params,):
            raise ValueError(f"p: expected shape ({self.n_params},) for {self.names}, got {a.shape}")
        if self.table is not None and not self.table.inside(a[: self.n_pois]):
            raise ValueError(f"p: {dict(zip(self.names[: self.n_pois], a[: self.n_pois].tolist(), strict=True))} is "
                             f"outside the normalisation table's box [{self.table.lo}, {self.table.hi}]: bound the fit "
                             "to it")
        return jnp.asarray(a)

    def value(self, p: Any) -> float:
        return float(self._value(self._p(p), self._data))

    def value_and_grad(self, p: Any) -> tuple[float, np.ndarray]:
        v, g = self._vg(self._p(p), self._data)
        return float(v), np.asarray(g, dtype=np.float64)

    def grad(self, p: Any) -> np.ndarray:
        return self.value_and_grad(p)[1]

    def hessian(self, p: Any) -> np.ndarray:
        return np.asarray(self._hess(self._p(p), self._data), dtype=np.float64)

    def hvp_rows(self, p: Any, vectors: Any) -> np.ndarray:
        """H(p) v for each row v of `vectors` (m, n): the Hessian step's blocks (P + K is small: the whole Hessian)."""
        return np.asarray(vectors, dtype=np.float64) @ self.hessian(p)

    def expected_events(self, p: Any) -> float:
        return float(self._data["lumi"] * self._sigma(self._p(p), self._data))

    def mc_log_rates(self, p: Any) -> np.ndarray:
        """log(sigma(theta) / sigma_ref * rhat_j(theta) / Z(theta) * T_j(nu)) per normalisation event (n_mc,): times
        its MC weight, event j's expected cross section at p (they sum to sigma(theta, nu)); what Asimov datasets
        and toys of this model weight and draw the run's events with."""
        if not self._mc:
            raise ValueError("mc_log_rates: the model has no normalisation sample (normalisation mc)")
        out = _mc_log_rates(self._p(p), self._data, log_ratio=self._log_ratio, st=self._st,
                            add=tuple(self._add.tolist()))
        return np.asarray(out, dtype=np.float64).reshape(-1)[: self.n_normalization]

    def n_floored(self, p: Any) -> int:
        return 0  # rates are exp(...) > 0; an additive variation is clipped at its tiny floor (see _log_t)

    def __call__(self, p: Any) -> float:
        return self.value(p)


@functools.lru_cache(maxsize=32)
def _compiled(log_ratio: LogRatioFn, st: _Structure, add: tuple[bool, ...], mode: str) -> tuple[Any, ...]:
    """(value, value_and_grad, hessian, sigma) jitted once per network function, structure and normalisation
    (xsec, mc, table): models of other events with the same function (toys, profile points) reuse them, compiled
    again only for a new shape."""
    kw = {"log_ratio": log_ratio, "st": st, "add": add, "mode": mode}
    fn = partial(_nll, **kw)
    return jax.jit(fn), jax.jit(jax.value_and_grad(fn)), jax.jit(jax.hessian(fn)), jax.jit(partial(_sigma, **kw))


@partial(jax.jit, static_argnames=("log_ratio", "st", "add"))
def _mc_log_rates(p: Any, data: dict[str, Any], *, log_ratio: LogRatioFn, st: _Structure,
                  add: tuple[bool, ...]) -> Any:
    """Per MC event (chunks, rows): log(sigma(theta) / sigma_ref * rhat / Z * T); see `ParametrisedNLL.mc_log_rates`."""
    theta, f = p[: st.n_pois], _basis(p[st.n_pois :], st)
    per = jax.lax.map(lambda xs: log_ratio(data["params"], xs[0], theta) + _log_t(xs[1], f, add),
                      (data["mc_x"], data["mc_v"]))
    _, mc_r, _ = _sums(p, data, st, log_ratio, add, "mc_")
    return per + jnp.log(_sigma_theta(p, data, st)) - data["log_xsec_ref"] - jnp.log(mc_r / data["mc_total"])


def _constant_variations(arrays: LikelihoodArrays, normalization: tuple[np.ndarray, LikelihoodArrays] | None,
                         where: str) -> np.ndarray:
    """The (K, 2) log variation factors every event shares (what a normalisation table needs); InputError naming
    the nuisance whose factors differ between events (a shape systematic: fit with the run's events instead)."""
    sets = [arrays] + ([normalization[1]] if normalization is not None else [])
    rows = [np.asarray(a.log_ratio_var, dtype=np.float64)[..., 0] for a in sets if a.n_events]
    if not rows:
        raise InputError(f"{where}: no events to read the variation factors from")
    first = rows[0][0]
    for r in rows:
        bad = np.flatnonzero(~np.all(np.isclose(r, first[None], rtol=0.0, atol=1e-12), axis=(0, 2)))
        if bad.size:
            names = [arrays.nuisance[k] for k in bad]
            raise InputError(f"{where}: nuisance {names[0]!r} changes the events' shapes (its variation factors "
                             "differ between events): a normalisation table holds only when every event shares "
                             "them; fit with normalisation mc instead")
    return first


def _log_t(v: Any, f: Any, add: tuple[bool, ...]) -> Any:
    """log T (R,) of one chunk's variations v (R, K, 2) at the basis F (K, 2): multiplicative nuisances add
    their log ratios, additive ones (HistFactory code 0) their changes (clipped at a tiny positive floor)."""
    mask = np.array(add, dtype=bool)
    out = jnp.einsum("rkj,kj->r", v[:, ~mask], f[~mask])
    if mask.any():
        out = out + jnp.log(jnp.maximum(1.0 + jnp.einsum("rkj,kj->r", jnp.expm1(v[:, mask]), f[mask]), 1e-300))
    return out


def _sums(p: Any, data: dict[str, Any], st: _Structure, log_ratio: LogRatioFn, add: tuple[bool, ...],
          prefix: str) -> tuple[Any, Any, Any]:
    """Over one event set, chunk by chunk (each chunk rematerialised under differentiation: memory is one
    chunk): sum w (log rhat + log T), sum w rhat, sum w rhat T."""
    theta, f = p[: st.n_pois], _basis(p[st.n_pois :], st)

    @jax.checkpoint
    def body(carry: Any, xs: Any) -> tuple[Any, None]:
        xc, wc, vc = xs
        lr = log_ratio(data["params"], xc, theta)
        lt = _log_t(vc, f, add)
        return (carry[0] + wc @ (lr + lt), carry[1] + wc @ jnp.exp(lr), carry[2] + wc @ jnp.exp(lr + lt)), None

    zero = jnp.zeros((), dtype=jnp.float64)
    out, _ = jax.lax.scan(body, (zero, zero, zero), (data[f"{prefix}x"], data[f"{prefix}w"], data[f"{prefix}v"]))
    return out


def _sigma_theta(p: Any, data: dict[str, Any], st: _Structure) -> Any:
    """sigma(theta) at nu = 0: the morphed fiducial cross sections."""
    return _alpha(p[: st.n_pois], data["matrix"], st.powers) @ data["xsec"]


def _sigma_xsec(p: Any, data: dict[str, Any], st: _Structure, add: tuple[bool, ...]) -> Any:
    """sigma(theta, nu) from the contract's cross sections at nu = +-1, interpolated as the events are."""
    alpha, f = _alpha(p[: st.n_pois], data["matrix"], st.powers), _basis(p[st.n_pois :], st)
    mask = np.array(add, dtype=bool)
    per_b = data["xsec"] * jnp.exp(jnp.einsum("kjb,kj->b", data["xsec_log"][~mask], f[~mask]))
    if mask.any():
        per_b = per_b * (1.0 + jnp.einsum("kjb,kj->b", jnp.expm1(data["xsec_log"][mask]), f[mask]))
    return jnp.sum(alpha * per_b)


def _rate(p: Any, data: dict[str, Any], st: _Structure, log_ratio: LogRatioFn, add: tuple[bool, ...],
          mode: str) -> tuple[Any, Any]:
    """(sigma(theta, nu), log Z(theta)): see the module doc; mode table: log Z from the Chebyshev series and
    T(nu) from the variation factors every event shares (normalisation_table.py)."""
    if mode == "xsec":
        return _sigma_xsec(p, data, st, add), 0.0
    if mode == "table":
        lt = _log_t(data["v_const"][None], _basis(p[st.n_pois :], st), add)[0]
        return _sigma_theta(p, data, st) * jnp.exp(lt), chebyshev_log_z(p[: st.n_pois], data["table"])
    _, mc_r, mc_rt = _sums(p, data, st, log_ratio, add, "mc_")
    return _sigma_theta(p, data, st) * mc_rt / mc_r, jnp.log(mc_r / data["mc_total"])


def _sigma(p: Any, data: dict[str, Any], *, log_ratio: LogRatioFn, st: _Structure, add: tuple[bool, ...],
           mode: str) -> Any:
    return _rate(p, data, st, log_ratio, add, mode)[0]


def _nll(p: Any, data: dict[str, Any], *, log_ratio: LogRatioFn, st: _Structure, add: tuple[bool, ...],
         mode: str) -> Any:
    """The NLL at p (POIs then nuisances)."""
    sigma, log_z = _rate(p, data, st, log_ratio, add, mode)
    ev, _, _ = _sums(p, data, st, log_ratio, add, "")
    events = ev + jnp.sum(data["w"]) * (jnp.log(_sigma_theta(p, data, st)) - data["log_xsec_ref"] - log_z)
    return data["lumi"] * sigma - events + 0.5 * jnp.sum((p[st.n_pois :] - data["aux"]) ** 2)


class ParametrisedGenerator(ToyGenerator):
    """Toys and Asimov datasets of a parametrised model: `toys.ToyGenerator`'s, with each run event's rate from the
    network (`ParametrisedNLL.mc_log_rates` of `model`, whose normalisation sample is the pool), not from the pool's
    rate columns. Each dataset's meta `pool_rows` says which pool events it holds (the fit needs their x)."""

    def __init__(self, pool: LikelihoodArrays, model: ParametrisedNLL, **kwargs: Any) -> None:
        if model.n_normalization != pool.n_events:
            raise InputError(f"the parametrised model's normalisation sample has {model.n_normalization} events, "
                             f"the pool {pool.n_events}: toys and Asimov datasets need normalisation mc")
        super().__init__(pool, **kwargs)
        self.model = model

    def log_rates(self, p: Any) -> tuple[np.ndarray, int]:
        with np.errstate(divide="ignore"):
            return self.model.mc_log_rates(p) + np.log(np.asarray(self.pool.weight, dtype=np.float64)), 0

    def hvp_rows(self, p: Any, vectors: Any) -> np.ndarray:
        """H(p) v for each row v of `vectors` (m, n): the Hessian step's blocks (P + K is small: the whole Hessian)."""
        return np.asarray(vectors, dtype=np.float64) @ self.hessian(p)

    def expected_events(self, p: Any) -> float:
        return self.model.expected_events(p)

    def toy(self, p: Any, seed: int, index: int) -> LikelihoodArrays:
        rng = toy_rng(seed, index)  # the base class's draws, in its order
        rows, counts = self.draw(p, rng)
        aux = self.draw_aux(p, rng)
        return replace(self.pool.select(rows), weight=counts, aux=aux,
                       meta={**self.pool.meta, "toy": int(index), "toy_seed": int(seed), "pool_rows": rows})

    def asimov(self, p: Any) -> LikelihoodArrays:
        arrays = super().asimov(p)  # every rate is exp(...) > 0: every pool row, in order
        return replace(arrays, meta={**arrays.meta, "pool_rows": np.arange(self.pool.n_events)})
