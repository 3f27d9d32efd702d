"""Neural importance sampling with MadNIS: a normalising flow over the unit cube of a phase-space map.

What MadNIS (`madnis`, MIT licence, the MadGraph machine-learning group's library) provides and this
module wraps, never copies: the flow (`madnis.nn.Flow`: coupling blocks of rational-quadratic splines,
one network per channel, optionally conditioned), its start from VEGAS grids (`VegasPreTraining`, which
adapts one grid per channel and sets the flow's first blocks to it), the training loop
(`madnis.integrator.Integrator`: multi-channel sampling, the stratified-variance or KL loss, learned
channel weights, a buffer so that every integrand evaluation is used for several steps).

What this module adds: the contract with a simulator (`ChannelIntegrand`: the integrand of each channel in
the unit cube, its physical point, the features the channel-weight network sees, the prior channel weights),
conditioning on the theory parameters (`_ConditionedFlow` draws the condition uniformly with the point, so
madnis trains q(u | t) across the parameter range with its usual loop; the loss then averages the per-point
losses over t), seeded training, serialisation, and a `FlowProposal` that draws from numpy Generators (so a
shard is reproducible from its seed) for exact unweighting (`unweighting.Unweighter`):

    channel c ~ fractions,  z ~ U[0, 1]^d,  u = flow_c^-1(z | t_s),  w = alpha_c(x) f_c(u) / (fraction_c q_c(u | t_s))

with alpha_c = prior_c exp(cwnet_c) / sum_j prior_j exp(cwnet_j), which sums to one at every point: the
mixture of channels is then an exact importance sampler of the integrand whatever the flow learned.

What to use when: `train_flow(integrand, architecture, settings)` once (the `train-sampler` step), then
`flow_to_bytes` / `flow_from_bytes` to ship it, `channel_fractions` once per sampling point, `FlowProposal`
to draw. torch and madnis are imported here: import this module lazily.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from madnis.integrator import Integrand, Integrator, VegasPreTraining, kl_divergence, stratified_variance
from madnis.nn import MLP, Flow
from torch import nn

__all__ = [
    "ChannelIntegrand",
    "FlowArchitecture",
    "FlowModules",
    "FlowProposal",
    "IntegrandValues",
    "TrainSettings",
    "TrainedFlow",
    "channel_fractions",
    "flow_from_bytes",
    "flow_to_bytes",
    "train_flow",
]

log = logging.getLogger(__name__)
DTYPE = torch.float64
_LOSSES = {"variance": stratified_variance, "kl": kl_divergence}
#: Floor of a channel's sampling fraction: every channel keeps drawing, so its share of the integral stays covered.
MIN_FRACTION = 1e-3


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread inside the block: the flow's networks are small, and more threads only spin
    (measured here: a 1024 x 32 layer 0.16 ms on one thread, 0.7 ms on two of a busy machine); shards run
    one per core anyway."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class IntegrandValues:
    """What a channel integrand gives for points u of the unit cube (n rows)."""

    value: np.ndarray  # (n,) f(x(u)) |dx/du| of the point's channel, >= 0
    point: np.ndarray  # (n, k) the physical point x(u)
    features: np.ndarray  # (n, d + conditions) what the channel-weight network sees (the same x gives the same row)
    prior: np.ndarray  # (n, channels) prior channel weights at x, rows summing to one


class ChannelIntegrand(Protocol):
    """A multi-channel integrand on the unit cube [0, 1]^dim, optionally conditioned on t in [0, 1]^conditions."""

    dim: int
    n_channels: int
    n_conditions: int

    def evaluate(self, u: np.ndarray, channel: np.ndarray, condition: np.ndarray) -> IntegrandValues:
        """Values at u (n, dim) in the given channels (n,) int and conditions (n, n_conditions)."""
        ...


@dataclass(frozen=True)
class FlowArchitecture:
    """What rebuilds the networks: sizes only (the weights travel in the state)."""

    dim: int
    conditions: int
    channels: int
    layers: int = 3
    units: int = 32
    bins: int = 10
    channel_weights: bool = True

    @property
    def learns_channel_weights(self) -> bool:
        return self.channel_weights and self.channels > 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlowArchitecture:
        return cls(**data)


@dataclass(frozen=True)
class TrainSettings:
    """How the flow is trained (madnis's Integrator and VegasPreTraining)."""

    seed: int = 0
    steps: int = 400
    batch_size: int = 1024
    learning_rate: float = 3e-3
    loss: Literal["variance", "kl"] = "variance"
    buffer_capacity: int = 20_000
    buffered_steps: int = 3
    vegas_iterations: int = 10
    vegas_evaluations: int = 5000
    vegas_bins: int = 64
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: cuda requested but torch sees no GPU")
        return self.device


class _ConditionedFlow(nn.Module):
    """madnis's Flow as a madnis Distribution over (u, t): t uniform in [0, 1]^conditions, u ~ q(u | t).

    Its density over (u, t) is q(u | t), so madnis's loss over the extended cube is the average over t of the
    per-t loss; without conditions it is the flow itself."""

    def __init__(self, arch: FlowArchitecture) -> None:
        super().__init__()
        self.dim, self.conditions = arch.dim, arch.conditions
        self.flow = Flow(dims_in=arch.dim, dims_c=arch.conditions, channels=arch.channels, layers=arch.layers,
                         units=arch.units, bins=arch.bins)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return x[:, : self.dim], (x[:, self.dim :] if self.conditions else None)

    def sample(self, n: int, c: torch.Tensor | None = None, channel: Any = None, return_log_prob: bool = False,
               return_prob: bool = False, device: Any = None, dtype: Any = None) -> Any:
        t = torch.rand((n, self.conditions), device=device, dtype=dtype) if self.conditions else None
        x, log_q = self.flow.sample(n, c=t, channel=channel, return_log_prob=True, device=device, dtype=dtype)
        out = torch.cat([x, t], dim=1) if t is not None else x
        extra = [log_q] if return_log_prob else []
        extra += [log_q.exp()] if return_prob else []
        return (out, *extra) if extra else out

    def log_prob(self, x: torch.Tensor, c: torch.Tensor | None = None, channel: Any = None) -> torch.Tensor:
        u, t = self._split(x)
        return self.flow.log_prob(u, c=t, channel=channel)

    def prob(self, x: torch.Tensor, c: torch.Tensor | None = None, channel: Any = None) -> torch.Tensor:
        return self.log_prob(x, c, channel).exp()

    def init_with_grid(self, grid: torch.Tensor) -> None:
        """Start from VEGAS grids over (u, t): the u part (the t part stays flat: each t has integral one)."""
        self.flow.init_with_grid(grid[..., : self.dim, :])


@dataclass
class FlowModules:
    """The trained networks: the (conditioned) flow and the channel-weight network (None when not learned)."""

    arch: FlowArchitecture
    flow: _ConditionedFlow
    cwnet: nn.Module | None

    @classmethod
    def build(cls, arch: FlowArchitecture) -> FlowModules:
        cwnet = MLP(arch.dim + arch.conditions, arch.channels, layers=arch.layers, units=arch.units) \
            if arch.learns_channel_weights else None
        mods = cls(arch, _ConditionedFlow(arch), cwnet)
        mods.to("cpu")
        return mods

    def to(self, device: str) -> FlowModules:
        self.flow.to(device=device, dtype=DTYPE)
        if self.cwnet is not None:
            self.cwnet.to(device=device, dtype=DTYPE)
        return self

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"flow.{k}": v.detach().cpu() for k, v in self.flow.state_dict().items()}
        if self.cwnet is not None:
            out.update({f"cwnet.{k}": v.detach().cpu() for k, v in self.cwnet.state_dict().items()})
        return out

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights (strict: a missing or unexpected tensor, or a wrong shape, raises RuntimeError)."""
        self.flow.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("flow.")}, strict=True)
        if self.cwnet is not None:
            self.cwnet.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("cwnet.")}, strict=True)
        elif any(k.startswith("cwnet.") for k in state):
            raise RuntimeError("the state has a channel-weight network the architecture does not")

    def alphas(self, features: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Channel weights: prior x exp(cwnet), normalised per point (the prior alone without a network)."""
        if self.cwnet is None:
            return prior
        a = prior * self.cwnet(features).exp()
        return a / a.sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class TrainedFlow:
    """A trained flow and how its training went."""

    modules: FlowModules
    seconds: float
    device: str
    losses: list[float] = field(default_factory=list)  # the loss every ~1% of the steps
    vegas_relative_std: float = math.nan  # of the VEGAS stage's last iteration

    def summary(self) -> dict[str, Any]:
        return {"train_seconds": round(self.seconds, 2), "device": self.device,
                "final_loss": self.losses[-1] if self.losses else None,
                "vegas_relative_std": self.vegas_relative_std}


