"""A trained network on disk: `model.pt` holds the architecture, the weights (standardisation included) and
what the network estimates, so `load_model` rebuilds it without the training config.

The file is a plain dict of tensors and Python scalars, read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import torch

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.ml.mlp import MLP

MODEL_FORMAT = "sbi-network"
MODEL_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """What a saved network is: its id, method, output kind and whether theta0 is an input."""

    network_id: str
    method: str
    parametrised: bool
    output: str
    architecture: dict[str, Any]
    meta: dict[str, Any]


def save_model(uri: str, model: MLP, *, network_id: str, method: str, parametrised: bool, output: str,
               meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write model.pt atomically (weights moved to the CPU); return its size and sha256 (`model_bytes`,
    `model_sha256`: result.json records them, so a truncated or replaced file is never taken as trained)."""
    payload = {
        "format": MODEL_FORMAT, "version": MODEL_VERSION, "network_id": network_id, "method": method,
        "parametrised": bool(parametrised), "output": output, "architecture": model.architecture,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": dict(meta or {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    storage.write_bytes(uri, data)
    return {"model_bytes": len(data), "model_sha256": hashlib.sha256(data).hexdigest()}


def model_file_problem(uri: str, result: dict[str, Any]) -> str | None:
    """Why the model file at uri is not the one result.json records (missing, truncated, changed), or None when it
    is. A result without a recorded size and checksum (an older sbi_core) is checked by loading the file."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        return f"{uri} is missing"
    if "model_sha256" not in result:
        try:
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the answer
            return f"{uri} is unreadable ({type(exc).__name__})"
        return None
    if len(data) != result.get("model_bytes"):
        return f"{uri} holds {len(data)} bytes, result.json records {result.get('model_bytes')} (truncated?)"
    if hashlib.sha256(data).hexdigest() != result["model_sha256"]:
        return f"{uri} does not match the sha256 result.json records (changed or corrupt)"
    return None


def load_model(uri: str) -> tuple[MLP, ModelInfo]:
    """The network saved at uri (on the CPU, eval mode, weights frozen) and its description; InputError naming
    the file."""
    try:
        with storage.local_copy(uri) as path:
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"network file {uri} not found: train the network first") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input named by its URI
        raise InputError(f"network file {uri} is unreadable ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputError(f"{uri} is not an {MODEL_FORMAT} file")
    model = MLP(**payload["architecture"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    model.requires_grad_(False)  # for evaluation: a score by autograd differentiates w.r.t. theta0 only
    info = ModelInfo(network_id=payload["network_id"], method=payload["method"],
                     parametrised=bool(payload["parametrised"]), output=payload["output"],
                     architecture=dict(payload["architecture"]), meta=dict(payload.get("meta", {})))
    return model, info
