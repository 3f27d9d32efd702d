"""One pass over a block of events: the NLL's sums in the inner variables, and the chain rule to the parameters.

The contract's NLL (docs/likelihood-model.md) depends on the parameters p = (theta, nu) only through the
morphing weights alpha = A(theta) (B numbers) and the interpolation basis F = F(nu) (2K numbers, f_up and
f_down of every nuisance). So a pass over the events needs only (alpha, F) and returns a few sums; the
parameters enter afterwards, in `assemble`, by the chain rule on small arrays:

    NLL = L sigma(alpha, F) - sum_i w_i log(E_i . alpha) - S . F - W + nu . nu / 2

- data events (`data_pass`): sum_i w_i log(E_i . alpha) (floored as in `sbi_core.inference.nll`), its
  gradient sum_i w_i E_i / s_i and (order 2) its Hessian -sum_i w_i E_i E_i^T / s_i^2, B x B;
- normalisation sample (`mc_pass`, the `mc` normalisation): sigma = sum_j (W_j . alpha) exp(V_j . F) with
  W_j = m_j exp(log_ratio_j) the sample's weight at every benchmark; its gradients in alpha and F; and
  (order 2) the two Hessian blocks that are not zero, already contracted with dF/dnu (D, per nuisance the
  derivatives of f_up and f_down): sum_j exp(V_j . F) W_j v_j^T (B x K) and the weighted Gram matrix
  sum_j (W_j . alpha) exp(V_j . F) v_j v_j^T (K x K), v_j = per nuisance u_jk f_up' + d_jk f_down'.

The exact Hessian therefore costs one pass and a K x K matrix product per chunk (what a BLAS does best),
instead of one pass per block of Hessian-vector products. Block sums add: a model whose events are in
many blocks (resident or streamed, `sbi_core.inference.event_store`) sums them before `assemble`.

Precision: arrays in float32 or float64; every chunk's sums are accumulated in float64, the elementwise
log-terms reduced in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from sbi_core.inference.compilation import configure_jax
from sbi_core.inference.interpolation import basis_functions

configure_jax()

__all__ = ["Structure", "assemble", "data_pass", "mc_pass", "morphing_weights", "prepare"]

F64 = jnp.float64


@dataclass(frozen=True)
class Structure:
    """The static part of a model (hashable: one compilation per structure)."""

    powers: tuple[tuple[int, ...], ...]
    n_pois: int
    n_nuis: int
    interpolation: str
    eps_rel: float
    tiny: float
    mc_norm: bool


def morphing_weights(theta: Any, matrix: Any, powers: tuple[tuple[int, ...], ...]) -> Any:
    """alpha_b(theta) = monomials(theta) @ matrix; integer powers keep the derivatives finite at 0."""
    monos = []
    for row in powers:
        m = jnp.ones((), dtype=theta.dtype)
        for j, k in enumerate(row):
            if k:
                m = m * theta[j] ** k
        monos.append(m)
    return jnp.stack(monos) @ matrix


def _basis(nu: Any, st: Structure) -> tuple[Any, Any, Any]:
    """F (2K,) indexed 2k + j, and its first and second derivatives per nuisance, (K, 2) each."""
    fns = basis_functions(st.interpolation)

    def both(x: Any) -> Any:
        return jnp.stack(fns(x), axis=-1)  # (K, 2): the scheme is elementwise in nu

    def first(x: Any) -> Any:
        return jax.jvp(both, (x,), (jnp.ones_like(x),))[1]

    f = both(nu)
    d1, d2 = jax.jvp(first, (nu,), (jnp.ones_like(nu),))
    return f.reshape(-1), d1, d2


@partial(jax.jit, static_argnums=2)
def prepare(p: Any, matrix: Any, st: Structure) -> tuple[Any, Any, Any]:
    """(alpha, F, D) at p: what a pass needs."""
    alpha = morphing_weights(p[: st.n_pois], matrix, st.powers)
    f, d1, _ = _basis(p[st.n_pois :], st)
    return alpha, f, d1


@partial(jax.jit, static_argnames=("eps", "tiny", "order"))
def data_pass(alpha: Any, e: Any, w: Any, *, eps: float, tiny: float, order: int) -> dict[str, Any]:
    """Sums over a block of data events, e (chunks, B, rows) = exp(log_ratio - max), w (chunks, rows)."""
    dt = e.dtype
    n_b = alpha.shape[0]
    floor = jnp.maximum(eps * jnp.sum(jnp.abs(alpha)), tiny).astype(dt)
    a = alpha.astype(dt)

    def body(carry: dict[str, Any], xs: tuple[Any, Any]) -> tuple[dict[str, Any], None]:
        ec, wc = xs
        s = a @ ec
        ok = s > floor
        safe = jnp.where(ok, s, floor)
        u = jnp.where(ok, wc / safe, 0.0)
        out = {"value": jnp.sum(wc.astype(F64) * jnp.log(safe).astype(F64)),
               "grad": (ec @ u).astype(F64),
               "w_floored": jnp.sum(jnp.where(ok, 0.0, wc)).astype(F64),
               "n_floored": jnp.sum((~ok) & (wc != 0))}
        if order >= 2:
            out["hess"] = (-(ec * (u / safe)) @ ec.T).astype(F64)
        return {k: carry[k] + v for k, v in out.items()}, None

    init = {"value": jnp.zeros((), F64), "grad": jnp.zeros(n_b, F64), "w_floored": jnp.zeros((), F64),
            "n_floored": jnp.zeros((), jnp.int64)}
    if order >= 2:
        init["hess"] = jnp.zeros((n_b, n_b), F64)
    return jax.lax.scan(body, init, (e, w))[0]


@partial(jax.jit, static_argnames=("order",))
def mc_pass(alpha: Any, f: Any, d: Any, e: Any, v: Any, *, order: int) -> dict[str, Any]:
    """Sums over a block of the normalisation sample: e (chunks, B, rows) = W, v (chunks, rows, 2K) = V."""
    dt = e.dtype
    n_b, n_k = alpha.shape[0], d.shape[0]
    a, fa, da = alpha.astype(dt), f.astype(dt), d.astype(dt)

    def body(carry: dict[str, Any], xs: tuple[Any, Any]) -> tuple[dict[str, Any], None]:
        ec, vc = xs
        rate = a @ ec
        shape = jnp.exp(vc @ fa)
        c = rate * shape
        out = {"value": jnp.sum(c.astype(F64)), "grad_alpha": (ec @ shape).astype(F64),
               "grad_f": (c @ vc).astype(F64)}
        if order >= 2:
            vd = vc[:, 0::2] * da[:, 0] + vc[:, 1::2] * da[:, 1]  # (rows, K): u f_up' + d f_down'
            out["hess_an"] = ((ec * shape) @ vd).astype(F64)
            out["hess_nn"] = (vd.T @ (vd * c[:, None])).astype(F64)
        return {k: carry[k] + val for k, val in out.items()}, None

    init = {"value": jnp.zeros((), F64), "grad_alpha": jnp.zeros(n_b, F64), "grad_f": jnp.zeros(2 * n_k, F64)}
    if order >= 2:
        init.update(hess_an=jnp.zeros((n_b, n_k), F64), hess_nn=jnp.zeros((n_k, n_k), F64))
    return jax.lax.scan(body, init, (e, v))[0]


def _xsec_sigma(alpha: Any, f: Any, xsec: Any, xsec_log: Any) -> Any:
    """The contract's interpolated cross sections: sum_b alpha_b sigma_b exp(X_b . F)."""
    return jnp.sum(alpha * xsec * jnp.exp(xsec_log @ f))


