"""Phase-space sampling of `drell_yan_eft`: the (m, v, cos) box, and the samplers that draw it exactly.

The phase space is (m_ll, v, cos_theta) with y_ll = v ln(sqrt_s / m), m in the window, v and cos in
[-1, 1]; the integrand is dsigma(m, y, cos | theta) ln(sqrt_s / m) (`box_integrand`). Two samplers
(`simulator.options.sampler`), unweighted the same way (`unweighting.Unweighter`: w_max by the rule of
`sampling.safety` and `sampling.overweight_fraction`, overweight events kept and counted):

- vegas (`vegas_sampler`): a vegas map of the box, adapted in about a second by every process that samples.
- flow (`train_flow`, `flow_unweighter`): MadNIS neural importance sampling (`neural_sampling`) on the unit
  cube of a multi-channel map: each channel maps u_m onto m with its own mass density (`channels`: photon,
  a power law; z, a Breit-Wigner), and u_v, u_cos linearly onto v and cos; the channel weights start from
  MadGraph's prior density_c(m) / sum_j density_j(m) and are learned. The integrand each channel sees is
  dsigma(theta) / sigma(theta) times its Jacobian, so its integral is one at every theta: a flow conditioned
  on theta (`conditional`) learns every theta of the parameter ranges alike. Trained once per run by
  `sbi-core train-sampler`, shipped to the shards as the run's sampler file (`sampler_file`), whose meta
  holds what every shard must share: w_max, the overweight excess and the channel fractions at theta_s.

What to use when: `box_integrand` for vegas or checks; `FlowPhaseSpace` is the flow's `ChannelIntegrand`;
`train_flow(...)` returns the artifact train-sampler writes; `flow_unweighter(artifact, ...)` rebuilds the
sampler a shard draws from; `phase_space_key` says whether a flow of another run fits this one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core.errors import InputError
from sbi_core.physics.adaptive_sampling import AdaptiveSampler
from sbi_core.physics.channels import BreitWignerMap, MassMap, PowerLawMap, prior_weights
from sbi_core.physics.drell_yan_model import DrellYanModel
from sbi_core.physics.drell_yan_options import DrellYanOptions
from sbi_core.physics.morphing import monomials
from sbi_core.physics.sampler_file import SamplerArtifact, read_sampler
from sbi_core.physics.unweighting import Unweighter, WeightStats

if TYPE_CHECKING:
    from sbi_core.physics.neural_sampling import FlowModules

__all__ = ["FLOW", "FlowPhaseSpace", "box_integrand", "flow_unweighter", "mass_maps", "phase_space_key",
           "train_flow", "vegas_sampler"]

log = logging.getLogger(__name__)
FLOW = "flow"


def box_integrand(model: DrellYanModel, theta: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """f(x) for x = (m, v, cos) (n, 3): dsigma(m, v ymax, cos | theta) ymax, in pb / GeV per unit v and cos."""
    t = np.asarray(theta, dtype=np.float64)

    def f(x: np.ndarray) -> np.ndarray:
        ymax = model.rapidity_limit(x[:, 0])
        return model.dsigma(x[:, 0], x[:, 1] * ymax, x[:, 2], t) * ymax

    return f


def box_limits(opts: DrellYanOptions) -> np.ndarray:
    return np.array([list(opts.m_ll_range), [-1.0, 1.0], [-1.0, 1.0]])


def vegas_sampler(model: DrellYanModel, opts: DrellYanOptions, theta_s: np.ndarray) -> AdaptiveSampler:
    """The vegas sampler of the box at theta_s (set-up: adaptation, max search; about a second)."""
    sampler = AdaptiveSampler(box_integrand(model, theta_s), box_limits(opts), opts.sampling.settings())
    log.info("drell_yan_eft: unweighting efficiency %.4g with the flat map, %.4g with the %s map (w_max %.4g)",
             sampler.efficiency_flat, sampler.efficiency, "adapted" if opts.sampling.adapt else "flat",
             sampler.w_max)
    return sampler


def mass_maps(opts: DrellYanOptions, model: DrellYanModel) -> list[MassMap]:
    """The flow's channels as mass maps, in the order of `sampling.flow.channels`."""
    lo, hi = opts.m_ll_range
    ew = model.amplitudes.ew
    build: dict[str, Callable[[], MassMap]] = {
        "photon": lambda: PowerLawMap(lo, hi, opts.sampling.flow.photon_power),
        "z": lambda: BreitWignerMap(lo, hi, ew.m_z, ew.gamma_z),
    }
    return [build[name]() for name in opts.sampling.flow.channels]


