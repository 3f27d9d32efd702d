"""The forward pass of an exported network (the `sbi-network-export` arrays), in numpy or JAX.

Per layer i: `weight_i` (out, in) and `bias_i` (out,); `activation` between layers (none after the last);
inputs standardised with `x_mean` / `x_std`. Output (n, 1): log r(x) for a ratio network.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nsbi_likelihood.errors import FormatError

__all__ = ["ACTIVATIONS", "check_network", "forward"]

ACTIVATIONS = ("tanh", "relu", "silu")


def _activation(name: str, xp: Any) -> Any:
    if name == "tanh":
        return xp.tanh
    if name == "relu":
        return lambda a: xp.maximum(a, 0.0)
    return lambda a: a * (0.5 * (1.0 + xp.tanh(0.5 * a)))  # silu = x sigmoid(x), overflow-free


def check_network(net: dict[str, np.ndarray], where: str, n_x: int) -> None:
    """Refuse (FormatError naming `where`) a network whose arrays are missing or do not chain."""
    for key in ("n_layers", "activation", "x_mean", "x_std"):
        if key not in net:
            raise FormatError(f"{where}: missing array {key!r}")
    n_layers = int(net["n_layers"])
    if str(net["activation"]) not in ACTIVATIONS:
        raise FormatError(f"{where}: activation {str(net['activation'])!r} is not one of {ACTIVATIONS}")
    if net["x_mean"].shape != (n_x,) or net["x_std"].shape != (n_x,):
        raise FormatError(f"{where}: x_mean/x_std must have shape ({n_x},) (the artefact's observables)")
    width = n_x
    for i in range(n_layers):
        w, b = net.get(f"weight_{i}"), net.get(f"bias_{i}")
        if w is None or b is None:
            raise FormatError(f"{where}: missing array weight_{i} or bias_{i}")
        if w.ndim != 2 or w.shape[1] != width or b.shape != (w.shape[0],):
            raise FormatError(f"{where}: layer {i} has weight {w.shape} and bias {b.shape}, input width {width}")
        width = w.shape[0]
    if width != 1:
        raise FormatError(f"{where}: a ratio network has one output, this one has {width}")


def forward(net: dict[str, np.ndarray], x: Any, xp: Any = np) -> Any:
    """log r(x) of one network, shape (n,)."""
    h = (x - net["x_mean"]) / net["x_std"]
    act = _activation(str(net["activation"]), xp)
    n_layers = int(net["n_layers"])
    for i in range(n_layers):
        h = h @ net[f"weight_{i}"].T + net[f"bias_{i}"]
        if i < n_layers - 1:
            h = act(h)
    return h[:, 0]
