"""The JAX NLL against a direct NumPy evaluation of the contract's formula; compilation, dtypes, devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from sbi_core.inference.interpolation import polyexp_coefficients
from sbi_core.inference.nll import NLLModel, trace_count
from sbi_core.inference.synthetic import synthetic_arrays, two_sample_arrays

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _f(nu: np.ndarray, kind: str) -> np.ndarray:
    """(K, 2) interpolation basis written out independently of the module (plain Python)."""
    up, down = polyexp_coefficients()
    out = []
    for x in nu:
        if kind == "polyexp" and abs(x) <= 1:
            out.append((sum(c * x ** (j + 1) for j, c in enumerate(up)), sum(c * x ** (j + 1) for j, c in enumerate(down))))
        else:
            out.append((max(x, 0.0), max(-x, 0.0)))
    return np.array(out).reshape(len(nu), 2)


def reference_nll(a, p: np.ndarray, lumi: float, kind: str = "polyexp", *, schemes=None, norm=None,
                  aux=None) -> float:
    """The contract's NLL (version 2), term by term as docs/likelihood-model.md writes it (no shortcut): per event
    and column, the morphing weight times exp(log ratio) times the factors of the nuisances acting on the column's
    sample (multiplicative schemes multiply, additive ones add their changes); norm: an MC sample (else xsec)."""
    n_p = len(a.parameters)
    theta, nu = p[:n_p], p[n_p:]
    alpha = np.array([np.prod(theta ** np.asarray(row)) for row in a.morphing_components]) @ a.morphing_matrix
    kinds = [(schemes or {}).get(name, kind) for name in a.nuisance]
    f = np.vstack([_f(np.array([x]), k) for x, k in zip(nu, kinds, strict=True)]) if len(nu) else np.zeros((0, 2))
    owner = np.asarray(a.benchmark_sample)

    def factors(lrv_s: np.ndarray) -> np.ndarray:
        """(m,) the sample's factor per event from its (m, K, 2) log ratios."""
        mult = np.ones(lrv_s.shape[0])
        add = np.ones(lrv_s.shape[0])
        for k, scheme in enumerate(kinds):
            if scheme == "linear":
                add += np.expm1(lrv_s[:, k]) @ f[k]
            else:
                mult *= np.exp(lrv_s[:, k] @ f[k])
        return mult * add

    def rates(arr) -> np.ndarray:
        out = np.zeros(arr.n_events)
        for b in range(len(arr.benchmarks)):
            out += alpha[b] * np.exp(arr.log_ratio[:, b]) * factors(arr.log_ratio_var[:, :, :, owner[b]])
        return out

    if norm is not None:
        sigma = np.sum(norm.weight * rates(norm))
    else:
        ratio = a.xsec_var / a.xsec  # (K, 2, B)
        sigma = 0.0
        for b in range(len(a.benchmarks)):
            sigma += alpha[b] * a.xsec[b] * factors(np.log(ratio[:, :, b])[None])[0]
    aux = np.zeros(len(nu)) if aux is None else aux
    return lumi * sigma - np.sum(a.weight * np.log(rates(a))) + 0.5 * np.sum((nu - aux) ** 2)


@pytest.fixture(scope="module")
def arrays():
    return synthetic_arrays(3000, 3, truth=(0.3, -0.2), seed=4)


@pytest.mark.parametrize("kind", ["polyexp", "exponential"])
def test_value_and_gradient_match_the_formula(arrays, kind):
    model = NLLModel.from_arrays(arrays, luminosity=200.0, interpolation=kind, chunk_rows=1024)
    assert model.names == ["theta0", "theta1", "nu0", "nu1", "nu2"] and model.n_pois == 2
    assert model.n_chunks == 3 and model.chunk_rows == 1024  # 3000 events in chunks of 1024, the last padded
    rng = np.random.default_rng(0)
    for p in [np.array([0.3, -0.2, 0.0, 0.0, 0.0]), np.array([0.1, 0.4, 0.7, -1.6, 0.3]), rng.normal(0, 0.5, 5)]:
        ref = reference_nll(arrays, p, 200.0, kind)
        assert model.value(p) == pytest.approx(ref, rel=1e-12)
        h = 1e-6
        numeric = np.array([(reference_nll(arrays, p + h * e, 200.0, kind) - reference_nll(arrays, p - h * e, 200.0, kind))
                            / (2 * h) for e in np.eye(5)])
        # central differences of a ~1e3 function: absolute error ~1e-6
        np.testing.assert_allclose(model.grad(p), numeric, rtol=1e-6, atol=2e-5)