def phase_space_key(opts: DrellYanOptions, operators: list[str]) -> str:
    """What a flow's integrand depends on apart from theta: equal keys, interchangeable flows."""
    flow = opts.sampling.flow
    data = {"sqrt_s_gev": opts.sqrt_s_gev, "m_ll_range": list(opts.m_ll_range), "lambda_tev": opts.lambda_tev,
            "pdf": opts.pdf.model_dump(exclude={"path"}), "operators": list(operators),
            "channels": list(flow.channels), "photon_power": flow.photon_power}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class FlowPhaseSpace:
    """The flow's `neural_sampling.ChannelIntegrand`: dsigma / sigma on the unit cube, channel by channel.

    Unconditional (`theta_low` None): at the fixed `theta`. Conditional: theta = low + t (high - low) per point."""

    model: DrellYanModel
    maps: tuple[MassMap, ...]
    component_xs: np.ndarray  # (C,) sigma_c over the window
    theta: np.ndarray | None = None
    theta_low: np.ndarray | None = None
    theta_high: np.ndarray | None = None

    dim = 3

    @property
    def n_channels(self) -> int:
        return len(self.maps)

    @property
    def n_conditions(self) -> int:
        return 0 if self.theta_low is None else int(self.theta_low.size)

    def condition_of(self, theta: np.ndarray) -> np.ndarray:
        """t in [0, 1]^P of a theta (empty without conditions)."""
        if self.theta_low is None or self.theta_high is None:
            return np.empty(0)
        return (np.asarray(theta, dtype=np.float64) - self.theta_low) / (self.theta_high - self.theta_low)

    def _dsigma_normalised(self, m: np.ndarray, y: np.ndarray, c: np.ndarray, cond: np.ndarray) -> np.ndarray:
        powers = self.model.amplitudes.powers
        if self.theta_low is None or self.theta_high is None:
            t = np.asarray(self.theta, dtype=np.float64)
            return self.model.dsigma(m, y, c, t) / float(monomials(t, powers) @ self.component_xs)
        theta = self.theta_low + cond * (self.theta_high - self.theta_low)  # (n, P)
        mono = monomials(theta, powers)  # (n, C)
        return (self.model.dsigma_components(m, y, c) * mono).sum(axis=1) / (mono @ self.component_xs)

    def evaluate(self, u: np.ndarray, channel: np.ndarray, condition: np.ndarray) -> Any:
        from sbi_core.physics.neural_sampling import IntegrandValues

        m = np.empty(u.shape[0])
        jac = np.empty(u.shape[0])
        for k, mp in enumerate(self.maps):
            sel = channel == k
            m[sel] = mp.to_mass(u[sel, 0])
            jac[sel] = 1.0 / mp.density(m[sel])
        v, c = 2.0 * u[:, 1] - 1.0, 2.0 * u[:, 2] - 1.0
        ymax = self.model.rapidity_limit(m)
        f = np.maximum(self._dsigma_normalised(m, v * ymax, c, condition), 0.0) * ymax * 4.0 * jac
        lo, hi = self.model.m_range
        features = np.column_stack([np.log(m / lo) / math.log(hi / lo), v, c, condition])
        return IntegrandValues(f, np.column_stack([m, v, c]), features, prior_weights(list(self.maps), m))


@dataclass(frozen=True)
class FlowSetup:
    """What the simulator hands to the flow functions: its model, options, operators and sampling point."""

    model: DrellYanModel
    opts: DrellYanOptions
    operators: list[str]
    theta_s: np.ndarray
    theta_ranges: np.ndarray  # (P, 2): the parameters' ranges (what a conditional flow is trained across)
    component_xs: np.ndarray

    @property
    def sigma_s(self) -> float:
        return float(monomials(self.theta_s, self.model.amplitudes.powers) @ self.component_xs)

    def phase_space(self, meta: dict[str, Any] | None = None) -> FlowPhaseSpace:
        """The integrand at theta_s, or across the ranges for a conditional flow (the ranges of `meta` when given)."""
        maps = tuple(mass_maps(self.opts, self.model))
        conditional = meta["conditional"] if meta is not None else self.opts.sampling.flow.conditional
        if not conditional:
            return FlowPhaseSpace(self.model, maps, self.component_xs, theta=self.theta_s)
        low = np.asarray(meta["theta_low"] if meta else self.theta_ranges[:, 0], dtype=np.float64)
        high = np.asarray(meta["theta_high"] if meta else self.theta_ranges[:, 1], dtype=np.float64)
        return FlowPhaseSpace(self.model, maps, self.component_xs, theta_low=low, theta_high=high)


def train_flow(setup: FlowSetup) -> SamplerArtifact:
    """Train (or, with `reuse`, read) the flow and find w_max at theta_s: the artifact train-sampler writes."""
    from sbi_core.physics import neural_sampling as ns

    flow = setup.opts.sampling.flow
    if flow.reuse:
        modules, training, space, base = _reused(setup, flow.reuse)
    else:
        space = setup.phase_space()
        arch = ns.FlowArchitecture(space.dim, space.n_conditions, space.n_channels, flow.layers, flow.units,
                                   flow.bins, flow.channel_weights)
        settings = ns.TrainSettings(seed=setup.opts.sampling.seed, steps=flow.steps, batch_size=flow.batch_size,
                                    learning_rate=flow.learning_rate, loss=flow.loss,
                                    buffer_capacity=flow.buffer_capacity, buffered_steps=flow.buffered_steps,
                                    vegas_iterations=flow.vegas_iterations, vegas_evaluations=flow.vegas_evaluations,
                                    device=flow.device)
        trained = ns.train_flow(space, arch, settings)
        modules, training = trained.modules, {**trained.summary(), "steps": flow.steps, "reused_from": None}
        base = {"conditional": space.n_conditions > 0, "architecture": arch.to_json(),
                "theta_low": None if space.theta_low is None else space.theta_low.tolist(),
                "theta_high": None if space.theta_high is None else space.theta_high.tolist()}
    point = _point(setup, modules, space)
    meta = {**base, "phase_space_key": phase_space_key(setup.opts, setup.operators), "channels":
            list(flow.channels), "training": training, "point": point,
            "parton_densities": setup.model.pdf.describe(), "versions": _versions()}
    return SamplerArtifact(FLOW, meta, ns.flow_to_bytes(modules))


