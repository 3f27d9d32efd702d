"""`simulator.options` of `drell_yan_eft`: typed sections, unknown keys refused, every field named on error.

What to use when: `DrellYanOptions` is the whole section (`simulator.options`); `SamplingOptions` the
phase-space sampling and unweighting shared by both samplers; `FlowOptions` the neural importance sampler
(`sampler: flow`, `neural_sampling`); `PdfOptions` the parton densities (the analytic toy, the offline
default, or an LHAPDF grid read by `lhapdf_densities`).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sbi_core.config_base import ConfigSection
from sbi_core.physics.adaptive_sampling import SamplerSettings
from sbi_core.physics.detector import DetectorOptions, ObjectResponse
from sbi_core.physics.unweighting import MaxWeightRule

__all__ = ["CHANNEL_NAMES", "DrellYanOptions", "FlowOptions", "PdfOptions", "SamplingOptions"]

#: Channels of the multi-channel flow: each maps the unit interval onto m_ll in the window.
CHANNEL_NAMES = ("photon", "z")


class FlowOptions(ConfigSection):
    """Neural importance sampling (`sampler: flow`): a MadNIS flow over the unit cube of the phase-space map,
    started from VEGAS grids, trained once per run by `sbi-core train-sampler`."""

    channels: list[Literal["photon", "z"]] = Field(
        default_factory=lambda: ["photon", "z"], min_length=1, max_length=2,
        description="Channels, each with its own mass mapping and flow: photon (a power law m^-photon_power, "
        "the massless propagator) and z (a Breit-Wigner at M_Z); the channel weights are learned.")
    photon_power: float = Field(default=3.0, ge=0.0, le=10.0,
                                description="Exponent a of the photon channel's mass density m^-a.")
    conditional: bool = Field(
        default=False, description="true: one flow conditioned on the parameters of interest, trained across "
        "their ranges, so a new sampling point needs no new training (see reuse); false: a flow for the "
        "sampling benchmark alone.")
    reuse: str | None = Field(
        default=None, description="URI of a conditional sampler file trained by another run (the same phase "
        "space, operators and parton densities): train-sampler then only finds this run's maximum weight.")
    steps: int = Field(default=400, ge=1, le=100_000, description="Training steps (each on fresh integrand "
                       "evaluations, followed by buffered_steps on stored ones).")
    batch_size: int = Field(default=1024, ge=64, le=1_000_000, description="Points per training step.")
    learning_rate: float = Field(default=3e-3, gt=0.0, le=1.0, description="Adam learning rate (cosine decay).")
    loss: Literal["variance", "kl"] = Field(default="variance", description="variance: the stratified "
                                            "variance of the weights; kl: the KL divergence.")
    layers: int = Field(default=3, ge=1, le=10, description="Layers of each coupling block's network.")
    units: int = Field(default=32, ge=4, le=1024, description="Hidden units of each coupling block's network.")
    bins: int = Field(default=10, ge=2, le=64, description="Rational-quadratic spline bins.")
    channel_weights: bool = Field(default=True, description="Learn the channel weights (a network correcting "
                                  "the prior weights of the mass mappings); ignored with one channel.")
    buffer_capacity: int = Field(default=20_000, ge=0, le=100_000_000,
                                 description="Integrand evaluations kept for buffered training (0: none).")
    buffered_steps: int = Field(default=3, ge=0, le=100,
                                description="Steps on buffered evaluations after each step on fresh ones.")
    vegas_iterations: int = Field(default=10, ge=1, le=100,
                                  description="VEGAS iterations per channel that the flow starts from.")
    vegas_evaluations: int = Field(default=5000, ge=100, le=10_000_000,
                                   description="Integrand evaluations per VEGAS iteration and channel.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Training device (auto: cuda "
                                                   "when present). Generation always samples on the CPU.")

    @field_validator("channels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"channels must be distinct, got {v}")
        return v


class SamplingOptions(ConfigSection):
    """Phase-space sampling and unweighting, for either sampler; part of the event definition."""

    seed: int = Field(default=20240611, ge=0, lt=2**63,
                      description="Seed of the vegas adaptation, the flow's training and the max-weight search "
                      "(not the run seed): every shard draws from the same proposal.")
    iterations: int = Field(default=12, ge=1, le=100, description="vegas adaptation iterations.")
    evaluations: int = Field(default=20_000, ge=1000, le=10_000_000,
                             description="Integrand evaluations per vegas iteration.")
    max_points: int = Field(default=200_000, ge=10_000, le=100_000_000,
                            description="Points of the max-weight search (and of the overweight estimate).")
    safety: float = Field(default=1.1, ge=1.0, le=10.0,
                          description="w_max = safety x the weight the rule finds: fewer overweight events, "
                          "lower efficiency.")
    overweight_fraction: float = Field(
        default=0.0, ge=0.0, le=0.01,
        description="0: w_max from the largest weight found; eps > 0: the quantile rule of MadGraph and MadNIS, "
        "w_max is the smallest weight whose excess is at most eps of the cross section (overweight events are "
        "kept with their factor w / w_max, and counted).")
    adapt: bool = Field(default=True, description="false: draw from the flat (unadapted) map, for comparisons "
                        "only: the unweighting efficiency drops by about 100x.")
    flow: FlowOptions = Field(default_factory=FlowOptions, description="The neural sampler (sampler: flow).")

    def settings(self) -> SamplerSettings:
        """The vegas sampler's settings."""
        return SamplerSettings(seed=self.seed, iterations=self.iterations, evaluations=self.evaluations,
                               max_points=self.max_points, safety=self.safety, adapt=self.adapt,
                               overweight_fraction=self.overweight_fraction)

    @property
    def rule(self) -> MaxWeightRule:
        return MaxWeightRule(self.safety, self.overweight_fraction)


