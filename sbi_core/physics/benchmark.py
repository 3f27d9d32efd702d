"""The benchmark simulator: an EFT-like process whose every likelihood is closed form.

Model (D = `dimensions` latent and observed coordinates, n = number of parameters of interest):
- amplitude M(z; theta) = g_0(z) + sum_k theta_k g_k(z), with signed "square-root Gaussians"
  g_k(z) = s_k exp(-1/4 (z - mu_k)^T P_k (z - mu_k)); g_0 is the SM, g_k the coupling-k amplitude;
- dsigma(z|theta) = A |M|^2 = sum_c theta^powers[c] h_c(z) (powers from `quadratic_powers`). Each
  h_c = (2 - delta_kl) A g_k g_l is an unnormalised Gaussian with precision (P_k + P_l)/2, so
  sigma(theta) and p(z|theta) = dsigma/sigma are Gaussian mixtures with signed (interference) weights;
- optional background (`options.background`): a theta-independent sample, dsigma_bkg(z) = sigma_bkg
  N(z; mu_b, width^2 P_0^-1), a Gaussian `width` times as broad as the SM amplitude's peak, its mean `shift`
  SM widths away along a direction drawn from `model_seed`. The model then has two samples, `signal` and
  `background` (else one, `signal`); a `normalization` nuisance may act on some of them (`nuisance[*].samples`),
  an `observable_scale` one (the detector) acts on both;
- detector: x = S (z + eps), eps ~ N(0, Sigma_det), S = diag(1 + size*nu) from observable_scale
  nuisances (identity at nominal), and only the config's observables are kept.
The geometry (means, correlated covariances, signs) is drawn once from `model_seed`, never from the
generation seed. The SM amplitude is the broadest one (P_k - P_0 positive definite), so weights of
events sampled at the SM are bounded at every theta.

What to use when: `simulate` for events; `cross_section`, `log_likelihood` (p(x|theta, nu)),
`joint_log_likelihood` / `joint_score` (p(x, z|theta)) and `observation_moments` for closure tests;
`log_dsigma(x, theta, nu, sample)` (one sample's differential cross section: the exact likelihood arrays) and
`sample_fractions(z)` (each sample's share of an event's weight) for models with a background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from pydantic import Field, model_validator

from sbi_core.config_base import ConfigSection, parse_section
from sbi_core.errors import ConfigError, InputError
from sbi_core.physics.base import EventBatch
from sbi_core.physics.basis import quadratic_morphing_issues
from sbi_core.physics.morphing import Morphing, monomials, monomials_gradient, quadratic_powers
from sbi_core.physics.registry import register_simulator

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig

__all__ = ["BenchmarkOptions", "BenchmarkSimulator"]

_LOG_2PI = math.log(2.0 * math.pi)
_CHUNK = 1 << 18  # events per rejection-sampling round trip: bounds memory for any n
_SUPPORTED_NUISANCE = ("normalization", "observable_scale")


class BackgroundOptions(ConfigSection):
    """`simulator.options.background`: a theta-independent background sample (Gaussian in the latent space)."""

    cross_section: float = Field(gt=0.0, le=1e6, description="sigma of the background in pb before cuts.")
    width: float = Field(
        default=1.3, gt=0.1, le=5.0, description="Its latent spread relative to the SM amplitude's peak (covariance x width^2)."
    )
    shift: float = Field(
        default=0.5, ge=0.0, le=5.0, description="Distance of its mean from the SM mean, in SM widths (direction from model_seed)."
    )


class BenchmarkOptions(ConfigSection):
    """`simulator.options` of the benchmark simulator (unknown keys are refused, scalars are not coerced)."""

    model_seed: int = Field(
        default=20240611, ge=0, lt=2**63, description="Seed of the fixed component geometry (not the generation seed)."
    )
    dimensions: int = Field(default=5, ge=5, le=32, description="D: latent and observable dimension (x0..x{D-1}).")
    detector_resolution: float | list[float] = Field(
        default=0.3, description="Gaussian smearing sigma in z units: one value for all, or one per coordinate."
    )
    detector_correlation: float = Field(
        default=0.0, gt=-1.0, lt=1.0, description="Correlation coefficient of the smearing between any two coordinates."
    )
    sm_cross_section: float = Field(default=5.0, gt=0.0, description="sigma(SM) in pb (arbitrary fixed units).")
    bsm_amplitude: float = Field(
        default=1.0, gt=0.0, le=10.0, description="Peak size of the coupling amplitudes relative to the SM peak."
    )
    background: BackgroundOptions | None = Field(
        default=None, description="An optional theta-independent background sample (omit: the signal alone)."
    )

    @model_validator(mode="after")
    def _detector(self) -> BenchmarkOptions:
        res = self.detector_resolution
        vals = [res] if isinstance(res, float | int) else list(res)
        if isinstance(res, list) and len(res) != self.dimensions:
            raise ValueError(f"detector_resolution: give 1 value or {self.dimensions} (dimensions), got {len(res)}")
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise ValueError(f"detector_resolution: every value must be finite and > 0, got {res}")
        if not self.detector_correlation > -1.0 / (self.dimensions - 1):
            raise ValueError(
                f"detector_correlation {self.detector_correlation} makes the smearing covariance singular: "
                f"it must be > -1/(dimensions-1) = {-1.0 / (self.dimensions - 1):.4g}"
            )
        return self

    def resolution_vector(self) -> np.ndarray:
        res = self.detector_resolution
        if isinstance(res, list):
            return np.asarray(res, dtype=np.float64)
        return np.full(self.dimensions, float(res))


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))  # unique (Haar-distributed) rotation


@dataclass(frozen=True)
class _Geometry:
    """Amplitude components k = 0..n (signs s, means mu, precisions P) and the normalisation A."""

    signs: np.ndarray  # (K,) signed peak values s_k
    means: np.ndarray  # (K, D)
    precisions: np.ndarray  # (K, D, D)
    norm: float  # A: dsigma = A |M|^2

    @staticmethod
    def build(opts: BenchmarkOptions, n_params: int) -> _Geometry:
        d = opts.dimensions
        # One independent stream per amplitude: adding a parameter leaves the others unchanged.
        rng0 = np.random.default_rng([opts.model_seed, d, 0])
        rot0 = _rotation(rng0, d)
        var0 = rng0.uniform(1.0, 2.0, d)  # SM: broad, correlated
        p0 = rot0 @ np.diag(1.0 / var0) @ rot0.T
        mu0 = rng0.uniform(0.5, 1.5, d)
        signs, means, precs = [1.0], [mu0], [p0]
        for k in range(1, n_params + 1):
            rng = np.random.default_rng([opts.model_seed, d, k])
            rot = _rotation(rng, d)
            extra = rng.uniform(0.4, 1.5, d)  # narrower than the SM in every direction
            direction = rng.standard_normal(d)
            direction /= np.linalg.norm(direction)
            means.append(mu0 + rng.uniform(0.7, 1.3) * direction)  # shifted by ~1 SM width: overlapping
            precs.append(p0 + rot @ np.diag(extra) @ rot.T)
            sign = 1.0 if k % 2 else -1.0  # alternate: constructive for theta>0 on odd k, destructive on even k
            signs.append(sign * opts.bsm_amplitude * rng.uniform(0.8, 1.2))
        precisions = np.stack([(p + p.T) / 2 for p in precs])
        integral_g0_sq = math.exp(0.5 * d * _LOG_2PI - 0.5 * np.linalg.slogdet(precisions[0])[1])
        return _Geometry(np.asarray(signs), np.stack(means), precisions, opts.sm_cross_section / integral_g0_sq)


def _validate_options(cfg: AnalysisConfig) -> tuple[BenchmarkOptions | None, list[tuple[str, str]]]:
    return parse_section(BenchmarkOptions, cfg.simulator.options, "simulator.options")


def _obs_names(d: int) -> tuple[str, ...]:
    return tuple(f"x{i}" for i in range(d))


@register_simulator
class BenchmarkSimulator:
    """EFT-like toy with exact p(x|theta, nu), p(x, z|theta) and joint score; see the module docstring."""

    name: ClassVar[str] = "benchmark"
    #: It draws events at any parameter point (generation.sampling_point).
    samples_anywhere: ClassVar[bool] = True
    #: For the default `dimensions` (5); an instance with other dimensions has its own tuple.
    provided_observables: ClassVar[tuple[str, ...]] = _obs_names(5)

    # ------------------------------------------------------------------ config
    @classmethod
    def check_config(cls, cfg: AnalysisConfig) -> list[tuple[str, str]]:
        """Options, observables, nuisance kinds and the morphing basis; (field path, message) per problem."""
        opts, issues = _validate_options(cfg)
        if opts is not None:
            provided = _obs_names(opts.dimensions)
            for i, o in enumerate(cfg.observables):
                if o.name not in provided:
                    issues.append(
                        (
                            f"observables[{i}].name",
                            f"{o.name!r} is not provided by the benchmark simulator "
                            f"(with dimensions={opts.dimensions} it provides {list(provided)})",
                        )
                    )
        for i, nu in enumerate(cfg.nuisance):
            kind = str(nu.kind)
            if kind not in _SUPPORTED_NUISANCE:
                issues.append(
                    (
                        f"nuisance[{i}].kind",
                        f"{kind!r} is not supported by the benchmark simulator "
                        f"(supported: {list(_SUPPORTED_NUISANCE)})",
                    )
                )
            elif kind == "observable_scale" and nu.size >= 1.0:
                issues.append(
                    (f"nuisance[{i}].size", "must be < 1 for observable_scale (the scale 1 - size must stay > 0)")
                )
            samples = cls.sample_names(cfg) if opts is not None else ("signal",)
            if kind == "observable_scale" and nu.samples is not None and set(nu.samples) != set(samples):
                issues.append((f"nuisance[{i}].samples", f"an observable_scale nuisance (the detector) acts on every "
                                                         f"sample {list(samples)}, got {nu.samples}"))
        n = len(cfg.parameters)
        issues.extend(quadratic_morphing_issues(cfg, cls.name))
        n_comp = (n + 1) * (n + 2) // 2
        matrix = np.asarray(cfg.benchmark_matrix(), dtype=np.float64)
        if not np.all(np.isfinite(matrix)):
            issues.append(("benchmarks", "benchmark values must be finite"))
        elif len(cfg.benchmarks) != n_comp:
            issues.append(
                (
                    "benchmarks",
                    f"the benchmark simulator needs exactly {n_comp} benchmarks (one per morphing component "
                    f"of a squared amplitude with {n} parameters), got {len(cfg.benchmarks)}",
                )
            )
        else:
            try:
                Morphing(quadratic_powers(n), matrix)
            except InputError as exc:
                issues.append(("benchmarks", str(exc)))
        return issues

    @classmethod
    def sample_names(cls, cfg: AnalysisConfig) -> tuple[str, ...]:
        """The model's samples: `signal` (morphed), and `background` (theta-independent) when configured."""
        opts, _ = _validate_options(cfg)
        return ("signal", "background") if opts is not None and opts.background is not None else ("signal",)

    @classmethod
    def fixed_samples(cls, cfg: AnalysisConfig) -> tuple[str, ...]:
        """The samples whose rate does not depend on theta."""
        return cls.sample_names(cfg)[1:]

    def __init__(self, cfg: AnalysisConfig) -> None:
        issues = self.check_config(cfg)
        if issues:
            raise ConfigError(f"simulator {self.name!r}", issues)
        opts = BenchmarkOptions.model_validate(cfg.simulator.options)
        self.options = opts
        self.cfg = cfg
        d = opts.dimensions
        self.dimensions = d
        self.provided_observables = _obs_names(d)  # type: ignore[misc]  # instance value for non-default D
        self._n_params = len(cfg.parameters)
        self._powers = quadratic_powers(self._n_params)
        self._morphing = Morphing(self._powers, np.asarray(cfg.benchmark_matrix(), dtype=np.float64))
        self._keep = np.array([self.provided_observables.index(o) for o in cfg.observable_names], dtype=np.int64)
        self._theta_s = np.asarray(cfg.sampling_theta())  # generation.sampling_point, or the sampling benchmark
        geo = _Geometry.build(opts, self._n_params)
        self._geo = geo
        self._n_amp = geo.signs.shape[0]
        self._chol_p = np.linalg.cholesky(geo.precisions)  # P_k = U U^T: quadratic form = |(z-mu) U|^2

        # Detector smearing covariance (full D), its kept block and Cholesky factors.
        res = opts.resolution_vector()
        corr = np.full((d, d), opts.detector_correlation)
        np.fill_diagonal(corr, 1.0)
        self._sigma_det = res[:, None] * corr * res[None, :]
        self._chol_det = np.linalg.cholesky(self._sigma_det)
        kk = np.ix_(self._keep, self._keep)
        self._chol_det_kept = np.linalg.cholesky(self._sigma_det[kk])

        # Morphing components h_c = (2 - delta_kl) A g_k g_l, in `quadratic_powers` order.
        pairs = [(k, l) for k in range(self._n_amp) for l in range(k, self._n_amp)]  # noqa: E741
        rows = {tuple(r): c for c, r in enumerate(self._powers.tolist())}
        order = np.empty(len(pairs), dtype=np.int64)
        for idx, (k, l) in enumerate(pairs):  # noqa: E741
            pw = np.zeros(self._n_params, dtype=np.int64)
            for a in (k, l):
                if a > 0:
                    pw[a - 1] += 1
            order[rows[tuple(pw.tolist())]] = idx
        n_comp = len(pairs)
        self._comp_mean = np.empty((n_comp, d))
        self._comp_cov = np.empty((n_comp, d, d))
        self._comp_xs = np.empty(n_comp)
        for c in range(n_comp):
            k, l = pairs[order[c]]  # noqa: E741
            pk, pl, mk, ml = geo.precisions[k], geo.precisions[l], geo.means[k], geo.means[l]
            prec = (pk + pl) / 2
            cov = np.linalg.inv(prec)
            cov = (cov + cov.T) / 2
            mean = cov @ (pk @ mk + pl @ ml) / 2
            log_const = -0.25 * (mk @ pk @ mk + ml @ pl @ ml) + 0.5 * mean @ prec @ mean
            log_int = log_const + 0.5 * d * _LOG_2PI + 0.5 * np.linalg.slogdet(cov)[1]
            self._comp_mean[c] = mean
            self._comp_cov[c] = cov
            self._comp_xs[c] = (1.0 if k == l else 2.0) * geo.signs[k] * geo.signs[l] * geo.norm * math.exp(log_int)
        # Kept-observable blocks of the smeared components: p(x|theta) = sum_c a_c N(x; m_c, C_c + Sigma_det).
        self._obs_mean = self._comp_mean[:, self._keep]
        self._obs_chol = np.linalg.cholesky((self._comp_cov + self._sigma_det)[:, self._keep][:, :, self._keep])
        self._obs_logdet = 2.0 * np.log(np.diagonal(self._obs_chol, axis1=1, axis2=2)).sum(axis=1)

        self._background(opts)

        # Nuisance bookkeeping (config order).
        self.samples = self.sample_names(cfg)
        self._nuis_samples = np.array([[nu.samples is None or name in nu.samples for name in self.samples]
                                       for nu in cfg.nuisance], dtype=bool).reshape(len(cfg.nuisance), len(self.samples))
        self._nuis_kind = [str(nu.kind) for nu in cfg.nuisance]
        self._nuis_size = np.array([nu.size for nu in cfg.nuisance], dtype=np.float64)
        self._nuis_mask = np.zeros((len(cfg.nuisance), len(self._keep)), dtype=bool)  # kept columns scaled
        for i, nu in enumerate(cfg.nuisance):
            if self._nuis_kind[i] == "observable_scale":
                names = nu.observables if nu.observables is not None else cfg.observable_names
                self._nuis_mask[i] = [o in names for o in cfg.observable_names]
        for arr in (self._comp_mean, self._comp_cov, self._comp_xs, self._theta_s):
            arr.setflags(write=False)

    def _background(self, opts: BenchmarkOptions) -> None:
        """The background's latent Gaussian (sigma_b, mean, covariance) and its kept-observable block; the mixture
        of every component with the sample it belongs to (0: signal, 1: background)."""
        bkg = opts.background
        self._bkg_xs = 0.0 if bkg is None else float(bkg.cross_section)
        n_comp = self._comp_xs.size
        self._mix_sample = np.zeros(n_comp + (bkg is not None), dtype=np.int64)
        self._mix_mean, self._mix_chol, self._mix_logdet = self._obs_mean, self._obs_chol, self._obs_logdet
        if bkg is None:
            return
        d = self.dimensions
        cov0 = np.linalg.inv(self._geo.precisions[0])
        rng = np.random.default_rng([opts.model_seed, d, 1000])
        u = rng.standard_normal(d)
        mean = self._geo.means[0] + bkg.shift * np.linalg.cholesky(cov0) @ (u / np.linalg.norm(u))
        cov = bkg.width**2 * cov0
        self._bkg_mean, self._bkg_cov = mean, (cov + cov.T) / 2
        self._bkg_chol = np.linalg.cholesky(self._bkg_cov)
        self._bkg_logdet = 2.0 * np.log(np.diag(self._bkg_chol)).sum()
        kk = np.ix_(self._keep, self._keep)
        chol = np.linalg.cholesky((self._bkg_cov + self._sigma_det)[kk])
        self._mix_sample[-1] = 1
        self._mix_mean = np.vstack([self._obs_mean, mean[self._keep][None]])
        self._mix_chol = np.concatenate([self._obs_chol, chol[None]])
        self._mix_logdet = np.concatenate([self._obs_logdet, [2.0 * np.log(np.diag(chol)).sum()]])

    # ------------------------------------------------------------------ contract properties
    @property
    def latent_names(self) -> list[str]:
        return [f"z{i}" for i in range(self.dimensions)]

    @property
    def morphing_powers(self) -> np.ndarray:
        return self._powers.copy()

    @property
    def morphing(self) -> Morphing:
        """Morphing on the config's benchmarks (config order)."""
        return self._morphing

    @property
    def sampling_theta(self) -> np.ndarray:
        """(n_parameters,) theta where events are drawn (the sampling benchmark, or generation.sampling_point)."""
        return self._theta_s.copy()

    @property
    def component_cross_sections(self) -> np.ndarray:
        """(n_components,) sigma_c (signed): sigma(theta) = sum_c theta^powers[c] sigma_c."""
        return self._comp_xs.copy()

    @property
    def detector_covariance(self) -> np.ndarray:
        """(D, D) covariance of the smearing eps (all provided coordinates)."""
        return self._sigma_det.copy()

    # ------------------------------------------------------------------ input checks
    def _theta(self, theta: np.ndarray) -> np.ndarray:
        t = np.asarray(theta, dtype=np.float64)
        if t.shape != (self._n_params,):
            raise ValueError(f"theta: expected shape ({self._n_params},), got {t.shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError("theta: values must be finite")
        return t

    def _rows(self, name: str, arr: np.ndarray, cols: int, n: int | None = None) -> np.ndarray:
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != cols or (n is not None and a.shape[0] != n):
            rows = "n" if n is None else str(n)
            raise ValueError(f"{name}: expected shape ({rows}, {cols}), got {a.shape}")
        return a

    def _xz(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xa = self._rows("x", x, len(self._keep))
        za = self._rows("z", z, self.dimensions, xa.shape[0])
        return xa, za

    def _scale(self, nu: np.ndarray | None) -> np.ndarray:
        """Diagonal of S on the kept observables for nuisance values nu."""
        s = np.ones(len(self._keep))
        if nu is None:
            return s
        v = np.asarray(nu, dtype=np.float64)
        if v.shape != (len(self._nuis_kind),):
            raise ValueError(f"nu: expected shape ({len(self._nuis_kind)},), got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("nu: values must be finite")
        for i, kind in enumerate(self._nuis_kind):
            if kind == "observable_scale":
                s = np.where(self._nuis_mask[i], s * (1.0 + self._nuis_size[i] * v[i]), s)
        if np.any(s <= 0):
            raise ValueError(f"nu: observable scale factors must stay > 0, got {s.tolist()}")
        return s

    # ------------------------------------------------------------------ amplitude helpers
    def _log_amp(self, z: np.ndarray) -> np.ndarray:
        """(n, K) exponents e_k(z) = -1/4 (z - mu_k)^T P_k (z - mu_k)."""
        out = np.empty((z.shape[0], self._n_amp))
        for k in range(self._n_amp):
            y = (z - self._geo.means[k]) @ self._chol_p[k]
            out[:, k] = -0.25 * np.einsum("ij,ij->i", y, y)
        return out

    def _scaled_amp(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """g_k(z) / exp(emax) (n, K) and emax (n,): ratios and logs stay finite far in the tails."""
        e = self._log_amp(z)
        emax = e.max(axis=1)
        return self._geo.signs * np.exp(e - emax[:, None]), emax

    @staticmethod
    def _coeffs(theta: np.ndarray) -> np.ndarray:
        return np.concatenate([[1.0], theta])

    def _log_dsigma(self, z: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """log dsigma(z|theta) of every sample (the signal's A |M|^2, plus the background's Gaussian)."""
        g, emax = self._scaled_amp(z)
        amp = g @ self._coeffs(theta)
        with np.errstate(divide="ignore"):
            signal = math.log(self._geo.norm) + 2.0 * (emax + np.log(np.abs(amp)))
        return signal if self._bkg_xs == 0.0 else np.logaddexp(signal, self._log_bkg(z))

    def _log_bkg(self, z: np.ndarray) -> np.ndarray:
        """log dsigma_bkg(z) = log sigma_bkg N(z; mean, cov) (only with a background)."""
        y = _solve_lower(self._bkg_chol, z - self._bkg_mean)
        return math.log(self._bkg_xs) - 0.5 * (np.einsum("ij,ij->i", y, y) + self._bkg_logdet
                                               + self.dimensions * _LOG_2PI)

    def sample_fractions(self, z: np.ndarray) -> np.ndarray:
        """(n, S) each sample's share of dsigma(z | sampling benchmark): the split of an event's weight at the
        sampling benchmark (columns in `samples` order; the background's share is the same at every theta'
        weight, since its rate does not depend on theta)."""
        za = self._rows("z", z, self.dimensions)
        if self._bkg_xs == 0.0:
            return np.ones((za.shape[0], 1))
        frac = np.exp(self._log_bkg(za) - self._log_dsigma(za, self._theta_s))
        return np.stack([1.0 - frac, frac], axis=1)

    def _log_detector(self, x: np.ndarray, z: np.ndarray, s: np.ndarray) -> np.ndarray:
        """log p(x|z, nu) on the kept observables: N(x/S; z, Sigma_det)/|det S|."""
        r = x / s - z[:, self._keep]
        y = _solve_lower(self._chol_det_kept, r)
        logdet = 2.0 * np.log(np.diag(self._chol_det_kept)).sum()
        return -0.5 * (np.einsum("ij,ij->i", y, y) + logdet + len(self._keep) * _LOG_2PI) - np.log(s).sum()

    # ------------------------------------------------------------------ the contract
    def cross_section(self, theta: np.ndarray) -> float:
        """sigma(theta) in pb before cuts (nominal nuisance values), every sample."""
        return float(monomials(self._theta(theta), self._powers) @ self._comp_xs) + self._bkg_xs

    def cross_section_gradient(self, theta: np.ndarray) -> np.ndarray:
        """(n_parameters,) d sigma / d theta."""
        return monomials_gradient(self._theta(theta), self._powers).T @ self._comp_xs

    def latent_log_likelihood(self, z: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """log p(z|theta) per event, (n,)."""
        t = self._theta(theta)
        za = self._rows("z", z, self.dimensions)
        return self._log_dsigma(za, t) - math.log(self.cross_section(t))

    def joint_log_likelihood(
        self, x: np.ndarray, z: np.ndarray, theta: np.ndarray, nu: np.ndarray | None = None
    ) -> np.ndarray:
        """log p(x, z|theta, nu) = log p(z|theta) + log p(x|z, nu) per event, (n,); nu=None is nominal."""
        xa, za = self._xz(x, z)
        return self.latent_log_likelihood(za, theta) + self._log_detector(xa, za, self._scale(nu))

    def joint_score(self, x: np.ndarray, z: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """grad_theta log p(x, z|theta) = 2 A M g_k / (A M^2 + b) - grad sigma/sigma, (n, n_parameters) (b = 0
        without a background: 2 g_k / M)."""
        _, za = self._xz(x, z)
        t = self._theta(theta)
        g, emax = self._scaled_amp(za)
        amp = g @ self._coeffs(t)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self._bkg_xs == 0.0:
                score = 2.0 * g[:, 1:] / amp[:, None]
            else:  # b / (A exp(2 emax)) in the amplitudes' scale
                rho = np.exp(self._log_bkg(za) - math.log(self._geo.norm) - 2.0 * emax)
                score = 2.0 * g[:, 1:] * (amp / (amp**2 + rho))[:, None]
        return score - self.cross_section_gradient(t) / self.cross_section(t)

    def _sample_factors(self, nu: np.ndarray | None) -> np.ndarray:
        """(S,) each sample's rate factor prod_k (1 + size_k)^nu_k over the normalization nuisances acting on it."""
        out = np.ones(len(self.samples))
        if nu is None:
            return out
        v = np.asarray(nu, dtype=np.float64)
        for k, kind in enumerate(self._nuis_kind):
            if kind == "normalization" and v[k] != 0.0:
                out = np.where(self._nuis_samples[k], out * (1.0 + self._nuis_size[k]) ** v[k], out)
        return out

    def _mix_coef(self, theta: np.ndarray, nu: np.ndarray | None, sample: str | None,
                  relative: bool = False) -> np.ndarray:
        """Signed coefficients (pb) of the observation-level mixture components of `sample` (None: every sample);
        relative: the samples' factors over their largest (a factor common to all is then exactly 1)."""
        if sample is not None and sample not in self.samples:
            raise ValueError(f"sample: expected one of {list(self.samples)}, got {sample!r}")
        coef = monomials(theta, self._powers) * self._comp_xs
        if self._bkg_xs:
            coef = np.append(coef, self._bkg_xs)
        factors = self._sample_factors(nu)
        coef = coef * (factors / factors.max() if relative else factors)[self._mix_sample]
        if sample is not None:
            coef = np.where(self._mix_sample == self.samples.index(sample), coef, 0.0)
        return coef

    def log_dsigma(self, x: np.ndarray, theta: np.ndarray, nu: np.ndarray | None = None,
                   sample: str | None = None) -> np.ndarray:
        """Exact log dsigma(x | theta, nu)/dx of one sample (None: all) before cuts, in pb, (n,): the rate the
        likelihood arrays are ratios of. normalization nuisances scale the rate of the samples they act on;
        observable_scale ones act through p(x|nu) = p_nominal(x/S)/|det S|."""
        return self._log_mixture(x, theta, nu, sample, False)

    def _log_mixture(self, x: np.ndarray, theta: np.ndarray, nu: np.ndarray | None, sample: str | None,
                     relative: bool) -> np.ndarray:
        t = self._theta(theta)
        xa = self._rows("x", x, len(self._keep))
        s = self._scale(nu)
        coef = self._mix_coef(t, nu, sample, relative)
        active = np.flatnonzero(coef != 0.0)
        u = xa / s
        logn = np.empty((xa.shape[0], active.size))
        for j, c in enumerate(active):
            y = _solve_lower(self._mix_chol[c], u - self._mix_mean[c])
            logn[:, j] = -0.5 * (np.einsum("ij,ij->i", y, y) + self._mix_logdet[c] + len(self._keep) * _LOG_2PI)
        return _signed_logsumexp(logn, coef[active]) - np.log(s).sum()

    def log_likelihood(self, x: np.ndarray, theta: np.ndarray, nu: np.ndarray | None = None) -> np.ndarray:
        """Exact log p(x|theta, nu) before cuts, (n,): log_dsigma of every sample over the total rate. A
        normalization nuisance on every sample changes the rate only and cancels; one on some samples changes
        their mixture."""
        t = self._theta(theta)
        return self._log_mixture(x, t, nu, None, True) - math.log(self._mix_coef(t, nu, None, True).sum())

    def observation_mixture(
        self, theta: np.ndarray, nu: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """p(x|theta, nu) = sum_c a_c N(x; mean_c, cov_c) on the kept observables: a (C,) signed, summing to 1;
        means (C, n_obs); covs (C, n_obs, n_obs)."""
        t = self._theta(theta)
        s = self._scale(nu)
        a = self._mix_coef(t, nu, None)
        covs = np.einsum("cij,ckj->cik", self._mix_chol, self._mix_chol)  # (C_c + Sigma_det) on the kept block
        return a / a.sum(), self._mix_mean * s, covs * s[:, None] * s[None, :]

    def observation_moments(self, theta: np.ndarray, nu: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact mean (n_obs,) and covariance (n_obs, n_obs) of x under p(x|theta, nu), kept observables."""
        a, means, covs = self.observation_mixture(theta, nu)
        mean = a @ means
        second = np.einsum("c,cij->ij", a, covs + means[:, :, None] * means[:, None, :])
        return mean, second - np.outer(mean, mean)

    def nuisance_weights(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(n, n_nuisance, 2): p(x, z|theta, nu=+-1)/p(x, z|theta, 0) per nuisance at the sampling benchmark
        (independent of theta, except for a normalization nuisance acting on some samples only)."""
        xa, za = self._xz(x, z)
        out = np.ones((xa.shape[0], len(self._nuis_kind), 2))
        base = None
        frac = self.sample_fractions(za)  # shares of the weight at the sampling benchmark, where these are given
        for i, kind in enumerate(self._nuis_kind):
            size = self._nuis_size[i]
            if kind == "normalization":  # the acted-on samples' share of the weight scales by (1 + size)^+-1
                if self._nuis_samples[i].all():
                    out[:, i, 0] = 1.0 + size
                    out[:, i, 1] = 1.0 / (1.0 + size)
                else:
                    share = frac[:, self._nuis_samples[i]].sum(axis=1)
                    out[:, i, 0] = 1.0 + share * size
                    out[:, i, 1] = 1.0 + share * (1.0 / (1.0 + size) - 1.0)
            elif kind == "observable_scale":
                if base is None:
                    base = self._log_detector(xa, za, np.ones(len(self._keep)))
                for j, sign in enumerate((1.0, -1.0)):
                    s = np.where(self._nuis_mask[i], 1.0 + sign * size, 1.0)
                    out[:, i, j] = np.exp(self._log_detector(xa, za, s) - base)
        return out

    def observations_at(self, observations: np.ndarray, latent: np.ndarray, nu: np.ndarray) -> np.ndarray:
        """x at nu for the same events: x = S(nu) (z + eps) and S(0) = 1, so x(nu) = S(nu) x (exact)."""
        xa, _ = self._xz(observations, latent)
        return xa * self._scale(np.asarray(nu, dtype=np.float64))

    def simulate(self, n: int, rng: np.random.Generator) -> EventBatch:
        """n events at the sampling point (`sampling_theta`: the sampling benchmark unless the config gives
        generation.sampling_point), nominal nuisances, before cuts; deterministic given rng."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n: expected an int >= 0, got {n!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected numpy.random.Generator, got {type(rng).__name__}")
        n = int(n)
        if self._bkg_xs:
            return self._simulate_with_background(n, rng)
        zs, gs = [], []
        done = 0
        while done < n:
            z, g = self._sample_latent(min(_CHUNK, n - done), rng)
            zs.append(z)
            gs.append(g)
            done += z.shape[0]
        d = self.dimensions
        z = np.concatenate(zs) if zs else np.empty((0, d))
        g = np.concatenate(gs) if gs else np.empty((0, self._n_amp))
        eps = rng.standard_normal((n, d)) @ self._chol_det.T
        x = np.ascontiguousarray((z + eps)[:, self._keep])
        # weights_b = dsigma(z|theta_b)/p(z|theta_s) = sigma(theta_s) (M_b/M_s)^2: common factors cancel.
        amp_s = g @ self._coeffs(self._theta_s)
        thetas = self._morphing.basis
        amp_b = g @ np.concatenate([np.ones((thetas.shape[0], 1)), thetas], axis=1).T
        weights = self.cross_section(self._theta_s) * (amp_b / amp_s[:, None]) ** 2
        return EventBatch(x, z, weights, self.nuisance_weights(x, z))

    def _simulate_with_background(self, n: int, rng: np.random.Generator) -> EventBatch:
        """n events of signal (at the sampling benchmark) + background: each from the background with probability
        sigma_bkg / sigma_total, in random order; weight_b = sigma_total(theta_s) dsigma(z|theta_b) / dsigma(z|theta_s)
        (both samples: the background's share is the same in every column)."""
        d = self.dimensions
        n_bkg = int(rng.binomial(n, self._bkg_xs / self.cross_section(self._theta_s)))
        parts = []
        done = 0
        while done < n - n_bkg:
            z_sig, _ = self._sample_latent(min(_CHUNK, n - n_bkg - done), rng)
            parts.append(z_sig)
            done += z_sig.shape[0]
        parts.append(self._bkg_mean + rng.standard_normal((n_bkg, d)) @ self._bkg_chol.T)
        z = np.concatenate(parts)[rng.permutation(n)]
        eps = rng.standard_normal((n, d)) @ self._chol_det.T
        x = np.ascontiguousarray((z + eps)[:, self._keep])
        ref = self._log_dsigma(z, self._theta_s)
        weights = np.stack([np.exp(self._log_dsigma(z, t) - ref) for t in self._morphing.basis], axis=1)
        weights *= self.cross_section(self._theta_s)
        return EventBatch(x, np.ascontiguousarray(z), weights, self.nuisance_weights(x, z))

    def _sample_latent(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Rejection sampling of exactly n latent points from |M(z; theta_s)|^2, with their scaled amplitudes.

        Envelope (Cauchy-Schwarz): (sum_k c_k g_k)^2 <= K sum_k c_k^2 g_k^2, K = number of nonzero c_k; the
        right side is a positive Gaussian mixture. Accept with probability M^2 / (K sum c_k^2 g_k^2)."""
        geo = self._geo
        c = self._coeffs(self._theta_s)
        active = np.flatnonzero(c != 0.0)
        kk = active.size
        # Mixture weights of the envelope: c_k^2 s_k^2 * integral exp(-1/2 (z-mu)^T P (z-mu)).
        logdet_p = np.linalg.slogdet(geo.precisions[active])[1]
        mix = c[active] ** 2 * geo.signs[active] ** 2 * np.exp(-0.5 * logdet_p)
        cdf = np.cumsum(mix / mix.sum())
        cdf[-1] = 1.0
        # Exact acceptance rate: sigma(theta_s) / (A K sum mix (2 pi)^(D/2)).
        rate = self.cross_section(self._theta_s) / (
            geo.norm * kk * mix.sum() * math.exp(0.5 * self.dimensions * _LOG_2PI)
        )
        zs, gs = [], []
        have = 0
        while have < n:
            m = math.ceil((n - have) / rate * 1.03) + 64
            comp = np.searchsorted(cdf, rng.random(m), side="right")
            z = rng.standard_normal((m, self.dimensions))
            for j, k in enumerate(active):  # z ~ N(mu_k, P_k^-1): solve U^T y = eps with P_k = U U^T
                sel = comp == j
                z[sel] = geo.means[k] + _solve_upper_t(self._chol_p[k], z[sel])
            g, _ = self._scaled_amp(z)
            if kk > 1:
                amp = g @ c
                env = kk * (g[:, active] ** 2 * c[active] ** 2).sum(axis=1)
                keep = rng.random(m) * env < amp**2
                z, g = z[keep], g[keep]
            take = min(n - have, z.shape[0])
            zs.append(z[:take])
            gs.append(g[:take])
            have += take
        return np.concatenate(zs), np.concatenate(gs)


def _solve_lower(chol: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Rows y with L y = r (L lower triangular), for r of shape (n, d): y = r L^-T."""
    return np.linalg.solve(chol, r.T).T if r.shape[0] < 8 else r @ np.linalg.inv(chol).T


def _solve_upper_t(chol: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Rows y with U^T y = eps where P = U U^T (U = chol lower): y ~ N(0, P^-1) for eps ~ N(0, 1)."""
    return eps @ np.linalg.inv(chol)


def _signed_logsumexp(logs: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """log sum_c coef_c exp(logs[:, c]) for a sum known to be >= 0 although some coef_c < 0.

    Shifts by the row maximum; where rounding makes the sum non-positive it is floored at its own
    rounding-error bound (C * eps * sum |terms|), the closest value consistent with the arithmetic."""
    lmax = logs.max(axis=1)
    terms = coef * np.exp(logs - lmax[:, None])
    total = terms.sum(axis=1)
    bound = logs.shape[1] * np.finfo(np.float64).eps * np.abs(terms).sum(axis=1)
    return lmax + np.log(np.maximum(total, bound))
