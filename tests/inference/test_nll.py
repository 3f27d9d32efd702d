"""The JAX NLL against a direct NumPy evaluation of the contract's formula; compilation, dtypes, devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sbi_core.inference.interpolation import polyexp_coefficients
from sbi_core.inference.nll import NLLModel, trace_count
from sbi_core.inference.synthetic import synthetic_arrays
from sbi_core.physics.morphing import Morphing

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


def reference_nll(a, p: np.ndarray, lumi: float, kind: str = "polyexp") -> float:
    """The contract's NLL, term by term as docs/likelihood-model.md writes it (no shortcut)."""
    n_p = len(a.parameters)
    theta, nu = p[:n_p], p[n_p:]
    alpha = Morphing(a.morphing_components, a.benchmark_values).basis_coefficients(theta)
    f = _f(nu, kind)
    g_xsec = np.exp(np.einsum("kjb,kj->b", np.log(a.xsec_var / a.xsec), f))
    sigma = np.sum(alpha * a.xsec * g_xsec)
    rate = np.exp(a.log_ratio) @ alpha * np.exp(np.einsum("ikj,kj->i", a.log_ratio_var, f))
    return lumi * sigma - np.sum(a.weight * np.log(rate)) + 0.5 * nu @ nu


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
        NLLModel.from_arrays(arrays, luminosity=200.0, interpolation="linear")
    with pytest.raises(ValueError, match="luminosity"):
        NLLModel.from_arrays(arrays, luminosity=-1.0)


_SHARDED = """
import json, sys, numpy as np, jax
from sbi_core.inference.nll import NLLModel
from sbi_core.inference.synthetic import synthetic_arrays
a = synthetic_arrays(5001, 4, truth=(0.3, -0.2), seed=2)
p = np.array([0.25, -0.1, 0.3, -0.5, 1.2, 0.0])
out = {"devices": len(jax.devices())}
for name, devs in (("one", jax.devices()[:1]), ("all", jax.devices())):
    m = NLLModel.from_arrays(a, luminosity=200.0, chunk_rows=2048, devices=devs)
    v, g = m.value_and_grad(p)
    out[name] = [v, g.tolist(), m.hvp(p, np.arange(6.0)).tolist()]
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
