"""A whole analysis, checked: the config schema (`sbi_core.config`), a complete morphing basis, and the
named simulator's own checks.

What to use when: `load_analysis(uri, overrides)` wherever a step starts from a config file;
`validate_analysis(dict)` for a dict. The config module only names the simulator; the simulator
registry checks the options and everything else the simulator must agree with, and the stage rooms check
their sections against the rest (`ml.checks`, `inference.checks`). This module sits above them all, so
none imports another.
"""

from __future__ import annotations

from typing import Any

from sbi_core.config import AnalysisConfig, load_config, validate_config
from sbi_core.errors import ConfigError
from sbi_core.inference.checks import check_inference
from sbi_core.ml.checks import check_training
from sbi_core.physics.basis import resolve_basis
from sbi_core.physics.registry import check_analysis


def validate_analysis(data: Any, source: str = "<dict>") -> AnalysisConfig:
    """Schema, cross-references, the morphing basis (completed when optimised) and the simulator's checks of
    a parsed config; ConfigError naming each field."""
    return _checked(validate_config(data, source), source)


def load_analysis(uri: str, overrides: list[str] | None = None) -> AnalysisConfig:
    """Read, override and fully check a config from a path or URI."""
    return _checked(load_config(uri, overrides), uri)


def _checked(cfg: AnalysisConfig, source: str) -> AnalysisConfig:
    cfg = resolve_basis(cfg, source)
    issues = check_training(cfg) or check_inference(cfg)  # after the basis is complete (an optimised basis)
    if issues:
        raise ConfigError(source, issues)
    check_analysis(cfg, source)
    return cfg