class PdfOptions(ConfigSection):
    """Parton densities: the analytic toy (offline default, not a fit) or an installed LHAPDF set."""

    source: Literal["analytic", "lhapdf"] = Field(
        default="analytic", description="analytic: the toy parametrisation of parton_densities (no scale "
        "dependence, not a fit: rates of the right order only); lhapdf: an LHAPDF grid (.info + .dat).")
    name: str | None = Field(default=None, description="LHAPDF set name, e.g. cteq6l1 (source: lhapdf).")
    member: int = Field(default=0, ge=0, le=10_000, description="Member of the set (0: the central one).")
    path: str | None = Field(default=None, description="Directory holding the set's folder; default: the "
                             "directories of LHAPDF_DATA_PATH (colon-separated).")
    scale_gev: float | None = Field(default=None, gt=0.0, description="Factorisation scale in GeV; default: "
                                    "m_ll event by event.")

    @model_validator(mode="after")
    def _named(self) -> PdfOptions:
        if self.source == "lhapdf" and not self.name:
            raise ValueError("name: an LHAPDF set name is needed with source: lhapdf")
        return self


class DrellYanOptions(ConfigSection):
    """`simulator.options` of drell_yan_eft (unknown keys are refused)."""

    sqrt_s_gev: float = Field(default=13_000.0, gt=100.0, le=100_000.0, description="Collider energy in GeV.")
    m_ll_range: tuple[float, float] = Field(
        default=(60.0, 400.0), description="Generated dilepton mass window [low, high] in GeV (parton level).")
    lambda_tev: float = Field(default=1.0, gt=0.0, le=1000.0,
                              description="Lambda in TeV: the contact terms are theta / Lambda^2.")
    lepton: Literal["electron", "muon"] = Field(default="muon", description="Lepton flavour (l = e or mu).")
    intrinsic_kt_gev: float = Field(
        default=5.0, ge=0.0, le=100.0,
        description="Gaussian width (per transverse component, GeV) of the dilepton pT: stands in for the "
        "initial-state radiation a leading-order event lacks (without it delta-phi is pi and pT_ll is 0).")
    pdf_tilt_pivot_gev: float = Field(
        default=91.1876, gt=0.0, description="shape_weight nuisances tilt the densities about x0 = pivot / sqrt(s).")
    pdf: PdfOptions = Field(default_factory=PdfOptions, description="Parton densities.")
    detector: DetectorOptions = Field(default_factory=DetectorOptions,
                                      description="Detector response (the leptons use their type's entry).")
    sampler: Literal["vegas", "flow"] = Field(
        default="vegas", description="vegas: a vegas-adapted map (set up in about a second by every step); "
        "flow: neural importance sampling, trained once per run by `sbi-core train-sampler` (sampling.flow).")
    sampling: SamplingOptions = Field(default_factory=SamplingOptions, description="Phase-space sampling.")

    @field_validator("m_ll_range")
    @classmethod
    def _window(cls, v: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        sqrt_s = info.data.get("sqrt_s_gev", math.inf)
        if not (math.isfinite(v[0]) and math.isfinite(v[1]) and 1.0 <= v[0] < v[1] < sqrt_s):
            raise ValueError(f"need 1 <= low < high < sqrt_s_gev ({sqrt_s}), got {list(v)}")
        return v

    @property
    def lepton_response(self) -> ObjectResponse:
        return self.detector.response(self.lepton)
