"""Checks of the `inference:` section against the rest of the analysis (parameter and nuisance names, ranges).

`sbi_core.analysis` calls `check_inference(cfg)` after the schema and the training checks pass.
"""

from __future__ import annotations

from sbi_core.config import AnalysisConfig

__all__ = ["check_inference"]


def check_inference(cfg: AnalysisConfig) -> list[tuple[str, str]]:
    """(field path, message) for every name in `cfg.inference` that the rest of the config does not define."""
    inf = cfg.inference
    pois = cfg.parameter_names
    known = pois + [n.name for n in cfg.nuisance]
    issues: list[tuple[str, str]] = []
    for name, value in inf.fix.items():
        if name not in known:
            issues.append((f"inference.fix.{name}", f"unknown parameter {name!r} (known: {known})"))
        elif name in inf.bounds and not inf.bounds[name][0] <= value <= inf.bounds[name][1]:
            issues.append((f"inference.fix.{name}", f"{value} is outside its bounds {list(inf.bounds[name])}"))
    for name in inf.bounds:
        if name not in known:
            issues.append((f"inference.bounds.{name}", f"unknown parameter {name!r} (known: {known})"))
    nuisance = [n.name for n in cfg.nuisance]
    for name in inf.nuisance_interpolation:
        if name not in nuisance:
            issues.append((f"inference.nuisance_interpolation.{name}",
                           f"unknown nuisance parameter {name!r} (known: {nuisance})"))
    for i, entry in enumerate(inf.scan.parameters or []):
        for name in entry:
            if name not in pois:
                issues.append((f"inference.scan.parameters[{i}]", f"{name!r} is not a parameter of interest ({pois})"))
            elif name in inf.fix:
                issues.append((f"inference.scan.parameters[{i}]", f"{name!r} is fixed in inference.fix"))
    ranges = {p.name: p.range for p in cfg.parameters}
    for name, null in (inf.limits or {}).items():
        if name not in pois:
            issues.append((f"inference.limits.{name}", f"{name!r} is not a parameter of interest ({pois})"))
        elif name in inf.fix:
            issues.append((f"inference.limits.{name}", f"{name!r} is fixed in inference.fix"))
        elif not ranges[name][0] <= null < ranges[name][1]:
            issues.append((f"inference.limits.{name}", f"null value {null} must lie in the range {list(ranges[name])} "
                                                       "below its upper end (the limit is searched above it)"))
    if inf.bootstrap and inf.source == "exact":
        issues.append(("inference.bootstrap", "the exact source has no ensemble members: set it for a learned or "
                                              "sally source"))
    if inf.source == "sally":
        if "sally" not in cfg.training.methods:
            issues.append(("inference.source", "sally needs the sally score network: add sally to training.methods"))
        if inf.normalization != "mc":
            issues.append(("inference.normalization", "source sally needs mc (each bin is normalised by the run's "
                                                      "events in it)"))
    overlap = sorted(set(pois) & {n.name for n in cfg.nuisance})
    if overlap:
        issues.append(("nuisance", f"nuisance parameters may not share a name with a parameter of interest: {overlap}"))
    return issues
