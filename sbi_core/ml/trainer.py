"""The training loop: one network, deterministic, checkpointed every epoch and resumed after a kill.

Order of work per epoch: shuffle by an index permutation drawn from a dedicated torch.Generator, run the
batches (data already on the device, batched by indexing: no DataLoader), validate, step the learning-rate
schedule, check the losses are finite and the validation loss under DIVERGENCE_FACTOR x the untrained
network's (NetworkFailed otherwise), keep the best state, then write the
checkpoint atomically. Everything the next epoch depends on is in the checkpoint (model, optimizer,
schedule, generator and torch RNG states, best state, patience counter, history), so a run killed at any
moment and started again ends with exactly the weights of an uninterrupted run (same device and threads).

What to use when: `train_network(...)` for one network (the `sbi-core train` step calls it per network id);
`TrainOptions.from_config(cfg.training.optimizer)`; `resolve_device("auto")`; `network_seed(seed, id)`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.ml.errors import NetworkFailed
from sbi_core.ml.estimators.base import Estimator
from sbi_core.ml.mlp import MLP

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "sbi-checkpoint"
CHECKPOINT_VERSION = 1
#: Rows per forward pass when computing the validation loss (no optimizer step: large batches are cheaper).
VALIDATION_ROWS = 16384
#: A network whose validation loss climbs above this many times the untrained network's has diverged (every
#: estimator's loss is >= 0, and training lowers it: 1000x up is a run-away, not noise), as has one whose loss
#: is NaN or inf.
DIVERGENCE_FACTOR = 1e3


@dataclass(frozen=True)
class TrainOptions:
    """The optimisation settings (`training.optimizer`): Adam, exponential decay from learning_rate to
    learning_rate_final over the epochs, early stopping after `patience` epochs without a better validation
    loss (0: never), gradient-norm clipping (0: off)."""

    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    learning_rate_final: float = 1e-4
    weight_decay: float = 0.0
    clip_grad_norm: float = 10.0
    patience: int = 5

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            raise ValueError(f"TrainOptions: epochs, batch_size >= 1 and patience >= 0, got {self}")
        if not (self.learning_rate > 0 and self.learning_rate_final > 0 and self.weight_decay >= 0
                and self.clip_grad_norm >= 0):
            raise ValueError(f"TrainOptions: learning rates > 0, weight_decay and clip_grad_norm >= 0, got {self}")

    @classmethod
    def from_config(cls, optimizer: Any) -> TrainOptions:
        """From a `training.optimizer` section (any object with these attribute names)."""
        return cls(**{k: getattr(optimizer, k) for k in cls.__dataclass_fields__})

    @property
    def gamma(self) -> float:
        """Per-epoch factor of the exponential decay: learning_rate_final is reached at the last epoch."""
        return (self.learning_rate_final / self.learning_rate) ** (1.0 / max(self.epochs - 1, 1))


@dataclass
class TrainResult:
    """A trained network (best validation state restored) and how training went."""

    model: MLP
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    epochs: int
    stopped_early: bool
    resumed_from: int
    device: str
    seconds: float
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; `cuda` without a GPU is an InputError naming the option."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("training.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if name not in ("cpu", "cuda"):
        raise InputError(f"training.device: expected auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def network_seed(seed: int, network_id: str) -> int:
    """A 63-bit seed per network from the run's training seed and the network id (members differ)."""
    digest = hashlib.sha256(f"{int(seed)}:{network_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _check_data(name: str, data: Mapping[str, torch.Tensor], uses: tuple[str, ...]) -> int:
    missing = [k for k in uses if k not in data]
    if missing:
        raise ValueError(f"{name} data lacks {missing}")
    n = int(data[uses[0]].shape[0])
    if n < 1:
        raise InputError(f"{name} data holds no samples")
    for k in uses:
        if data[k].shape[0] != n:
            raise ValueError(f"{name} data: {k} has {data[k].shape[0]} rows, {uses[0]} has {n}")
    return n


def training_fingerprint(estimator: Estimator, *, network_id: str, options: TrainOptions, hidden: list[int],
                         activation: str, seed: int, n_train: int, n_val: int, bootstrap: bool,
                         device: torch.device | str, extra: Mapping[str, Any] | None = None) -> str:
    """sha256 of everything that determines a network's training (extra: digests of the data): a checkpoint
    or a finished result is reused only when it matches."""
    parts = {"network_id": network_id, "method": estimator.name, "config": asdict(estimator.config),
             "options": asdict(options), "hidden": [int(h) for h in hidden], "activation": activation,
             "seed": int(seed), "n_train": int(n_train), "n_val": int(n_val), "bootstrap": bool(bootstrap),
             "device": torch.device(device).type, "extra": dict(extra or {})}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@torch.no_grad()
def _clone_state(model: MLP) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _validation_loss(est: Estimator, model: MLP, val: Mapping[str, torch.Tensor], n: int) -> float:
    """Mean loss over the validation set, in chunks (a chunk-weighted mean of per-row means is exact).

    No graph through the weights: losses with a score term differentiate w.r.t. theta0 only."""
    model.eval()
    total = 0.0
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        with torch.enable_grad() if est.needs_input_grad else torch.no_grad():
            for start in range(0, n, VALIDATION_ROWS):
                stop = min(n, start + VALIDATION_ROWS)
                chunk = {k: val[k][start:stop] for k in est.uses}
                total += float(est.loss(model, chunk).detach()) * (stop - start)
    finally:
        for p in trainable:
            p.requires_grad_(True)
        model.train()
    return total / n


def make_adam(params: list[torch.nn.Parameter], options: TrainOptions) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where torch supports it on the device (fewer launches per step:
    on small networks that is what pays for the clipping), else the multi-tensor implementation."""
    try:
        return torch.optim.Adam(params, lr=options.learning_rate, weight_decay=options.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=options.learning_rate, weight_decay=options.weight_decay, foreach=True)


def _load_checkpoint(uri: str, fingerprint: str, network_id: str) -> dict[str, Any] | None:
    if not storage.exists(uri):
        return None
    try:
        with storage.local_copy(uri) as path:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint is restarted, not fatal
        log.warning("%s: checkpoint %s unreadable (%s): starting from scratch", network_id, uri, exc)
        return None
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("fingerprint") != fingerprint:
        log.warning("%s: checkpoint %s is for other data or settings: starting from scratch", network_id, uri)
        return None
    return ckpt


def train_network(
    estimator: Estimator,
    train: Mapping[str, torch.Tensor],
    val: Mapping[str, torch.Tensor],
    *,
    network_id: str,
    options: TrainOptions,
    hidden: list[int],
    activation: str,
    seed: int,
    device: torch.device | str = "cpu",
    checkpoint_uri: str | None = None,
    bootstrap: bool = False,
    fingerprint_extra: Mapping[str, Any] | None = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train one network of `estimator` on `train` (tensors by name: x (n, O), theta0 (n, P), y (n,),
    log_r_xz (n,), t_xz (n, P); only `estimator.uses` are read), early-stopped on `val`.

    seed fixes the initial weights, the batch order and the bootstrap resample (a resample of the training
    rows with replacement, for ensemble members); with checkpoint_uri the state is written there after every
    epoch and a matching checkpoint is resumed. init_state (a warm start: another network's state dict, the
    standardisation included) replaces the initial weights; the caller puts its digest in fingerprint_extra.
    NetworkFailed when a loss is not finite."""
    t0 = time.perf_counter()
    device = torch.device(device)
    uses = tuple(estimator.uses)
    n_train = _check_data("training", train, uses)
    n_val = _check_data("validation", val, uses)
    train_t = {k: train[k].to(device) for k in uses}
    val_t = {k: val[k].to(device) for k in uses}
    n_x = int(train_t["x"].shape[1])
    n_params = next((int(train[k].shape[1]) for k in ("t_xz", "theta0") if k in train), 0)

    fp = training_fingerprint(estimator, network_id=network_id, options=options, hidden=hidden,
                              activation=activation, seed=seed, n_train=n_train, n_val=n_val, bootstrap=bootstrap,
                              device=device, extra=fingerprint_extra)

    torch.manual_seed(seed)
    model = estimator.build_model(n_x, n_params, hidden=list(hidden), activation=activation)
    model.set_standardisation(train["x"].float(), train["theta0"].float() if estimator.parametrised else None)
    if init_state is not None:
        model.load_state_dict(dict(init_state))  # strict: another architecture is an error
    model.to(device)
    optimizer = make_adam(list(model.parameters()), options)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=options.gamma)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    rows = None
    if bootstrap:
        rows = torch.randint(0, n_train, (n_train,), generator=generator).to(device)

    epoch, best_epoch, best_val, bad, done = 0, -1, math.inf, 0, False
    history: list[dict[str, float]] = []
    best_state = _clone_state(model)
    resumed_from = 0
    ckpt = _load_checkpoint(checkpoint_uri, fp, network_id) if checkpoint_uri else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        epoch, best_epoch, best_val = int(ckpt["epoch"]), int(ckpt["best_epoch"]), float(ckpt["best_val_loss"])
        bad, done, history = int(ckpt["bad_epochs"]), bool(ckpt["done"]), list(ckpt["history"])
        best_state = {k: v.to(device) for k, v in ckpt["best_state"].items()}
        resumed_from = epoch
        log.info("%s: resuming after epoch %d of %d", network_id, epoch, options.epochs)

    # The untrained network's validation loss: the yardstick of the divergence rule (kept in the checkpoint).
    initial_val = float(ckpt.get("initial_val_loss", math.nan)) if ckpt is not None else math.nan
    if not math.isfinite(initial_val) and ckpt is None:
        initial_val = _validation_loss(estimator, model, val_t, n_val)
    params = [p for p in model.parameters() if p.requires_grad]
    bs, clip = options.batch_size, options.clip_grad_norm
    batch_sizes = torch.tensor([min(bs, n_train - s) for s in range(0, n_train, bs)], dtype=torch.float32,
                               device=device)
    while not done and epoch < options.epochs:
        te = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        perm = torch.randperm(n_train, generator=generator).to(device)
        if rows is not None:
            perm = rows[perm]
        losses = []  # detached batch losses, summed once per epoch: no device sync and no extra kernel per step
        for start in range(0, n_train, bs):
            idx = perm[start:start + bs]
            loss = estimator.loss(model, {k: train_t[k][idx] for k in uses})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
            optimizer.step()
            losses.append(loss.detach())
        train_loss = float(torch.stack(losses) @ batch_sizes) / n_train
        val_loss = _validation_loss(estimator, model, val_t, n_val)
        scheduler.step()
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise NetworkFailed(network_id, epoch, f"loss is not finite (train {train_loss}, validation {val_loss})",
                                history)
        if initial_val > 0 and val_loss > DIVERGENCE_FACTOR * initial_val:
            raise NetworkFailed(network_id, epoch, f"diverged: validation loss {val_loss:.4g} is more than "
                                f"{DIVERGENCE_FACTOR:g} x the untrained network's {initial_val:.4g}", history)
        if val_loss < best_val:
            best_val, best_epoch, bad = val_loss, epoch, 0
            best_state = _clone_state(model)
        else:
            bad += 1
        seconds = time.perf_counter() - te
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "learning_rate": lr,
                        "seconds": round(seconds, 4)})
        log.info("%s epoch %d/%d train_loss %.6g val_loss %.6g lr %.3g %.2fs%s", network_id, epoch + 1,
                 options.epochs, train_loss, val_loss, lr, seconds, " *" if bad == 0 else "")
        epoch += 1
        done = epoch >= options.epochs or (options.patience > 0 and bad >= options.patience)
        if checkpoint_uri:
            _save_checkpoint(checkpoint_uri, {
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "network_id": network_id,
                "fingerprint": fp, "epoch": epoch, "done": done, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                "best_state": best_state, "best_epoch": best_epoch, "best_val_loss": best_val, "bad_epochs": bad,
                "history": history, "initial_val_loss": initial_val,
            })
    model.load_state_dict(best_state)
    model.eval()
    stopped = epoch < options.epochs
    if stopped:
        log.info("%s: early stop after epoch %d (best %d, validation loss %.6g)", network_id, epoch,
                 best_epoch + 1, best_val)
    return TrainResult(model=model, history=history, best_epoch=best_epoch, best_val_loss=best_val, epochs=epoch,
                       stopped_early=stopped, resumed_from=resumed_from, device=str(device),
                       seconds=time.perf_counter() - t0, fingerprint=fp)


def _save_checkpoint(uri: str, state: dict[str, Any]) -> None:
    state = copy.copy(state)
    for key in ("model", "best_state"):
        state[key] = {k: v.detach().cpu() for k, v in state[key].items()}
    with storage.atomic_write(uri) as tmp:
        torch.save(state, tmp)