def test_compiled_once_per_shape(arrays):
    model = NLLModel.from_arrays(arrays, luminosity=200.0, chunk_rows=1024)
    p = np.array([0.1, 0.1, 0.0, 0.2, -0.1])
    model.value(p)
    model.value_and_grad(p)
    before = trace_count()
    for k in range(5):
        model.value(p + 0.01 * k)
        model.grad(p - 0.01 * k)
    # another dataset of the same size and structure reuses the compiled functions
    other = NLLModel.from_arrays(synthetic_arrays(3000, 3, seed=9), luminosity=100.0, chunk_rows=1024)
    other.value(p)
    other.grad(p)
    assert trace_count() == before


def test_float32_close_to_float64(arrays):
    m64 = NLLModel.from_arrays(arrays, luminosity=200.0)
    m32 = NLLModel.from_arrays(arrays, luminosity=200.0, dtype="float32")
    p = np.array([0.2, -0.1, 0.3, 0.0, -0.4])
    # float32 per-event terms, float64 sums: relative error of the event sum ~ 1e-7
    assert abs(m32.value(p) - m64.value(p)) < 1e-6 * abs(m64.value(p))
    np.testing.assert_allclose(m32.grad(p), m64.grad(p), rtol=1e-4, atol=1e-3)


def test_negative_morphed_rate_is_floored_finite(arrays):
    model = NLLModel.from_arrays(arrays, luminosity=200.0)
    far = np.array([-40.0, 35.0, 0.0, 0.0, 0.0])  # amplitudes cross zero for many events: rates round to ~0
    v, g = model.value_and_grad(far)
    assert np.isfinite(v) and np.all(np.isfinite(g))
    assert model.n_floored(np.array([0.3, -0.2, 0, 0, 0])) == 0


