"""A configurable parametrised detector response on final-state particles (Delphes-like, in a page).

Per object type (electron, muon, tau, photon, jet; `particles.VISIBLE_TYPES`), a reconstructed object is the
true one with its four-momentum scaled by a Gaussian factor (direction kept):

    p4_reco = s * (1 + r * sigma_rel(E, pT) * z) * p4_true,      z ~ N(0, 1)
    sigma_rel = sqrt( (a / sqrt(E))^2 + (n / E)^2 + c^2 + (k * pT)^2 )       (true E, pT in GeV)

(a: stochastic term, n: noise, c: constant, k: a tracker-like term growing with pT), s an energy-scale factor
and r a resolution factor (both 1 at nominal). It is then kept if u < efficiency (u ~ U(0, 1), flat in
pT and eta), pT_reco >= pt_min and |eta| < eta_max; an object whose factor is <= 0 is lost. Neutrinos and
particles of no visible type are never reconstructed (they are the missing transverse momentum).

What to use when:
- `Detector(options).apply(particles, rng)`: reconstructed particles, deterministic given rng.
- `Detector.draw_noise(particles, rng)` then `Detector.respond(particles, noise, scale=..., resolution=...)`:
  the SAME events at another energy scale or resolution. The noise (z-scores and efficiency uniforms) is
  the event's detector randomness; keeping it makes x(nu) a deterministic function of the event, which is
  what `Simulator.observations_at` needs for nuisances that move observables. `DetectorNoise.flat()` stores
  it as columns (e.g. in `samples/latent`).
Reconstructed particles keep the slots of the true ones (a lost object leaves an empty slot), so truth and
reconstruction stay aligned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from sbi_core.config_base import ConfigSection
from sbi_core.physics.particles import VISIBLE_TYPES, Particles, eta, object_type_index, pt

__all__ = ["Detector", "DetectorNoise", "DetectorOptions", "ObjectResponse"]


class _Options(ConfigSection):
    """Options of this module: the rules of every config section (`sbi_core.config_base`)."""


class ObjectResponse(_Options):
    """Resolution, acceptance and efficiency of one object type."""

    stochastic: float = Field(
        default=0.0, ge=0.0, le=5.0, title="Stochastic term",
        description="a in sigma_E/E = a/sqrt(E) (+) n/E (+) c (+) k pT, in GeV^(1/2) (0.1 = 10%/sqrt(E)).")
    noise: float = Field(default=0.0, ge=0.0, le=100.0, title="Noise term",
                         description="n in sigma_E/E, in GeV (electronic and pile-up noise).")
    constant: float = Field(default=0.0, ge=0.0, le=1.0, title="Constant term",
                            description="c in sigma_E/E (calibration non-uniformity; 0.01 = 1%).")
    pt_term: float = Field(
        default=0.0, ge=0.0, le=0.1, title="pT term",
        description="k in sigma/E, in 1/GeV: a tracker's relative resolution growing with pT (muons).")
    eta_max: float = Field(default=2.5, gt=0.0, le=10.0, title="|eta| max",
                           description="Acceptance: objects need |eta| < eta_max.")
    pt_min: float = Field(default=0.0, ge=0.0, title="pT min",
                          description="Acceptance: objects need reconstructed pT >= pt_min, in GeV.")
    efficiency: float = Field(default=1.0, gt=0.0, le=1.0, title="Efficiency",
                              description="Probability that an object inside the acceptance is reconstructed (flat).")

    def relative_resolution(self, energy: np.ndarray, pt_: np.ndarray) -> np.ndarray:
        """sigma/E at true energy and pT (GeV), same shape as its inputs."""
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.maximum(np.asarray(energy, dtype=np.float64), 1e-12)
            terms = (self.stochastic**2 / e + (self.noise / e) ** 2 + self.constant**2
                     + (self.pt_term * np.asarray(pt_, dtype=np.float64)) ** 2)
        return np.sqrt(terms)


class DetectorOptions(_Options):
    """The detector response per object type; defaults are ATLAS-like (Run 2 performance, rounded)."""

    electron: ObjectResponse = Field(
        default=ObjectResponse(stochastic=0.10, noise=0.25, constant=0.007, eta_max=2.47, pt_min=10.0,
                               efficiency=0.90),
        title="Electrons", description="Calorimeter energy resolution 10%/sqrt(E) (+) 0.7%; |eta| < 2.47.")
    muon: ObjectResponse = Field(
        default=ObjectResponse(constant=0.02, pt_term=1e-4, eta_max=2.5, pt_min=10.0, efficiency=0.95),
        title="Muons", description="Tracker pT resolution 2% (+) 0.01% x pT/GeV (10% at 1 TeV); |eta| < 2.5.")
    tau: ObjectResponse = Field(
        default=ObjectResponse(stochastic=0.50, constant=0.05, eta_max=2.5, pt_min=20.0, efficiency=0.60),
        title="Taus", description="Hadronic taus, treated as jets with a 60% identification efficiency.")
    photon: ObjectResponse = Field(
        default=ObjectResponse(stochastic=0.10, noise=0.25, constant=0.007, eta_max=2.37, pt_min=10.0,
                               efficiency=0.85),
        title="Photons", description="As electrons; |eta| < 2.37.")
    jet: ObjectResponse = Field(
        default=ObjectResponse(stochastic=0.50, noise=3.0, constant=0.03, eta_max=4.5, pt_min=25.0),
        title="Jets", description="Hadronic calorimeter 50%/sqrt(E) (+) 3 GeV/E (+) 3%; partons are jets.")

    @model_validator(mode="after")
    def _types(self) -> DetectorOptions:
        missing = [t for t in VISIBLE_TYPES if t not in type(self).model_fields]
        if missing:  # guards the link between particles.VISIBLE_TYPES and this model
            raise ValueError(f"no response for object types {missing}")
        return self

    def response(self, object_type: str) -> ObjectResponse:
        return getattr(self, object_type)


@dataclass(frozen=True)
class DetectorNoise:
    """The detector randomness of n events with m slots: z (n, m) standard normals (energy smearing) and
    u (n, m) uniforms in [0, 1) (efficiency). Drawn for every slot, used for the slots that hold objects."""

    z: np.ndarray
    u: np.ndarray

    def __post_init__(self) -> None:
        for name in ("z", "u"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.dtype != np.float64:
                raise ValueError(f"DetectorNoise.{name}: expected float64 (n, m), got "
                                 f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
        if self.z.shape != self.u.shape:
            raise ValueError(f"DetectorNoise: z {self.z.shape} and u {self.u.shape} differ")

    @classmethod
    def draw(cls, n: int, m: int, rng: np.random.Generator) -> DetectorNoise:
        """Fresh noise; z is drawn before u, so the stream is fixed by (n, m) and the rng state."""
        return cls(rng.standard_normal((n, m)), rng.random((n, m)))

    def flat(self) -> np.ndarray:
        """(n, 2 m) float64 columns: per slot (z, u) (names: `flat_names`)."""
        return np.stack([self.z, self.u], axis=2).reshape(self.z.shape[0], 2 * self.z.shape[1])

    @staticmethod
    def flat_names(m: int, prefix: str = "p") -> list[str]:
        return [f"{prefix}{j}_{f}" for j in range(m) for f in ("z", "u")]

    @classmethod
    def from_flat(cls, columns: np.ndarray) -> DetectorNoise:
        c = np.asarray(columns, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] % 2:
            raise ValueError(f"DetectorNoise.from_flat: expected (n, 2 m) columns, got shape {c.shape}")
        r = c.reshape(c.shape[0], c.shape[1] // 2, 2)
        return cls(np.ascontiguousarray(r[..., 0]), np.ascontiguousarray(r[..., 1]))


Factors = float | Mapping[str, float] | None


def _per_type(name: str, value: Factors) -> np.ndarray:
    """A factor per visible type (VISIBLE_TYPES order) from one number, a {type: factor} map or None (1)."""
    out = np.ones(len(VISIBLE_TYPES))
    if value is None:
        return out
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(VISIBLE_TYPES))
        if unknown:
            raise ValueError(f"{name}: unknown object types {unknown}; known: {list(VISIBLE_TYPES)}")
        for t, v in value.items():
            out[VISIBLE_TYPES.index(t)] = float(v)
    else:
        out[:] = float(value)
    if not np.all(np.isfinite(out)) or np.any(out < 0):
        raise ValueError(f"{name}: factors must be finite and >= 0, got {value!r}")
    return out


class Detector:
    """The response of `DetectorOptions` on `Particles`; see the module docstring for the model."""

    def __init__(self, options: DetectorOptions | None = None) -> None:
        self.options = options or DetectorOptions()
        responses = [self.options.response(t) for t in VISIBLE_TYPES]
        self._eta_max = np.array([r.eta_max for r in responses])
        self._pt_min = np.array([r.pt_min for r in responses])
        self._eff = np.array([r.efficiency for r in responses])

    def draw_noise(self, particles: Particles, rng: np.random.Generator) -> DetectorNoise:
        """The detector randomness for these events (one z and one u per slot)."""
        return DetectorNoise.draw(particles.n_events, particles.n_slots, rng)

    def apply(self, particles: Particles, rng: np.random.Generator) -> Particles:
        """Reconstructed particles at nominal scale and resolution; deterministic given rng."""
        return self.respond(particles, self.draw_noise(particles, rng))

    def relative_resolution(self, particles: Particles) -> np.ndarray:
        """(n, m) sigma/E of each slot's object at its true energy and pT (NaN for slots no type reconstructs)."""
        kind = object_type_index(particles.pid, VISIBLE_TYPES)
        out = np.full(particles.pid.shape, np.nan)
        e, pt_ = particles.p4[..., 0], pt(particles.p4)
        for i, t in enumerate(VISIBLE_TYPES):
            sel = kind == i
            if sel.any():
                out[sel] = self.options.response(t).relative_resolution(e[sel], pt_[sel])
        return out

    def respond(self, particles: Particles, noise: DetectorNoise, *, scale: Factors = None,
                resolution: Factors = None) -> Particles:
        """Reconstructed particles for given noise, at energy scale s and resolution factor r.

        scale / resolution: one number for every type, a {type: factor} map (others 1), or None (1).
        A deterministic function of (particles, noise, scale, resolution)."""
        if noise.z.shape != particles.pid.shape:
            raise ValueError(f"respond: noise is {noise.z.shape}, particles are {particles.pid.shape}")
        s = _per_type("scale", scale)
        r = _per_type("resolution", resolution)
        kind = object_type_index(particles.pid, VISIBLE_TYPES)
        visible = kind >= 0
        k = np.where(visible, kind, 0)
        sigma = np.where(visible, self.relative_resolution(particles), 0.0)
        factor = s[k] * (1.0 + r[k] * sigma * noise.z)
        p4 = particles.p4 * np.where(visible & (factor > 0), factor, 0.0)[..., None]
        keep = visible & (factor > 0) & (noise.u < self._eff[k])
        keep &= pt(p4) >= self._pt_min[k]
        with np.errstate(invalid="ignore"):
            keep &= np.abs(eta(particles.p4)) < self._eta_max[k]
        return Particles(np.where(keep, particles.pid, 0), np.where(keep[..., None], p4, 0.0))

