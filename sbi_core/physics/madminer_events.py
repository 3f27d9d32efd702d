"""The `madminer` simulator: a run whose events come from a MadMiner event file (`sbi-core import-madminer`).

Nothing is simulated: `sbi-core import-madminer --file URI --run RUN` reads a MadMiner 0.9.6 event file
(`sbi_core.data.madminer_import`), writes the run's config naming this simulator, and the run's events.h5;
sample, train, evaluate and the fit then treat the run like any other. The simulator is what those steps ask
of a run's generator: its morphing (MadMiner's components, in the file's order), its latent columns (the
event's MadMiner sampling benchmark id: MadMiner files keep no parton-level record), and nuisance parameters
that act through weights only (`normalization`, `shape_weight`: MadMiner's nuisance benchmarks), so
`observations_at` leaves x unchanged. There is no likelihood to compare with: closure steps skip such runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from sbi_core.config_base import ConfigSection, parse_section
from sbi_core.errors import ConfigError, InputError
from sbi_core.physics.basis import config_powers
from sbi_core.physics.morphing import Morphing
from sbi_core.physics.registry import register_simulator

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.physics.base import EventBatch

__all__ = ["LATENT_NAMES", "MadMinerEvents", "MadMinerOptions"]

#: The one latent column of an imported run: the MadMiner sampling benchmark id of each event (-1: background).
LATENT_NAMES = ["madminer_sampling_id"]
_SUPPORTED_NUISANCE = ("normalization", "shape_weight")


class MadMinerOptions(ConfigSection):
    """`simulator.options` of an imported run (written by import-madminer; unknown keys are refused)."""

    file: str = Field(min_length=1, title="MadMiner file", description="The MadMiner event file the run was made from.")
    components: list[list[int]] = Field(
        min_length=1, title="Morphing components",
        description="MadMiner's morphing/components in its order: the exponents of each monomial, per parameter.")
    definitions: dict[str, str] = Field(
        default_factory=dict, title="Observable definitions",
        description="Observable -> its MadMiner expression (observables/definitions), written back when the run's "
                    "events are read by MadMiner.")
    renamed: dict[str, str] = Field(
        default_factory=dict, title="Renamed",
        description="Our name -> MadMiner's name of each parameter, benchmark, observable or nuisance parameter "
                    "whose MadMiner name is not an identifier.")


def options_of(cfg: AnalysisConfig) -> MadMinerOptions:
    """The validated options (ConfigError naming the field)."""
    opts, issues = parse_section(MadMinerOptions, cfg.simulator.options, "simulator.options")
    if opts is None:
        raise ConfigError("", issues)
    return opts


@register_simulator
class MadMinerEvents:
    """Events imported from a MadMiner file; see the module docstring. `simulate` is refused."""

    name: ClassVar[str] = "madminer"

    @classmethod
    def check_config(cls, cfg: AnalysisConfig) -> list[tuple[str, str]]:
        """Options, nuisance kinds, and components that are the config's morphing monomials (in any order)."""
        try:
            opts = options_of(cfg)
        except ConfigError as exc:
            return list(exc.issues)
        issues: list[tuple[str, str]] = []
        for i, n in enumerate(cfg.nuisance):
            if str(n.kind) not in _SUPPORTED_NUISANCE:
                issues.append((f"nuisance[{i}].kind", f"{str(n.kind)!r}: MadMiner nuisance parameters act through "
                                                      f"weights only (supported: {list(_SUPPORTED_NUISANCE)})"))
        powers = np.asarray(opts.components, dtype=np.int64)
        if powers.ndim != 2 or powers.shape[1] != len(cfg.parameters):
            return issues + [("simulator.options.components",
                              f"expected one exponent per parameter ({len(cfg.parameters)}) in every row")]
        if sorted(map(tuple, powers.tolist())) != sorted(map(tuple, config_powers(cfg).tolist())):
            issues.append(("simulator.options.components", "not the monomials of morphing.max_power and "
                                                           "max_overall_power"))
        else:
            try:
                Morphing(powers, np.asarray(cfg.benchmark_matrix(), dtype=np.float64))
            except (InputError, ValueError) as exc:
                issues.append(("benchmarks", str(exc)))
        return issues

    def __init__(self, cfg: AnalysisConfig) -> None:
        issues = self.check_config(cfg)
        if issues:
            raise ConfigError(f"simulator {self.name!r}", issues)
        self.cfg = cfg
        self.options = options_of(cfg)
        self._powers = np.asarray(self.options.components, dtype=np.int64)

    @property
    def latent_names(self) -> list[str]:
        return list(LATENT_NAMES)

    @property
    def morphing_powers(self) -> np.ndarray:
        return self._powers.copy()

    def simulate(self, n: int, rng: np.random.Generator) -> EventBatch:
        raise InputError(f"run of MadMiner file {self.options.file}: its events come from that file, not from a "
                         "simulator: run `sbi-core import-madminer`, not generate")

    def observations_at(self, observations: np.ndarray, latent: np.ndarray, nu: np.ndarray) -> np.ndarray:
        """Unchanged: MadMiner's nuisance parameters act through weights only."""
        return np.array(observations, dtype=np.float64)

    def _no_likelihood(self, *_: Any, **__: Any) -> Any:
        raise NotImplementedError("events imported from a MadMiner file have no closed-form likelihood")

    cross_section = joint_log_likelihood = joint_score = log_likelihood = _no_likelihood