def test_bad_parameter_vectors_are_named(arrays):
    model = NLLModel.from_arrays(arrays, luminosity=200.0)
    with pytest.raises(ValueError, match=r"p: expected shape \(5,\)"):
        model.value(np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        model.grad(np.array([np.nan, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="interpolation"):
        NLLModel.from_arrays(arrays, luminosity=200.0, interpolation="cubic")
    with pytest.raises(ValueError, match="luminosity"):
        NLLModel.from_arrays(arrays, luminosity=-1.0)


def _numeric_grad(fn, p: np.ndarray, h: float = 1e-6) -> np.ndarray:
    return np.array([(fn(p + h * e) - fn(p - h * e)) / (2 * h) for e in np.eye(p.size)])


@pytest.fixture(scope="module")
def two_samples():
    """Signal (6 morphed columns) and a background column; lumi on both, bkg_norm on the background only,
    sig_shape on the signal only (data: unit weights on 2000 events; normalisation: the same events as MC)."""
    data = two_sample_arrays(2000, truth=(0.3, -0.2), weights="unit", seed=5)
    mc = replace(data, weight=np.full(data.n_events, 5.0 / data.n_events))
    return data, mc


@pytest.mark.parametrize(("norm", "schemes"), [("mc", {"sig_shape": "linear", "lumi": "exponential"}), ("xsec", None)])
def test_per_sample_modifiers_match_the_formula(two_samples, norm, schemes):
    """Version 2: a nuisance acting on one sample only, an additive (HistFactory code 0) one, auxiliary data."""
    data, mc = two_samples
    aux = np.array([0.3, -0.5, 0.1])
    model = NLLModel.from_arrays(data, luminosity=300.0, normalization=mc if norm == "mc" else None, schemes=schemes,
                                 aux=aux, chunk_rows=512)
    expect_common = ["lumi"] if (schemes or {}).get("lumi", "polyexp") != "linear" else []
    assert model.groups["common"] == expect_common and model.samples == ["signal", "background"]
    assert ("sig_shape" in model.groups["additive"]) == bool(schemes)

    def ref(q: np.ndarray) -> float:
        return reference_nll(data, q, 300.0, schemes=schemes, norm=mc if norm == "mc" else None, aux=aux)

    for p in (np.array([0.3, -0.2, 0.0, 0.0, 0.0]), np.array([0.1, 0.3, 0.4, -1.3, 0.7]),
              np.array([-0.2, 0.1, -1.6, 1.2, -0.3])):
        assert model.value(p) == pytest.approx(ref(p), rel=1e-12)
        np.testing.assert_allclose(model.grad(p), _numeric_grad(ref, p), rtol=1e-6, atol=2e-5)
    if norm == "mc":  # second derivatives (HVP rows, the errors' Hessian) against finite differences of the gradient
        h = model.hessian(p)
        numeric = np.array([(model.grad(p + 1e-5 * e) - model.grad(p - 1e-5 * e)) / 2e-5 for e in np.eye(p.size)])
        np.testing.assert_allclose(h, numeric, rtol=1e-5, atol=1e-5 * np.abs(h).max())
        np.testing.assert_allclose(h, h.T, rtol=1e-9, atol=1e-9 * np.abs(h).max())


def test_auxiliary_data_move_the_constraint_only(two_samples):
    data, _ = two_samples
    p = np.array([0.2, -0.1, 0.4, -0.3, 1.1])
    base = NLLModel.from_arrays(data, luminosity=300.0)
    aux = np.array([1.0, -2.0, 0.5])
    moved = NLLModel.from_arrays(replace(data, aux=aux), luminosity=300.0)  # the dataset's own aux
    nu = p[2:]
    assert moved.value(p) - base.value(p) == pytest.approx(0.5 * np.sum((nu - aux) ** 2 - nu**2), rel=1e-12)
    np.testing.assert_allclose(moved.grad(p)[2:] - base.grad(p)[2:], -aux, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="aux"):
        NLLModel.from_arrays(data, luminosity=300.0, aux=[0.0, np.nan, 0.0])


def test_asimov_of_two_samples_has_its_minimum_at_the_truth():
    """MC normalisation by the same events: the Asimov NLL is stationary at (truth, nu = 0) with per-sample
    modifiers too (the gradient vanishes to rounding)."""
    data = two_sample_arrays(3000, truth=(0.3, -0.2), seed=6)
    mc = replace(data, weight=np.full(data.n_events, 5.0 / data.n_events))
    model = NLLModel.from_arrays(data, luminosity=200.0, normalization=mc)
    g = model.grad(np.array([0.3, -0.2, 0.0, 0.0, 0.0]))
    assert np.max(np.abs(g)) < 1e-9 * model.expected_events(np.array([0.3, -0.2, 0.0, 0.0, 0.0]))


def test_per_sample_model_compiles_once(two_samples):
    data, mc = two_samples
    model = NLLModel.from_arrays(data, luminosity=300.0, normalization=mc, chunk_rows=512)
    p = np.array([0.1, 0.1, 0.0, 0.2, -0.1])
    model.value_and_grad(p)
    before = trace_count()
    other = NLLModel.from_arrays(replace(data, aux=np.array([0.5, 0.0, -0.5])), luminosity=100.0, normalization=mc,
                                 chunk_rows=512)
    for k in range(3):
        other.value_and_grad(p + 0.01 * k)
    assert trace_count() == before  # aux and luminosity are data, not structure


_SHARDED = """
import json, sys, numpy as np, jax
from sbi_core.inference.nll import NLLModel
from sbi_core.inference.synthetic import synthetic_arrays, two_sample_arrays
from dataclasses import replace
a = synthetic_arrays(5001, 4, truth=(0.3, -0.2), seed=2)
p = np.array([0.25, -0.1, 0.3, -0.5, 1.2, 0.0])
b = two_sample_arrays(3001, seed=3)
q = np.array([0.2, -0.1, 0.3, -0.6, 0.9])
out = {"devices": len(jax.devices())}
for name, devs in (("one", jax.devices()[:1]), ("all", jax.devices())):
    m = NLLModel.from_arrays(a, luminosity=200.0, chunk_rows=2048, devices=devs)
    v, g = m.value_and_grad(p)
    out[name] = [v, g.tolist(), m.hvp(p, np.arange(6.0)).tolist()]
    # version 2: per-sample and additive modifiers (their per-event arrays sharded too), MC normalisation
    m2 = NLLModel.from_arrays(b, luminosity=100.0, normalization=replace(b, weight=np.full(3001, 5.0 / 3001)),
                              schemes={"sig_shape": "linear"}, chunk_rows=1024, devices=devs)
    v2, g2 = m2.value_and_grad(q)
    out[name + "_v2"] = [v2, g2.tolist()]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_two_devices_equal_one():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", _SHARDED], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["devices"] == 2
    (v1, g1, h1), (v2, g2, h2) = out["one"], out["all"]
    assert v2 == pytest.approx(v1, rel=1e-10)
    np.testing.assert_allclose(g2, g1, rtol=1e-10, atol=1e-10 * np.abs(g1).max())
    np.testing.assert_allclose(h2, h1, rtol=1e-10, atol=1e-10 * np.abs(h1).max())
    (v1, g1), (v2, g2) = out["one_v2"], out["all_v2"]
    assert v2 == pytest.approx(v1, rel=1e-10)
    np.testing.assert_allclose(g2, g1, rtol=1e-10, atol=1e-10 * np.abs(g1).max())
