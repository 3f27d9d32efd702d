"""The `drell_yan_eft` simulator: pp -> gamma*/Z -> l- l+ at 13 TeV, leading order, with contact operators.

Physics (each piece in its own module):
- `ew_amplitudes`: helicity amplitudes with the SM couplings (photon + Z) and four-fermion contact
  operators; every parameter of interest names one operator (`OPERATORS`: c_LL, c_LR, c_RL, c_RR,
  c_lq1, c_lq3, c_eu, c_ed, c_lu, c_ld, c_qe) with coefficient theta / Lambda^2, so |M|^2, and with
  it every event weight, is quadratic in theta and morphing on (n+1)(n+2)/2 benchmarks is exact;
- `parton_densities`: an analytic, scale-independent parametrisation of the quark densities (not a fit), the
  offline default; `lhapdf_densities`: an installed LHAPDF set at Q = m_ll (`simulator.options.pdf`);
- `drell_yan_model`: the hadronic dsigma / (dm_ll dy_ll dcos) and its integrals (quadrature);
- `drell_yan_sampling`: the phase space and its samplers (`simulator.options.sampler`): a vegas map adapted
  on dsigma at the sampling benchmark, or a MadNIS flow trained once per run (`train_sampler`, written by
  `sbi-core train-sampler` and loaded by every shard with `load_sampler`), then exact unweighting;
- `drell_yan_options`: the typed `simulator.options`;
- `detector` / `observables` / `particles`: the same parametrised detector and observable library as
  LHE ingestion (`simulator.options.detector`; observables are any names the library reads).

Events. Parton-level latent z = (m_ll, y_ll, cos_theta, phi) (the l- direction in the dilepton rest frame,
relative to +z) is drawn from dsigma(z | theta_s) in the mass window; the pair then gets a Gaussian
transverse momentum (kt_x, kt_y) of width `intrinsic_kt_gev` (a stand-in for initial-state radiation,
independent of theta), and the two leptons get their detector noise (z-score and efficiency uniform of
the l- then the l+): latent columns `LATENT_NAMES`.
The detector noise makes the observations a deterministic function of the latent and nu, which is how
`observations_at` is exact. The weight at benchmark b is Z * o * dsigma(z | theta_b) / dsigma(z | theta_s),
with Z the (clipped) cross section at theta_s and o >= 1 the overweight factor of the unweighting (1 for
all but a handful of events, see `adaptive_sampling`): the mean weight estimates sigma(theta_b).

Nuisance parameters (kinds):
- normalization: rate x (1 + size)^nu;
- shape_weight: a PDF-like tilt, every parton density x (x / x0)^(nu size), x0 = pivot / sqrt(s): the
  event weight x (m_ll / pivot)^(2 nu size), independent of theta (`parton_densities.tilt_weight`);
- observable_scale: lepton momentum scale s = 1 + size nu (every observable follows);
- observable_resolution: lepton resolution r = 1 + size nu (the detector's sigma/E times r).
The last two move observables (`observations_at`); their per-event weights (`nuisance_weights`) are the
ratio of the detector densities of the event's measured lepton momenta at nu = +-1 and 0, as in the
benchmark simulator.

Likelihoods: `log_likelihood` raises NotImplementedError (no closed form after the detector). With z the
parton latent, `joint_log_likelihood` is log p(z | theta, nu) plus the log density of the two leptons'
measured momentum factors given z (Gaussian, at nu), up to constants in theta and nu (efficiency and
acceptance); the measured factors are read from the latent noise (the event's nominal observation), so x
is only shape-checked. `joint_score` is grad_theta log p(z | theta): the detector does not depend on theta.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sbi_core.config_base import parse_section
from sbi_core.errors import ConfigError, InputError
from sbi_core.physics import drell_yan_sampling as sampling
from sbi_core.physics import observables as obs
from sbi_core.physics.adaptive_sampling import AdaptiveSampler, UnweightingReport
from sbi_core.physics.base import EventBatch
from sbi_core.physics.basis import quadratic_morphing_issues
from sbi_core.physics.detector import Detector, DetectorNoise
from sbi_core.physics.drell_yan_model import DrellYanModel
from sbi_core.physics.drell_yan_options import DrellYanOptions, FlowOptions, PdfOptions, SamplingOptions
from sbi_core.physics.ew_amplitudes import OPERATORS, DileptonAmplitudes
from sbi_core.physics.morphing import Morphing, monomials, monomials_gradient, quadratic_powers
from sbi_core.physics.particles import Particles
from sbi_core.physics.parton_densities import DensityModel, PartonDensities
from sbi_core.physics.registry import register_simulator
from sbi_core.physics.sampler_file import SamplerArtifact
from sbi_core.physics.unweighting import Unweighter

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig

__all__ = ["LATENT_NAMES", "DrellYanOptions", "DrellYanSimulator", "FlowOptions", "PdfOptions", "SamplingOptions"]

log = logging.getLogger(__name__)

#: Columns of `samples/latent`: parton-level kinematics, then the detector noise of the l- and the l+.
LATENT_NAMES = ["m_ll", "y_ll", "cos_theta", "phi", "kt_x", "kt_y", "lminus_z", "lminus_u", "lplus_z", "lplus_u"]
_NOISE = slice(6, 10)
_SUPPORTED_NUISANCE = ("normalization", "shape_weight", "observable_scale", "observable_resolution")
_PDG_ID = {"electron": 11, "muon": 13}
_LOG_2PI = math.log(2.0 * math.pi)


def _validate_options(cfg: AnalysisConfig) -> tuple[DrellYanOptions | None, list[tuple[str, str]]]:
    return parse_section(DrellYanOptions, cfg.simulator.options, "simulator.options")


def _sampling_issues(cfg: AnalysisConfig, opts: DrellYanOptions | None) -> list[tuple[str, str]]:
    """The parton densities can be found; a conditional flow covers the sampling benchmark."""
    issues: list[tuple[str, str]] = []
    if opts is None:
        return issues
    if opts.pdf.source == "lhapdf":
        from sbi_core.physics.lhapdf_densities import find_set

        try:
            find_set(str(opts.pdf.name), opts.pdf.path)
        except InputError as exc:
            issues.append(("simulator.options.pdf.name", str(exc)))
    flow = opts.sampling.flow
    if opts.sampler == "flow" and flow.conditional and cfg.sampling_benchmark in cfg.benchmark_names:
        theta = cfg.benchmark_matrix()[cfg.benchmark_names.index(cfg.sampling_benchmark)]
        outside = [p.name for p, t in zip(cfg.parameters, theta, strict=True) if not p.range[0] <= t <= p.range[1]]
        if outside:
            issues.append(("simulator.options.sampling.flow.conditional", f"the sampling benchmark lies outside "
                           f"the ranges of {outside}: a conditional flow is trained across the ranges only"))
    if flow.reuse is not None and not (opts.sampler == "flow" and flow.conditional):
        issues.append(("simulator.options.sampling.flow.reuse", "reuse needs sampler: flow and conditional: true"))
    return issues


@dataclass(frozen=True)
class _Reconstruction:
    """The detector view of a batch of latent rows: true leptons, kept noise, nominal reconstruction, sigma/E."""

    truth: Particles
    noise: DetectorNoise
    nominal: Particles
    sigma: np.ndarray  # (n, 2) relative resolution of each lepton at its true momentum


@dataclass(frozen=True)
class _Engine:
    """What a set of options determines: the model (amplitudes, densities) and its component cross sections."""

    model: DrellYanModel
    component_xs: np.ndarray  # (C,) sigma_c over the window, nominal


def _densities(opts: PdfOptions) -> DensityModel:
    if opts.source == "analytic":
        return PartonDensities()
    from sbi_core.physics.lhapdf_densities import LhapdfDensities

    return LhapdfDensities(str(opts.name), opts.member, opts.path)


@functools.lru_cache(maxsize=8)
def _engine(operators: tuple[str, ...], opts_json: str) -> _Engine:
    """Build (and cache per process) the model and its cross sections by quadrature."""
    opts = DrellYanOptions.model_validate_json(opts_json)
    pdf = _densities(opts.pdf)
    model = DrellYanModel(DileptonAmplitudes(list(operators), opts.lambda_tev), sqrt_s=opts.sqrt_s_gev,
                          m_range=tuple(opts.m_ll_range), pdf=pdf, scale_gev=opts.pdf.scale_gev)
    comp = model.cross_section_components()
    comp.setflags(write=False)
    log.info("drell_yan_eft: parton densities: %s", pdf.describe())
    return _Engine(model, comp)


@functools.lru_cache(maxsize=8)
def _vegas(operators: tuple[str, ...], opts_json: str, theta_s: tuple[float, ...]) -> AdaptiveSampler:
    """The vegas sampler (cached per process: adaptation and the max search take about a second)."""
    opts = DrellYanOptions.model_validate_json(opts_json)
    return sampling.vegas_sampler(_engine(operators, opts_json).model, opts, np.asarray(theta_s))


@register_simulator
class DrellYanSimulator:
    """pp -> gamma*/Z -> l l with contact operators; see the module docstring."""

    name: ClassVar[str] = "drell_yan_eft"
    #: It draws events at any parameter point (generation.sampling_point).
    samples_anywhere: ClassVar[bool] = True

    # ------------------------------------------------------------------ config
    @classmethod
    def check_config(cls, cfg: AnalysisConfig) -> list[tuple[str, str]]:
        """Options, operators, observables, nuisance kinds and the morphing basis; (field path, message) each."""
        opts, issues = _validate_options(cfg)
        issues.extend(quadratic_morphing_issues(cfg, cls.name))
        for i, p in enumerate(cfg.parameters):
            if p.name not in OPERATORS:
                issues.append((f"parameters[{i}].name", f"{p.name!r} is not a contact operator of drell_yan_eft; "
                               f"known: {sorted(OPERATORS)}"))
        for i, message in obs.check_names(cfg.observable_names):
            issues.append((f"observables[{i}].name", message))
        for i, nu in enumerate(cfg.nuisance):
            kind = str(nu.kind)
            if kind not in _SUPPORTED_NUISANCE:
                issues.append((f"nuisance[{i}].kind", f"{kind!r} is not supported by drell_yan_eft "
                               f"(supported: {list(_SUPPORTED_NUISANCE)})"))
            elif kind in ("observable_scale", "observable_resolution") and nu.size >= 1.0:
                issues.append((f"nuisance[{i}].size", f"must be < 1 for {kind} (the factor 1 - size must stay > 0)"))
            if nu.observables is not None:
                issues.append((f"nuisance[{i}].observables", "drell_yan_eft scales the lepton momenta: every "
                               "observable follows; leave observables out"))
            resp = opts.lepton_response if opts is not None else None
            if kind in ("observable_scale", "observable_resolution") and resp is not None and not any(
                    (resp.stochastic, resp.noise, resp.constant, resp.pt_term)):
                issues.append((f"nuisance[{i}].kind", f"{kind} needs a lepton resolution > 0 (its event weights are "
                               f"ratios of resolution densities): set simulator.options.detector.{opts.lepton}"))
        issues.extend(_sampling_issues(cfg, opts))
        n = len(cfg.parameters)
        n_comp = (n + 1) * (n + 2) // 2
        if len(cfg.benchmarks) != n_comp:
            issues.append(("benchmarks", f"drell_yan_eft needs exactly {n_comp} benchmarks (one per morphing "
                           f"component of |M|^2 with {n} parameters), got {len(cfg.benchmarks)}"))
        else:
            try:
                Morphing(quadratic_powers(n), np.asarray(cfg.benchmark_matrix(), dtype=np.float64))
            except InputError as exc:
                issues.append(("benchmarks", str(exc)))
        return issues

    def __init__(self, cfg: AnalysisConfig) -> None:
        issues = self.check_config(cfg)
        if issues:
            raise ConfigError(f"simulator {self.name!r}", issues)
        self.cfg = cfg
        self.options = DrellYanOptions.model_validate(cfg.simulator.options)
        self._n_params = len(cfg.parameters)
        self._powers = quadratic_powers(self._n_params)
        basis = np.asarray(cfg.benchmark_matrix(), dtype=np.float64)
        self._morphing = Morphing(self._powers, basis)
        self._sampling_index = cfg.benchmark_names.index(cfg.sampling_benchmark)
        self._at_point = cfg.generation.sampling_point is not None  # events drawn off the basis benchmarks
        self._theta_s = np.asarray(cfg.sampling_theta(), dtype=np.float64)
        self._engine = _engine(tuple(cfg.parameter_names), self.options.model_dump_json())
        if not self.cross_section(self._theta_s) > 0:
            raise InputError(f"drell_yan_eft: the cross section at the sampling benchmark is "
                             f"{self.cross_section(self._theta_s):.4g} pb (not > 0)")
        self._unweighter: Unweighter | AdaptiveSampler | None = None  # built when first needed (sampler)
        self._sampler_meta: dict[str, Any] = {}
        self._detector = Detector(self.options.detector)
        # observations_at: the objects reconstructed at nominal keep their slots; no pT threshold is re-applied.
        lax = self.options.detector.model_copy(update={
            t: self.options.detector.response(t).model_copy(update={"pt_min": 0.0, "efficiency": 1.0})
            for t in type(self.options.detector).model_fields})
        self._moving_detector = Detector(lax)
        self._pid = _PDG_ID[self.options.lepton]
        self._nuis_kind = [str(nu.kind) for nu in cfg.nuisance]
        self._nuis_size = np.array([nu.size for nu in cfg.nuisance], dtype=np.float64)
        self._xs_at_tilt: dict[float, np.ndarray] = {0.0: self._engine.component_xs}

    # ------------------------------------------------------------------ contract properties
    @property
    def latent_names(self) -> list[str]:
        return list(LATENT_NAMES)

    @property
    def morphing_powers(self) -> np.ndarray:
        return self._powers.copy()

    @property
    def morphing(self) -> Morphing:
        return self._morphing

    @property
    def model(self) -> DrellYanModel:
        return self._engine.model

    @property
    def sampling_theta(self) -> np.ndarray:
        return self._theta_s.copy()

    @property
    def component_cross_sections(self) -> np.ndarray:
        """(C,) sigma_c in pb over the mass window before the detector: sigma(theta) = sum_c theta^powers[c] sigma_c."""
        return self._engine.component_xs.copy()

    # ------------------------------------------------------------------ samplers
    def sampler_kind(self) -> str | None:
        """'flow' when the config's sampler is trained once per run (`sbi-core train-sampler`), else None."""
        return sampling.FLOW if self.options.sampler == "flow" else None

    def _flow_setup(self) -> sampling.FlowSetup:
        ranges = np.array([p.range for p in self.cfg.parameters], dtype=np.float64)
        return sampling.FlowSetup(self.model, self.options, list(self.cfg.parameter_names), self._theta_s.copy(),
                                  ranges, self._engine.component_xs)

    def train_sampler(self) -> SamplerArtifact:
        """Train the flow of `sampling.flow` (or read the `reuse` one) and find w_max at the sampling benchmark.

        The meta also holds the vegas sampler's figures at the same w_max rule, for comparison."""
        if self.sampler_kind() is None:
            raise InputError("simulator.options.sampler is vegas: there is no sampler to train")
        art = sampling.train_flow(self._flow_setup())
        vegas = self._vegas()
        art.meta["vegas"] = {"efficiency": vegas.efficiency, "efficiency_flat": vegas.efficiency_flat,
                             "relative_variance": vegas.stats.relative_variance}
        return art

    def load_sampler(self, artifact: SamplerArtifact, uri: str) -> None:
        """Draw from the trained sampler of the run's sampler file (`read_sampler` checked it); InputError naming
        uri when it does not fit this simulator."""
        if artifact.kind != self.sampler_kind():
            raise InputError(f"sampler file {uri}: holds a {artifact.kind!r} sampler, the config asks for "
                             f"{self.options.sampler!r}")
        self._unweighter = sampling.flow_unweighter(artifact, self._flow_setup(), uri)
        self._sampler_meta = artifact.meta

    def _vegas(self) -> AdaptiveSampler:
        return _vegas(tuple(self.cfg.parameter_names), self.options.model_dump_json(), tuple(self._theta_s))

    def _sampler(self) -> Unweighter | AdaptiveSampler:
        if self._unweighter is None:
            if self.sampler_kind() is not None:
                raise InputError("drell_yan_eft with sampler flow draws from the run's trained sampler: run "
                                 "`sbi-core train-sampler --run RUN` first (generate loads its file)")
            self._unweighter = self._vegas()
        return self._unweighter

    def unweighting_report(self) -> UnweightingReport:
        """Unweighting efficiency of the sampler drawn from (and of the flat map), w_max, overweight excess."""
        sampler = self._sampler()
        if isinstance(sampler, AdaptiveSampler):
            return sampler.report()
        flat = float(self._sampler_meta.get("vegas", {}).get("efficiency_flat", math.nan))
        return UnweightingReport(flat, sampler.efficiency, sampler.w_max, sampler.integral, sampler.excess)

    def provenance(self) -> dict[str, Any]:
        """What the events rest on beyond the config's numbers: the densities and the sampler (for summaries)."""
        out: dict[str, Any] = {"parton_densities": self.model.pdf.describe(), "sampler": self.options.sampler}
        if self._unweighter is not None:
            out["unweighting_efficiency"] = round(float(self._unweighter.efficiency), 6)
        return out

    # ------------------------------------------------------------------ input checks
    def _theta(self, theta: np.ndarray) -> np.ndarray:
        t = np.asarray(theta, dtype=np.float64)
        if t.shape != (self._n_params,) or not np.all(np.isfinite(t)):
            raise ValueError(f"theta: expected finite values of shape ({self._n_params},), got {t.shape}")
        return t

    def _nu(self, nu: np.ndarray | None) -> np.ndarray:
        if nu is None:
            return np.zeros(len(self._nuis_kind))
        v = np.asarray(nu, dtype=np.float64)
        if v.shape != (len(self._nuis_kind),) or not np.all(np.isfinite(v)):
            raise ValueError(f"nu: expected finite values of shape ({len(self._nuis_kind)},), got {v.shape}")
        return v

    def _latent(self, z: np.ndarray, n: int | None = None) -> np.ndarray:
        a = np.asarray(z, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != len(LATENT_NAMES) or (n is not None and a.shape[0] != n):
            rows = "n" if n is None else str(n)
            raise ValueError(f"z: expected shape ({rows}, {len(LATENT_NAMES)}) ({LATENT_NAMES}), got {a.shape}")
        return a

    def _xz(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xa = np.asarray(x, dtype=np.float64)
        if xa.ndim != 2 or xa.shape[1] != len(self.cfg.observables):
            raise ValueError(f"x: expected shape (n, {len(self.cfg.observables)}), got {xa.shape}")
        return xa, self._latent(z, xa.shape[0])

    def _factors(self, nu: np.ndarray) -> tuple[float, float]:
        """(momentum scale s, resolution factor r) at nu: products over the nuisances of each kind."""
        s = r = 1.0
        for kind, size, v in zip(self._nuis_kind, self._nuis_size, nu, strict=True):
            if kind == "observable_scale":
                s *= 1.0 + size * v
            elif kind == "observable_resolution":
                r *= 1.0 + size * v
        if not (s > 0 and r > 0):
            raise ValueError(f"nu: the momentum scale ({s:.4g}) and resolution factor ({r:.4g}) must stay > 0")
        return s, r

    # ------------------------------------------------------------------ kinematics and detector
    def truth_particles(self, z: np.ndarray) -> Particles:
        """The two true leptons (slot 0: l-, slot 1: l+) of parton-level latent rows."""
        za = self._latent(z)
        p4 = self.model.lepton_momenta(za[:, 0], za[:, 1], za[:, 2], za[:, 3], za[:, 4:6])
        pid = np.tile(np.array([self._pid, -self._pid], dtype=np.int64), (za.shape[0], 1))
        return Particles(pid, np.ascontiguousarray(p4))

    def _reconstruct(self, z: np.ndarray) -> _Reconstruction:
        """Truth leptons, their kept noise and the nominal reconstruction of latent rows (done once per batch)."""
        truth = self.truth_particles(z)
        noise = DetectorNoise.from_flat(np.ascontiguousarray(z[:, _NOISE]))
        nominal = self._detector.respond(truth, noise)
        sigma = self._detector.relative_resolution(truth)
        return _Reconstruction(truth, noise, nominal, sigma)

    def _observe(self, rec: _Reconstruction, nu: np.ndarray | None) -> np.ndarray:
        if nu is None:
            reco = rec.nominal
        else:
            s, r = self._factors(nu)
            reco = self._moving_detector.respond(rec.truth.select(rec.nominal.present), rec.noise, scale=s,
                                                 resolution=r)
        return obs.compute(self.cfg.observable_names, reco)

    @staticmethod
    def _log_detector(rec: _Reconstruction, s: float, r: float) -> np.ndarray:
        """sum over the reconstructed leptons of log N(f; s, (s r sigma)^2), f = measured / true momentum at
        nominal (from the latent noise), sigma the relative resolution at the true momentum: (n,)."""
        f = 1.0 + rec.sigma * rec.noise.z
        width = s * r * rec.sigma
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = -0.5 * ((f - s) / width) ** 2 - np.log(width) - 0.5 * _LOG_2PI
        return np.where(rec.nominal.present, logp, 0.0).sum(axis=1)

    # ------------------------------------------------------------------ the contract
    def cross_section(self, theta: np.ndarray) -> float:
        """sigma(theta) in pb in the generated mass window, before the detector (nominal nuisances)."""
        return float(monomials(self._theta(theta), self._powers) @ self._engine.component_xs)

    def _cross_section_at(self, theta: np.ndarray, nu: np.ndarray) -> float:
        """sigma(theta, nu) before the detector: only shape_weight nuisances change it (normalization ones
        change the rate, not the density, and are left out as in every log-likelihood here)."""
        power = 2.0 * float(sum(size * v for kind, size, v in zip(self._nuis_kind, self._nuis_size, nu, strict=True)
                                if kind == "shape_weight"))
        if power not in self._xs_at_tilt:
            self._xs_at_tilt[power] = self.model.cross_section_components(power, self.options.pdf_tilt_pivot_gev)
        return float(monomials(theta, self._powers) @ self._xs_at_tilt[power])

    def _tilt_log(self, m: np.ndarray, nu: np.ndarray) -> np.ndarray:
        power = 2.0 * sum(size * v for kind, size, v in zip(self._nuis_kind, self._nuis_size, nu, strict=True)
                          if kind == "shape_weight")
        return power * np.log(m / self.options.pdf_tilt_pivot_gev)

    def dsigma(self, z: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """dsigma / (dm dy dcos) in pb / GeV at the parton latent, from |M(theta)|^2 evaluated directly: (n,)."""
        za = self._latent(z)
        return self.model.dsigma(za[:, 0], za[:, 1], za[:, 2], self._theta(theta))

    def latent_log_likelihood(self, z: np.ndarray, theta: np.ndarray, nu: np.ndarray | None = None) -> np.ndarray:
        """log p(z | theta, nu) of the parton latent (m_ll, y_ll, cos_theta, phi, kt_x, kt_y), a density in
        dm dy dcos dphi dkt_x dkt_y (without the kt factor when intrinsic_kt_gev is 0)."""
        za = self._latent(z)
        t, v = self._theta(theta), self._nu(nu)
        with np.errstate(divide="ignore"):
            out = (np.log(self.dsigma(za, t)) + self._tilt_log(za[:, 0], v)
                   - math.log(self._cross_section_at(t, v)) - _LOG_2PI)
        width = self.options.intrinsic_kt_gev
        if width > 0:
            out += -0.5 * ((za[:, 4] ** 2 + za[:, 5] ** 2) / width**2) - 2.0 * math.log(width) - _LOG_2PI
        return out

    def joint_log_likelihood(
        self, x: np.ndarray, z: np.ndarray, theta: np.ndarray, nu: np.ndarray | None = None
    ) -> np.ndarray:
        """log p(z | theta, nu) + log p(measured lepton momenta | z, nu), up to constants (module docstring)."""
        _, za = self._xz(x, z)
        v = self._nu(nu)
        s, r = self._factors(v)
        return self.latent_log_likelihood(za, theta, v) + self._log_detector(self._reconstruct(za), s, r)

    def joint_score(self, x: np.ndarray, z: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """grad_theta log p(z | theta) = grad dsigma(z) / dsigma(z) - grad sigma / sigma: (n, n_parameters)."""
        _, za = self._xz(x, z)
        t = self._theta(theta)
        comp = self.model.dsigma_components(za[:, 0], za[:, 1], za[:, 2])  # (n, C)
        grad = monomials_gradient(t, self._powers)  # (C, P)
        xs = self._engine.component_xs
        with np.errstate(divide="ignore", invalid="ignore"):
            return (comp @ grad) / (comp @ monomials(t, self._powers))[:, None] - (grad.T @ xs) / (
                monomials(t, self._powers) @ xs)

    def log_likelihood(self, x: np.ndarray, theta: np.ndarray, nu: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError("drell_yan_eft has no closed-form p(x | theta): use the learned likelihood")

    def observations_at(self, observations: np.ndarray, latent: np.ndarray, nu: np.ndarray) -> np.ndarray:
        """The same events at nuisance values nu: the objects reconstructed at nominal keep their kept noise,
        their momenta move with the scale and resolution factors (no pT threshold is re-applied, so every
        observable stays defined); weight-type nuisances leave x as it is."""
        _, za = self._xz(observations, latent)
        return self._observe(self._reconstruct(za), self._nu(nu))

    def nuisance_weights(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(n, n_nuisance, 2): dsigma(x, z | nu_k = +1, -1) / dsigma(x, z | 0) per nuisance (independent of theta)."""
        _, za = self._xz(x, z)
        return self._nuisance_weights(za, self._reconstruct(za))

    def _nuisance_weights(self, z: np.ndarray, rec: _Reconstruction) -> np.ndarray:
        out = np.ones((z.shape[0], len(self._nuis_kind), 2))
        base = None
        for i, (kind, size) in enumerate(zip(self._nuis_kind, self._nuis_size, strict=True)):
            for j, sign in enumerate((1.0, -1.0)):
                if kind == "normalization":
                    out[:, i, j] = (1.0 + size) ** sign
                elif kind == "shape_weight":
                    out[:, i, j] = (z[:, 0] / self.options.pdf_tilt_pivot_gev) ** (2.0 * sign * size)
                else:
                    if base is None:
                        base = self._log_detector(rec, 1.0, 1.0)
                    s, r = (1.0 + sign * size, 1.0) if kind == "observable_scale" else (1.0, 1.0 + sign * size)
                    out[:, i, j] = np.exp(self._log_detector(rec, s, r) - base)
        return out

    def simulate(self, n: int, rng: np.random.Generator) -> EventBatch:
        """n events at the sampling benchmark, nominal nuisances, before cuts; deterministic given rng.

        Draw order: accepted phase-space points (uniforms of the sampler), phi, the pair's kt, the detector noise."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n: expected an int >= 0, got {n!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected numpy.random.Generator, got {type(rng).__name__}")
        n = int(n)
        sampler = self._sampler()
        points, overweight = sampler.sample(n, rng)
        m, c = points[:, 0], points[:, 2]
        y = points[:, 1] * self.model.rapidity_limit(m)
        phi = rng.uniform(-math.pi, math.pi, n)
        kt = self.options.intrinsic_kt_gev * rng.standard_normal((n, 2))
        noise = DetectorNoise.draw(n, 2, rng)
        z = np.column_stack([m, y, c, phi, kt, noise.flat()])
        dsig = self.model.dsigma(m, y, c, self._morphing.basis)  # (n, B), direct |M|^2 at each benchmark
        if self._at_point:  # dsigma at the sampling point itself (not a basis column)
            dsig_s = self.model.dsigma(m, y, c, self._theta_s[None, :])[:, 0]
        else:
            dsig_s = dsig[:, self._sampling_index]
        clipped = sampler.clipped_integral(self.cross_section(self._theta_s))
        weights = clipped * overweight[:, None] * dsig / dsig_s[:, None]
        rec = self._reconstruct(z)
        return EventBatch(self._observe(rec, None), z, weights, self._nuisance_weights(z, rec))
