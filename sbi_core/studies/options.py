"""The study section: what every study has (its kind, source run, bounds and seed) and the kind's `options`.

What to use when: `StudyConfig` validates the common fields; the kind's own options model (`StudyKind.options`)
validates `options` (`sbi_core.studies.study.validate_study` runs both and the kind's checks against the
source run's analysis config). Bounds: a study ends after `max_rounds` rounds, when it has used `budget`
units (toys, simulated events, trainings: the kind says which), or when the kind says its answer is known to
`tolerance` (in the kind's units: the parameter for a limit).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from sbi_core.config_base import ConfigSection

__all__ = ["NAME_PATTERN", "StudyConfig"]

#: A study name goes into Airflow run ids (`study-<name>-round-0002`) and storage paths.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class StudyConfig(ConfigSection):
    """The study section, common to every kind."""

    kind: str = Field(title="Kind", description="What the study does: a key of the study kind registry "
                      "(toy_limits, ...).")
    name: str | None = Field(default=None, title="Name", description="Names the study in run ids, MLflow and "
                             "reports (letters, digits, _ . -); default: the last part of the study's URI.")
    run: str | None = Field(default=None, title="Source run", description="URI of the run whose events, "
                            "likelihood arrays or networks the study uses (configured, and as far as the kind "
                            "needs: the toy limits need its dataset and likelihood arrays).")
    max_rounds: int = Field(default=10, ge=1, le=1000, title="Most rounds",
                            description="The study ends after this many rounds, whatever else.")
    budget: int = Field(default=20000, ge=1, le=10**12, title="Budget",
                        description="Total work the study may spend, in the kind's unit (toy_limits: toys; "
                        "active learning: simulated events; HPO: trainings). It ends once spent.")
    tolerance: float = Field(default=0.01, gt=0, le=1e9, title="Tolerance",
                             description="The study ends when its answer is known to this (toy_limits: the limit "
                             "+- twice its error lies within +- tolerance, in units of the parameter).")
    seed: int = Field(default=0, ge=0, lt=2**63, title="Seed",
                      description="Seed of everything random in the study (toys, searches).")
    points_per_round: int = Field(default=4, ge=1, le=1024, title="Points per round",
                                  description="New points a round evaluates (toy_limits: new tested values).")
    options: dict[str, Any] = Field(default_factory=dict, title="Kind options",
                                    description="The kind's own settings (validated by the kind).")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME_PATTERN.match(v):
            raise ValueError(f"must match {NAME_PATTERN.pattern} (it names Airflow runs), got {v!r}")
        return v