def _sigma_terms(alpha: Any, f: Any, d1: Any, sums: dict[str, Any], const: dict[str, Any], st: Structure,
                 order: int) -> dict[str, Any]:
    """sigma, its gradients in (alpha, F), and (order 2) its Hessian blocks contracted with D."""
    if st.mc_norm:
        mc = sums["mc"]
        out = {"value": mc["value"], "grad_alpha": mc["grad_alpha"], "grad_f": mc["grad_f"]}
        if order >= 2:
            out.update(hess_aa=jnp.zeros((alpha.size, alpha.size), F64), hess_an=mc["hess_an"],
                       hess_nn=mc["hess_nn"])
        return out
    fn = partial(_xsec_sigma, xsec=const["xsec"], xsec_log=const["xsec_log"])
    value, (ga, gf) = jax.value_and_grad(fn, argnums=(0, 1))(alpha, f)
    out = {"value": value, "grad_alpha": ga, "grad_f": gf}
    if order >= 2:
        (haa, haf), (_, hff) = jax.hessian(fn, argnums=(0, 1))(alpha, f)
        k = st.n_nuis
        dmat = (jnp.eye(k)[:, None, :] * d1[:, :, None]).reshape(2 * k, k)  # dF/dnu, (2K, K)
        out.update(hess_aa=haa, hess_an=haf @ dmat, hess_nn=dmat.T @ hff @ dmat)
    return out


@partial(jax.jit, static_argnames=("st", "order"))
def assemble(p: Any, sums: dict[str, Any], const: dict[str, Any], *, st: Structure, order: int) -> dict[str, Any]:
    """NLL, gradient and (order 2) Hessian at p from the summed passes (see the module doc)."""
    theta, nu = p[: st.n_pois], p[st.n_pois :]
    k = st.n_nuis

    def weights(t: Any) -> Any:
        return morphing_weights(t, const["matrix"], st.powers)

    alpha = weights(theta)
    f, d1, d2 = _basis(nu, st)
    data = sums["data"]
    scale = jnp.sum(jnp.abs(alpha))
    on = (st.eps_rel * scale > st.tiny).astype(F64)
    safe_scale = jnp.where(scale > 0, scale, 1.0)
    w_fl = data["w_floored"] * on
    g_ev = data["grad"] + jnp.sign(alpha) * w_fl / safe_scale  # floored events: log(eps sum|alpha|)
    sig = _sigma_terms(alpha, f, d1, sums, const, st, order)
    lumi, shape_sum = const["lumi"], const["shape_sum"]
    nll = lumi * sig["value"] - data["value"] - const["weight_shift"] - shape_sum @ f + 0.5 * nu @ nu
    c_a = lumi * sig["grad_alpha"] - g_ev
    c_f = (lumi * sig["grad_f"] - shape_sum).reshape(k, 2)
    jac = jax.jacfwd(weights)(theta)  # (B, P)
    grad = jnp.concatenate([jac.T @ c_a, jnp.sum(c_f * d1, axis=1) + nu])
    out = {"value": nll, "grad": grad, "sigma": sig["value"], "n_floored": data["n_floored"]}
    if order >= 2:
        sign = jnp.sign(alpha)
        h_ev = data["hess"] - w_fl * jnp.outer(sign, sign) / safe_scale**2
        h_tt = jac.T @ (lumi * sig["hess_aa"] - h_ev) @ jac + jax.hessian(lambda t: c_a @ weights(t))(theta)
        h_tn = lumi * jac.T @ sig["hess_an"]
        h_nn = lumi * sig["hess_nn"] + jnp.diag(jnp.sum(c_f * d2, axis=1)) + jnp.eye(k)
        out["hess"] = jnp.block([[h_tt, h_tn], [h_tn.T, h_nn]])
    return out
