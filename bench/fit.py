"""fit: Migrad with the JAX gradient vs Migrad with numerical gradients on a NumPy NLL of the same model.

Synthetic contract arrays (2 POIs, N events, K shape nuisances, Asimov data at (0.3, -0.2), the expected
rate summed over the same N events at their MC weights: the default "mc" normalisation). Ours:
`sbi_core.inference.fit.minimize` on the float64 `NLLModel` (strategy 0, analytic gradient, the HVP
Hessian as Migrad's seed; compilation measured apart, not in the fit time). Baseline: `Minuit(numpy_nll)` with Minuit's numerical gradient and
its default strategy 1, on a NumPy NLL that computes the same value with the same precomputations (exp of
the log ratios and the data's summed variations done once; one pass over the MC per call).

The NumPy side is capped (say so in `numpy_extrapolated`): Migrad's number of calls hardly depends on N, so
it is counted by a full numerical fit at N_count events, and the NumPy time at N is that count times the
median time of one NumPy call at N. At K = 1 the full numerical fit at N is run and timed directly.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from typing import Any

import numpy as np

from bench.common import Figure, emit, repeat


class NumpyNLL:
    """The same NLL as NLLModel (polyexp interpolation, MC normalisation) in NumPy, value only."""

    def __init__(self, data: Any, mc: Any, luminosity: float) -> None:
        from sbi_core.inference.interpolation import polyexp_coefficients
        from sbi_core.physics.morphing import Morphing

        self.names = list(data.parameters) + list(data.nuisance)
        self.n_pois = len(data.parameters)
        self.morphing = Morphing(data.morphing_components, data.benchmark_values)
        self.up, self.down = polyexp_coefficients()
        self.lumi = luminosity
        self.e = np.exp(data.log_ratio)
        self.w = data.weight
        self.shape_sum = np.einsum("i,ikj->kj", data.weight, data.log_ratio_var[..., 0]).reshape(-1)  # one sample
        self.mc_e = np.exp(mc.log_ratio)
        self.mc_v = mc.log_ratio_var.reshape(mc.n_events, -1)
        self.mc_w = mc.weight

    def _f(self, nu: np.ndarray) -> np.ndarray:
        inside = np.abs(nu) <= 1
        x = np.clip(nu, -1, 1)
        up = sum(c * x ** (j + 1) for j, c in enumerate(self.up))
        down = sum(c * x ** (j + 1) for j, c in enumerate(self.down))
        f_up = np.where(inside, up, np.maximum(nu, 0))
        f_down = np.where(inside, down, np.maximum(-nu, 0))
        return np.stack([f_up, f_down], axis=1).reshape(-1)

    def __call__(self, p: np.ndarray) -> float:
        theta, nu = p[: self.n_pois], p[self.n_pois :]
        alpha = self.morphing.basis_coefficients(theta)
        f = self._f(nu)
        sigma = np.sum(self.mc_w * (self.mc_e @ alpha) * np.exp(self.mc_v @ f))
        rate = np.maximum(self.e @ alpha, 1e-300)
        return float(self.lumi * sigma - self.w @ np.log(rate) - self.shape_sum @ f + 0.5 * nu @ nu)


def _arrays(n: int, k: int) -> tuple[Any, Any]:
    from sbi_core.inference.synthetic import synthetic_arrays

    data = synthetic_arrays(n, k, truth=(0.3, -0.2), seed=k)
    return data, replace(data, weight=np.full(n, 5.0 / n))


def _numeric_fit(fcn: NumpyNLL, x0: np.ndarray) -> tuple[int, float, bool]:
    from iminuit import Minuit

    m = Minuit(fcn, x0, name=fcn.names)
    m.errordef = Minuit.LIKELIHOOD
    t0 = time.perf_counter()
    m.migrad()
    return int(m.nfcn), time.perf_counter() - t0, bool(m.valid)


def run(quick: bool) -> list[dict[str, Any]]:
    from sbi_core.inference.fit import minimize
    from sbi_core.inference.nll import NLLModel

    n = 100_000 if quick else 1_000_000
    n_count = 20_000
    ks = (1, 10) if quick else (1, 10, 50, 100)
    records = []
    for k in ks:
        data, mc = _arrays(n, k)
        x0 = np.zeros(2 + k)
        t0 = time.perf_counter()
        model = NLLModel.from_arrays(data, luminosity=200.0, normalization=mc)
        model.value_and_grad(x0 + 0.01)
        model.value(x0 + 0.02)
        model.hessian(x0 + 0.03)
        t_compile = time.perf_counter() - t0
        fits = []

        def ours(model: NLLModel = model, fits: list = fits, x0: np.ndarray = x0) -> None:
            fits.append(minimize(model, start=x0, errors=False))

        t_ours = repeat(ours, 1 if k >= 50 else 3)
        res = fits[-1]
        np_nll = NumpyNLL(data, mc, 200.0)
        t_call = statistics.median(repeat(lambda f=np_nll, x=x0 + 0.01: f(x), 3))
        if k == 1:
            calls, t_np, np_valid = _numeric_fit(np_nll, x0)
            extrapolated = False
        else:
            small, small_mc = _arrays(n_count, k)
            calls, _, np_valid = _numeric_fit(NumpyNLL(small, small_mc, 200.0), x0)
            t_np = calls * t_call
            extrapolated = True
        fig = Figure(name="fit", sizes={"events": n, "nuisances": k}, ours=t_ours, baseline=[t_np],
                     ours_label="JAX+grad Migrad s", baseline_label="numeric-gradient Migrad s (NumPy)",
                     target=">= 50x at K=100", invert=True,
                     extra={"ours_calls": res.calls, "ours_grad_calls": res.grad_calls, "ours_valid": res.valid,
                            "compile_s": round(t_compile, 2), "numpy_calls": calls, "numpy_call_s": round(t_call, 4),
                            "numpy_valid": np_valid,
                            "numpy_extrapolated": (f"calls counted by a full numeric fit at {n_count} events, "
                                                   f"times one NumPy call at {n}") if extrapolated else False})
        records.append(fig.record())
        emit(records[-1])
        del model, data, mc, np_nll
    return records
