"""The simulator contract: what generate needs from a simulator, and what closure tests use.

Shapes are a contract, not a suggestion: every array is float64 and every method checks its
inputs; nothing is broadcast for you.

A simulator whose events come from input files instead of `simulate` (the `lhe` simulator) also defines
the classmethod `resolve_inputs(cfg, config_uri) -> (cfg, input URIs)`: configure then plans one shard per
input with sizes unknown in advance (`data.plan.make_file_plan`).

A simulator that draws from a proposal trained once per run (drell_yan_eft with `sampler: flow`) also
defines `sampler_kind() -> str | None` (None: nothing to train for this config), `train_sampler() ->
SamplerArtifact` (what `sbi-core train-sampler` writes, `physics/sampler_file.py`) and
`load_sampler(artifact, uri)` (generate calls it before `simulate`); `provenance() -> dict` adds what the
events rest on (the parton densities, the sampler) to generate's summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig


@dataclass(frozen=True)
class EventBatch:
    """Events from one `simulate` call, before cuts.

    observations:     (n, n_observables) detector-level x, columns in the config's observable order.
    latent:           (n, n_latent) parton-level z, enough to recompute joint quantities at any theta.
    weights:          (n, n_benchmarks) dsigma(z|theta_b) / p(z|theta_sampling), columns in the config's
                      benchmark order: the mean over events at benchmark b estimates sigma(theta_b).
    nuisance_weights: (n, n_nuisance, 2) the event's weight at nu=+1 and nu=-1 divided by its nominal
                      weight (independent of theta), nuisance in config order.
    """

    observations: np.ndarray
    latent: np.ndarray
    weights: np.ndarray
    nuisance_weights: np.ndarray

    def __post_init__(self) -> None:
        n = self.observations.shape[0]
        for name in ("observations", "latent", "weights"):
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.shape[0] != n or arr.dtype != np.float64:
                raise ValueError(f"EventBatch.{name}: expected float64 (n={n}, k), got {arr.dtype} {arr.shape}")
        nw = self.nuisance_weights
        if nw.ndim != 3 or nw.shape[0] != n or nw.shape[2] != 2 or nw.dtype != np.float64:
            raise ValueError(f"EventBatch.nuisance_weights: expected float64 (n={n}, k, 2), got {nw.dtype} {nw.shape}")

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    def select(self, mask: np.ndarray) -> EventBatch:
        """The events where mask is True (used to apply cuts)."""
        return EventBatch(self.observations[mask], self.latent[mask], self.weights[mask], self.nuisance_weights[mask])


@runtime_checkable
class Simulator(Protocol):
    """A simulator built from an analysis config. Deterministic given the Generator it is handed."""

    name: ClassVar[str]

    @classmethod
    def check_config(cls, cfg: AnalysisConfig) -> list[tuple[str, str]]:
        """Simulator-specific validation: (field path, message) for each problem; [] if fine.

        This is where a simulator checks its options, that it provides the config's observables,
        supports its nuisance kinds and can morph with its benchmarks."""
        ...

    @property
    def latent_names(self) -> list[str]:
        """Names of the latent columns (`samples/latent`)."""
        ...

    @property
    def morphing_powers(self) -> np.ndarray:
        """(n_components, n_parameters) int exponents: dsigma(z|theta) = sum_c theta^powers[c] * g_c(z)."""
        ...

    def simulate(self, n: int, rng: np.random.Generator) -> EventBatch:
        """n events drawn at the sampling benchmark, nominal nuisance values, before cuts."""
        ...

    def cross_section(self, theta: np.ndarray) -> float:
        """Total cross section sigma(theta) before cuts, nominal nuisance values (theta: (n_parameters,))."""
        ...

    def joint_log_likelihood(
        self, x: np.ndarray, z: np.ndarray, theta: np.ndarray, nu: np.ndarray | None = None
    ) -> np.ndarray:
        """log p(x, z | theta, nu) per event, shape (n,); nu: (n_nuisance,) or None for nominal values."""
        ...

    def joint_score(self, x: np.ndarray, z: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """grad_theta log p(x, z | theta) per event, shape (n, n_parameters)."""
        ...

    def observations_at(self, observations: np.ndarray, latent: np.ndarray, nu: np.ndarray) -> np.ndarray:
        """The same events observed at nuisance values nu (n_nuisance,): (n, n_observables), float64.

        Events are the ones `simulate` returned (observations and latent in file order). Nuisances that
        move observables (`observable_scale`, an energy scale) move them; weight-type ones leave them as
        they are. Learning uses it for the per-variation training sets (nu = +-1 on one nuisance at a time)."""
        ...

    def log_likelihood(self, x: np.ndarray, theta: np.ndarray, nu: np.ndarray | None = None) -> np.ndarray:
        """Exact log p(x | theta, nu) per event before cuts, shape (n,); nu: (n_nuisance,) or None for 0.

        Simulators without an exact likelihood raise NotImplementedError."""
        ...
