"""A trained network as plain arrays (`export.npz`) and a reference forward pass in numpy.

The export holds everything needed to evaluate the network without torch: per layer `weight_i` (out, in) and
`bias_i` (out,), `n_layers`, `activation` (between layers; none after the last), the input standardisation
(`x_mean`, `x_std`, `theta_mean`, `theta_std`), `inputs` (`x`, or `x` then `theta`), `output`
(`log_ratio`: one column, log r; or `score`: P columns) and provenance (network id, method).

`forward(exported, x, theta=None, xp=numpy)` is the reference: it equals the torch forward (float64 here,
so to rounding of the float32 network), and with `xp=jax.numpy` it is a JAX forward, jit-able and
differentiable in theta (the inference stage evaluates parametrised estimators this way).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError

EXPORT_FORMAT = "sbi-network-export"
EXPORT_VERSION = 1


def export_network(model: Any, *, network_id: str = "", method: str = "", output: str = "log_ratio") -> dict[str, Any]:
    """The arrays of a trained `MLP` (float64 copies) as a dict ready for `np.savez`."""
    import torch

    linears = [m for m in model.net if isinstance(m, torch.nn.Linear)]
    out: dict[str, Any] = {
        "format": np.array(EXPORT_FORMAT), "version": np.array(EXPORT_VERSION),
        "network_id": np.array(network_id), "method": np.array(method), "output": np.array(output),
        "activation": np.array(model.activation), "n_layers": np.array(len(linears)),
        "inputs": np.array(["x", "theta"] if model.n_theta else ["x"]),
    }
    for name in ("x_mean", "x_std", "theta_mean", "theta_std"):
        out[name] = getattr(model, name).detach().cpu().double().numpy()
    for i, lin in enumerate(linears):
        out[f"weight_{i}"] = lin.weight.detach().cpu().double().numpy()
        out[f"bias_{i}"] = lin.bias.detach().cpu().double().numpy()
    return out


def save_export(uri: str, exported: dict[str, Any]) -> None:
    """Write export.npz atomically (numpy's npz; no pickled objects)."""
    with storage.atomic_write(uri) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **exported)


def load_export(uri: str) -> dict[str, Any]:
    """Read an export.npz into a dict of arrays; InputError naming the file if it is not one."""
    try:
        with storage.local_copy(uri) as path, np.load(path, allow_pickle=False) as data:
            exported = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputError(f"network export {uri} not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"network export {uri} is unreadable ({exc})") from None
    if str(exported.get("format")) != EXPORT_FORMAT:
        raise InputError(f"{uri} is not an {EXPORT_FORMAT} file")
    return exported


def _activation(name: str, xp: Any) -> Any:
    if name == "tanh":
        return xp.tanh
    if name == "relu":
        return lambda a: xp.maximum(a, 0.0)
    if name == "silu":
        return lambda a: a * (0.5 * (1.0 + xp.tanh(0.5 * a)))  # x sigmoid(x), overflow-free
    raise ValueError(f"unknown activation {name!r}")


def forward(exported: dict[str, Any], x: Any, theta: Any = None, xp: Any = np) -> Any:
    """Network output (n, n_out) for x (n, n_x) and, for a parametrised network, theta (n, n_theta).

    Shapes are checked, never broadcast (pass theta row by row as (n, P) even when it is constant)."""
    n_x = exported["x_mean"].shape[0]
    n_theta = exported["theta_mean"].shape[0]
    if x.ndim != 2 or x.shape[1] != n_x:
        raise ValueError(f"x: expected shape (n, {n_x}), got {tuple(x.shape)}")
    h = (x - exported["x_mean"]) / exported["x_std"]
    if n_theta:
        if theta is None or theta.ndim != 2 or tuple(theta.shape) != (x.shape[0], n_theta):
            got = None if theta is None else tuple(theta.shape)
            raise ValueError(f"theta: expected shape ({x.shape[0]}, {n_theta}), got {got}")
        h = xp.concatenate([h, (theta - exported["theta_mean"]) / exported["theta_std"]], axis=1)
    elif theta is not None:
        raise ValueError("theta: this network takes x only")
    act = _activation(str(exported["activation"]), xp)
    n_layers = int(exported["n_layers"])
    for i in range(n_layers):
        h = h @ exported[f"weight_{i}"].T + exported[f"bias_{i}"]
        if i < n_layers - 1:
            h = act(h)
    return h
