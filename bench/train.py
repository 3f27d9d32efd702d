"""train: training samples per second of `sbi-core train`'s loop (sbi_core.ml.trainer.train_network: validation
every epoch, gradient clipping, an atomic checkpoint every epoch) vs a bare PyTorch loop on the same MLP, data,
batch size, loss and Adam (permutation batching, no validation, no clipping, no checkpoint). Ratio = ours / bare.
Ours uses Adam's fused kernel where torch has one (the record says which): that pays for the clipping.
One CPU thread; ours and bare alternate within each repeat, so machine load hits both alike."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Figure, emit


def _data(n: int, seed: int) -> dict[str, Any]:
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    theta0 = rng.uniform(-1, 1, (n, 2))
    y = (np.arange(n) % 2).astype(np.float64)
    x = rng.standard_normal((n, 5))
    x[:, :2] += np.where(y[:, None] == 0, theta0, 0.0)
    log_r = (x[:, :2] * theta0).sum(1) - (theta0**2).sum(1) / 2
    arrays = {"x": x, "theta0": theta0, "y": y, "log_r_xz": log_r, "t_xz": x[:, :2] - theta0}
    return {k: torch.from_numpy(v.astype(np.float32)) for k, v in arrays.items()}


def _bare(est: Any, data: dict[str, Any], epochs: int, batch_size: int, hidden: list[int]) -> float:
    """The loop anyone would write: same model, loss and optimizer, nothing else. Returns seconds."""
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = est.build_model(5, 2, hidden=hidden, activation="tanh")
    model.set_standardisation(data["x"], data["theta0"] if est.parametrised else None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    n = data["x"].shape[0]
    uses = tuple(est.uses)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            loss = est.loss(model, {k: data[k][idx] for k in uses})
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def _ours(est: Any, train: dict[str, Any], val: dict[str, Any], epochs: int, batch_size: int, hidden: list[int],
          ckpt: str) -> float:
    from sbi_core.ml.trainer import TrainOptions, train_network

    Path(ckpt).unlink(missing_ok=True)
    t0 = time.perf_counter()
    train_network(est, train, val, network_id="bench", options=TrainOptions(epochs=epochs, batch_size=batch_size,
                  patience=0), hidden=hidden, activation="tanh", seed=0, device="cpu", checkpoint_uri=ckpt)
    return time.perf_counter() - t0


def run(quick: bool) -> list[dict[str, Any]]:
    import torch

    from sbi_core.ml.estimators import get_estimator
    from sbi_core.ml.trainer import TrainOptions, make_adam

    torch.set_num_threads(1)
    adam = "fused" if make_adam([torch.nn.Parameter(torch.zeros(1))], TrainOptions()).defaults.get("fused") \
        else "foreach"
    n, epochs, repeats = (20_000, 2, 3) if quick else (100_000, 3, 5)
    batch_size, hidden = 256, [64, 64]
    train, val = _data(n, 1), _data(n // 4, 2)  # validation_fraction 0.2: val = train / 4
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for method in ("carl", "alices"):
            est = get_estimator(method)()
            _bare(est, _data(2048, 3), 1, batch_size, hidden)  # warm-up (allocator, lazy init)
            ours, bare = [], []
            for _ in range(repeats):
                bare.append(n * epochs / _bare(est, train, epochs, batch_size, hidden))
                ours.append(n * epochs / _ours(est, train, val, epochs, batch_size, hidden, f"{tmp}/ckpt.pt"))
            fig = Figure(name=f"train.{method}", sizes={"samples": n, "epochs": epochs, "batch": batch_size,
                                                        "hidden": "x".join(map(str, hidden)), "threads": 1},
                         ours=ours, baseline=bare, ours_label="samples/s (trainer)",
                         baseline_label="samples/s (bare loop)", target=">= 0.9",
                         extra={"device": "cpu", "ours_adam": adam, "bare_adam": "torch default (foreach)",
                                "ours_includes": "validation + clipping + checkpoint per epoch"})
            rec = fig.record()
            emit(rec)
            records.append(rec)
    return records
