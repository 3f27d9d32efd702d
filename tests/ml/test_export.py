"""export.npz: the network as plain arrays, and its numpy (and JAX) forward equal to the torch forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbi_core.errors import InputError
from sbi_core.ml.export import export_network, forward, load_export, save_export
from sbi_core.ml.mlp import build_mlp
from sbi_core.ml.model_io import load_model, save_model
from tests.ml.synthetic import gaussian_set, tensors


@pytest.mark.parametrize(("activation", "n_theta", "n_out"), [("tanh", 2, 1), ("relu", 0, 1), ("silu", 0, 2)])
def test_numpy_forward_equals_torch(tmp_path, activation, n_theta, n_out):
    torch.manual_seed(1)
    data = tensors(gaussian_set(500, 4))
    model = build_mlp(5, n_theta, n_out, hidden=[32, 16], activation=activation)
    theta = data["theta0"] if n_theta else None
    model.set_standardisation(data["x"] * 3 + 1, theta)
    for p in model.parameters():  # weights of a trained size, not just the init
        p.data.mul_(2.0)
    uri = str(tmp_path / "export.npz")
    save_export(uri, export_network(model, network_id="n-0", method="carl"))
    exported = load_export(uri)
    assert int(exported["n_layers"]) == 3 and str(exported["activation"]) == activation
    assert list(exported["inputs"]) == (["x", "theta"] if n_theta else ["x"])
    x = data["x"].double().numpy() * 3 + 1
    th = None if theta is None else theta.double().numpy()
    ours = forward(exported, x, th)
    with torch.no_grad():
        ref32 = model(torch.from_numpy(x).float(), None if th is None else torch.from_numpy(th).float()).numpy()
        ref64 = model.double()(torch.from_numpy(x), None if th is None else torch.from_numpy(th)).numpy()
    assert ours.shape == (500, n_out)
    np.testing.assert_allclose(ours, ref64, rtol=0, atol=1e-12)  # the same function, in float64
    np.testing.assert_allclose(ours, ref32, rtol=0, atol=1e-6)  # and the float32 network to 1e-6


def test_jax_forward_from_the_same_arrays():
    jnp = pytest.importorskip("jax.numpy")
    import jax

    jax.config.update("jax_enable_x64", True)
    torch.manual_seed(2)
    model = build_mlp(5, 2, 1, hidden=[16], activation="tanh")
    exported = export_network(model)
    data = gaussian_set(50, 5)
    x, th = data["x"].astype(np.float64), data["theta0"].astype(np.float64)
    ours = np.asarray(jax.jit(lambda a, b: forward(exported, a, b, xp=jnp))(x, th))
    np.testing.assert_allclose(ours, forward(exported, x, th), rtol=0, atol=1e-12)


def test_forward_checks_shapes_and_files(tmp_path):
    model = build_mlp(5, 2, 1, hidden=[4], activation="tanh")
    exported = export_network(model)
    x = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"theta: expected shape \(3, 2\)"):
        forward(exported, x, np.zeros(2))  # no broadcasting of a single theta
    with pytest.raises(ValueError, match=r"x: expected shape \(n, 5\)"):
        forward(exported, np.zeros((3, 4)), np.zeros((3, 2)))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        load_export(str(bad))


def test_model_file_roundtrip(tmp_path):
    torch.manual_seed(3)
    model = build_mlp(5, 2, 1, hidden=[8, 8], activation="silu")
    model.set_standardisation(torch.randn(100, 5) * 4, torch.rand(100, 2))
    uri = str(tmp_path / "model.pt")
    save_model(uri, model, network_id="alices-theta-nominal-m00", method="alices", parametrised=True,
               output="log_ratio", meta={"head": "theta"})
    loaded, info = load_model(uri)
    assert info.network_id == "alices-theta-nominal-m00" and info.parametrised and info.meta["head"] == "theta"
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(InputError, match="not found"):
        load_model(str(tmp_path / "missing.pt"))