def _reused(setup: FlowSetup, uri: str) -> tuple[FlowModules, dict[str, Any], FlowPhaseSpace, dict[str, Any]]:
    """The networks of another run's conditional flow, checked against this run's phase space and theta_s."""
    from sbi_core.physics import neural_sampling as ns

    src = read_sampler(uri, config_hash=None, kind=FLOW)
    meta = src.meta
    if meta.get("phase_space_key") != phase_space_key(setup.opts, setup.operators):
        raise InputError(f"sampler file {uri} (simulator.options.sampling.flow.reuse) was trained for another "
                         "phase space (collider energy, mass window, Lambda, parton densities, operators or channels)")
    if not meta.get("conditional"):
        raise InputError(f"sampler file {uri} (sampling.flow.reuse) holds a flow for one point, not a conditional one")
    low, high = np.asarray(meta["theta_low"]), np.asarray(meta["theta_high"])
    if not np.all((setup.theta_s >= low) & (setup.theta_s <= high)):
        raise InputError(f"sampler file {uri} (sampling.flow.reuse) was trained on theta in {low.tolist()} .. "
                         f"{high.tolist()}; the sampling benchmark {setup.theta_s.tolist()} lies outside")
    try:
        modules = ns.flow_from_bytes(src.payload, ns.FlowArchitecture.from_json(meta["architecture"]))
    except (RuntimeError, TypeError, KeyError) as exc:
        raise InputError(f"sampler file {uri}: its networks cannot be rebuilt ({exc})") from None
    base = {k: meta[k] for k in ("conditional", "architecture", "theta_low", "theta_high")}
    training = {**meta["training"], "reused_from": uri, "train_seconds": 0.0}
    return modules, training, setup.phase_space(meta), base


def _point(setup: FlowSetup, modules: FlowModules, space: FlowPhaseSpace) -> dict[str, Any]:
    """What every shard shares at theta_s: channel fractions, w_max, the excess, and the figures."""
    from sbi_core.physics import neural_sampling as ns

    st = setup.opts.sampling
    cond = space.condition_of(setup.theta_s)
    fractions = ns.channel_fractions(modules, space, cond, max(st.max_points // 10, 1000), st.seed)
    proposal = ns.FlowProposal(modules, space, cond, fractions, scale=setup.sigma_s)
    unw = Unweighter.find(proposal, seed=st.seed, max_points=st.max_points, rule=st.rule)
    return {"theta_s": setup.theta_s.tolist(), "condition": cond.tolist(), "fractions": fractions.tolist(),
            "w_max": unw.w_max, "excess": unw.excess, "sigma": setup.sigma_s, **_prefixed(unw.stats)}


def _prefixed(stats: WeightStats) -> dict[str, float]:
    return {k: v for k, v in stats.as_dict().items() if k != "w_max"}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("madnis", "torch")}


def flow_unweighter(artifact: SamplerArtifact, setup: FlowSetup, uri: str) -> Unweighter:
    """The unweighter a shard draws from: the file's networks, w_max and fractions at this run's theta_s."""
    from sbi_core.physics import neural_sampling as ns

    meta = artifact.meta
    point = meta.get("point", {})
    if meta.get("phase_space_key") != phase_space_key(setup.opts, setup.operators) or \
            not np.array_equal(np.asarray(point.get("theta_s", []), dtype=np.float64), setup.theta_s):
        raise InputError(f"sampler file {uri} does not fit this run's phase space or sampling benchmark")
    try:
        modules = ns.flow_from_bytes(artifact.payload, ns.FlowArchitecture.from_json(meta["architecture"]))
        space = setup.phase_space(meta)
        proposal = ns.FlowProposal(modules, space, np.asarray(point["condition"]), np.asarray(point["fractions"]),
                                   scale=setup.sigma_s)
        stats = WeightStats(**{k: point[k] for k in WeightStats.__dataclass_fields__ if k != "w_max"},
                            w_max=point["w_max"])
        return Unweighter(proposal, w_max=point["w_max"], excess=point["excess"], stats=stats)
    except (RuntimeError, TypeError, KeyError, ValueError) as exc:
        raise InputError(f"sampler file {uri}: cannot rebuild its sampler ({exc})") from None