def _madnis_function(integrand: ChannelIntegrand) -> Any:
    """The integrand as madnis calls it: (x (n, dim + conditions), channels (n,)) -> (f, features, prior), on
    x's device (madnis's VEGAS stage calls it on the CPU, its training loop on the training device)."""
    dim = integrand.dim

    def function(x: torch.Tensor, channels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        xn = x.detach().cpu().numpy()
        vals = integrand.evaluate(np.clip(xn[:, :dim], 0.0, 1.0), channels.detach().cpu().numpy(), xn[:, dim:])
        return tuple(torch.as_tensor(a, device=x.device, dtype=DTYPE) for a in (vals.value, vals.features, vals.prior))

    return function


def _check_matches(integrand: ChannelIntegrand, arch: FlowArchitecture) -> None:
    got = (integrand.dim, integrand.n_conditions, integrand.n_channels)
    if got != (arch.dim, arch.conditions, arch.channels):
        raise ValueError(f"integrand (dim, conditions, channels) {got} does not fit the architecture {arch}")


def train_flow(integrand: ChannelIntegrand, arch: FlowArchitecture, settings: TrainSettings) -> TrainedFlow:
    """Train a flow on the integrand: VEGAS grids per channel first, then madnis's buffered training.

    Seeded (torch's generators are forked, so the caller's state is left alone); on a GPU the result can
    differ in the last bits from run to run, which is why the trained flow is shipped as a file."""
    _check_matches(integrand, arch)
    device = settings.resolved_device()
    t0 = time.perf_counter()
    devices = [torch.cuda.current_device()] if device == "cuda" else []
    with torch.random.fork_rng(devices=devices), one_thread():
        torch.manual_seed(settings.seed)
        mods = FlowModules.build(arch).to(device)
        madnis_integrand = Integrand(_madnis_function(integrand), input_dim=arch.dim + arch.conditions,
                                     channel_count=arch.channels, remapped_dim=arch.dim + arch.conditions,
                                     has_channel_weight_prior=True)
        integrator = Integrator(
            madnis_integrand, flow=mods.flow, cwnet=mods.cwnet, train_channel_weights=mods.cwnet is not None,
            loss=_LOSSES[settings.loss], batch_size=settings.batch_size, learning_rate=settings.learning_rate,
            scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.steps),
            buffer_capacity=settings.buffer_capacity, minimum_buffer_size=min(settings.buffer_capacity, 2000),
            buffered_steps=settings.buffered_steps if settings.buffer_capacity else 0, device=device, dtype=DTYPE)
        vegas_std = _vegas_start(integrator, settings)
        losses: list[float] = []
        every = max(1, settings.steps // 100)

        def record(status: Any) -> None:
            if status.step % every == 0 or status.step == settings.steps - 1:
                losses.append(float(status.loss))
            if status.step % max(1, settings.steps // 10) == 0:
                log.info("flow training: step %d/%d, loss %.4g", status.step, settings.steps, status.loss)

        integrator.train(settings.steps, callback=record)
    mods.to("cpu")
    return TrainedFlow(mods, time.perf_counter() - t0, device, losses, vegas_std)


def _vegas_start(integrator: Integrator, settings: TrainSettings) -> float:
    """Adapt one VEGAS grid per channel (its evaluations also fill the buffer) and start the flow from them."""
    pre = VegasPreTraining(integrator, bins=settings.vegas_bins)
    pre.rng = np.random.default_rng([settings.seed, 3])  # madnis seeds nothing itself: make it reproducible
    last: list[float] = []
    pre.train([settings.vegas_evaluations] * settings.vegas_iterations,
              callback=lambda status: last.append(float(status.variance)))
    pre.initialize_integrator()
    return last[-1] if last else math.nan


def flow_to_bytes(modules: FlowModules) -> bytes:
    """The weights as torch.save bytes (plain tensors: read back with weights_only)."""
    buf = io.BytesIO()
    torch.save(modules.state(), buf)
    return buf.getvalue()


def flow_from_bytes(payload: bytes, arch: FlowArchitecture) -> FlowModules:
    """Rebuild the networks of `arch` and load the weights; RuntimeError when they do not fit."""
    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RuntimeError("the payload is not a dictionary of tensors")
    mods = FlowModules.build(arch)
    mods.load(state)
    mods.flow.eval()
    return mods


class FlowProposal:
    """Draws (point, weight) from a trained flow at one condition: `unweighting.Proposal` (module docstring).

    Deterministic given the Generator: per call, one uniform per point for its channel, then d for its latent."""

    def __init__(self, modules: FlowModules, integrand: ChannelIntegrand, condition: np.ndarray,
                 fractions: np.ndarray, scale: float = 1.0) -> None:
        _check_matches(integrand, modules.arch)
        cond = np.asarray(condition, dtype=np.float64).reshape(-1)
        frac = np.asarray(fractions, dtype=np.float64)
        if cond.shape != (modules.arch.conditions,):
            raise ValueError(f"condition: expected shape ({modules.arch.conditions},), got {cond.shape}")
        if frac.shape != (modules.arch.channels,) or not np.all(frac > 0) or abs(frac.sum() - 1) > 1e-9:
            raise ValueError(f"fractions: expected {modules.arch.channels} positive values summing to 1, got {frac}")
        self.modules, self.integrand, self.condition, self.fractions = modules, integrand, cond, frac
        self.scale = float(scale)
        self.dim = int(integrand.dim)
        self._cum = np.cumsum(frac)[:-1]

    def _weights(self, z: np.ndarray, channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(points, f alpha / q) of latent points z in the given channels, before the channel fractions."""
        n = z.shape[0]
        cond = np.broadcast_to(self.condition, (n, self.condition.size)).copy()
        with torch.no_grad(), one_thread():
            c = torch.from_numpy(cond) if cond.shape[1] else None
            u, jac = self.modules.flow.flow.transform(torch.from_numpy(z), c=c, channel=torch.from_numpy(channel),
                                                      inverse=True)
            vals = self.integrand.evaluate(np.clip(u.numpy(), 0.0, 1.0), channel, cond)
            alpha = self.modules.alphas(torch.from_numpy(vals.features), torch.from_numpy(vals.prior)).numpy()
            q = np.exp(-jac.numpy())  # the latent is uniform: q(u) = 1 / |du/dz|
        return vals.point, alpha[np.arange(n), channel] * vals.value / q

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        channel = np.searchsorted(self._cum, rng.random(n), side="right").astype(np.int64)
        z = rng.random((n, self.dim))
        points, w = self._weights(z, channel)
        w = w / self.fractions[channel] * self.scale
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("flow proposal: weights must be finite and >= 0")
        return points, w


def channel_fractions(modules: FlowModules, integrand: ChannelIntegrand, condition: np.ndarray, n: int,
                      seed: int) -> np.ndarray:
    """How often to draw each channel at a condition: its share of the integral (n points per channel from the
    stream `[seed, 4]`), floored at MIN_FRACTION. With these shares the weights of all channels agree when
    each channel's flow has learned its part of the integrand."""
    rng = np.random.default_rng([seed, 4])
    arch = modules.arch
    proposal = FlowProposal(modules, integrand, condition, np.full(arch.channels, 1.0 / arch.channels))
    shares = np.empty(arch.channels)
    for c in range(arch.channels):
        _, w = proposal._weights(rng.random((n, arch.dim)), np.full(n, c, dtype=np.int64))
        shares[c] = w.mean()
    if not (np.all(np.isfinite(shares)) and shares.sum() > 0):
        raise ValueError(f"channel integrals must be finite with a positive sum, got {shares}")
    frac = np.maximum(shares / shares.sum(), MIN_FRACTION)
    return frac / frac.sum()
