"""The `inference` section of the analysis config: what the fit runs on and how.

What to use when:
- `InferenceConfig` is the section (`cfg.inference`); every field has a default, so a config without
  an `inference:` key is valid and fits pseudo-data at the parameters' true values with the exact arrays.
- `check_inference(cfg)` cross-checks the section against the rest of the config (parameter and
  nuisance names); `AnalysisConfig` calls it, so every error names
  its field, e.g. `inference.fix.cW`.
- `scan_parameters(cfg)` resolves `scan.parameters` (default: every parameter of interest alone);
  `scan_blocks(cfg)` / `toy_blocks(cfg)` are the "A:B" ranges of the mapped scan and toy tasks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from sbi_core.config_base import ConfigSection as _Strict

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig

__all__ = [
    "DatasetOptions", "InferenceConfig", "ScanOptions", "ToyOptions", "check_inference", "scan_blocks",
    "scan_parameters", "scan_point_count", "split_range", "toy_blocks",
]




class DatasetOptions(_Strict):
    """The events the fit is run on."""

    kind: Literal["pseudo", "asimov", "file"] = Field(
        default="pseudo",
        title="Dataset",
        description="pseudo: Poisson pseudo-data at the parameters' true values (unweighted events drawn from "
        "the run's events); asimov: every run event weighted to its expected count at the true values; "
        "file: an events file you give in uri (observed data).",
    )
    uri: str | None = Field(
        default=None, title="Events file", description="For kind file: the sbi-events file to fit (path or URI)."
    )
    seed: int = Field(
        default=0, ge=0, lt=2**63, title="Seed", description="Seed of the pseudo-data draw (Poisson count and events)."
    )

    @model_validator(mode="after")
    def _uri_for_file(self) -> DatasetOptions:
        if self.kind == "file" and not self.uri:
            raise ValueError("kind file needs uri (the events file to fit)")
        if self.kind != "file" and self.uri is not None:
            raise ValueError(f"uri is only used by kind file (kind is {self.kind})")
        return self


class ScanOptions(_Strict):
    """Profile-likelihood scans: which parameters, how fine, in how many mapped tasks."""

    parameters: list[list[str]] | None = Field(
        default=None,
        title="Scans",
        description="Each entry 1 or 2 parameter-of-interest names (a 1D scan or a 2D grid); "
        "omit for every parameter of interest alone.",
    )
    points: int = Field(default=21, ge=2, le=1001, title="Points per axis", description="Grid points per scanned axis.")
    blocks: int = Field(
        default=4, ge=1, le=1024, title="Scan tasks", description="Mapped scan tasks the grid points are split over."
    )
    width: float | None = Field(
        default=5.0,
        gt=0,
        le=1000,
        title="Scan half-width",
        description="Half-width of each scanned axis in units of the parameter's error at the best fit, centred on "
        "the best fit and clipped to the parameter's range; null: the parameter's whole range (to see every "
        "minimum of a quadratic coupling).",
    )

    @field_validator("parameters")
    @classmethod
    def _one_or_two(cls, v: list[list[str]] | None) -> list[list[str]] | None:
        for i, entry in enumerate(v or []):
            if len(entry) not in (1, 2) or len(set(entry)) != len(entry):
                raise ValueError(f"entry {i} must name 1 or 2 different parameters, got {entry}")
        return v


class ToyOptions(_Strict):
    """Toy pseudo-experiments (resampled evaluated events, each fitted)."""

    n: int = Field(default=0, ge=0, le=10**7, title="Toys", description="Number of toys (0: none).")
    batch: int = Field(default=50, ge=1, le=10**5, title="Toys per task", description="Toys fitted by one mapped task.")
    seed: int = Field(
        default=0, ge=0, lt=2**63, title="Seed", description="Toy i draws from SeedSequence(seed, spawn_key=(i,))."
    )


class InferenceConfig(_Strict):
    """How the measurement is made: arrays, dataset, luminosity, fixed/bounded parameters, scans, toys."""

    source: Literal["exact", "learned"] = Field(
        default="exact",
        title="Likelihood source",
        description="exact: the simulator's closed-form densities (closure tests); learned: the trained ratio "
        "networks' evaluated arrays.",
    )
    luminosity: float = Field(
        default=200.0, gt=0, le=1e9, title="Luminosity", description="Integrated luminosity in 1/pb."
    )
    dataset: DatasetOptions = Field(
        default_factory=DatasetOptions, title="Dataset", description="The events the fit runs on."
    )
    fix: dict[str, float] = Field(
        default_factory=dict,
        title="Fixed parameters",
        description="Parameters (of interest or nuisance) held at the given value in every fit.",
    )
    bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        title="Bounds",
        description="[low, high] limits of parameters in the fits (default: none; a parameter of interest's "
        "range only sets its scan grid).",
    )
    normalization: Literal["mc", "xsec"] = Field(
        default="mc",
        title="Normalisation",
        description="How the expected rate sigma(theta, nu) is computed: mc sums the run's events with the same "
        "per-event model as the data (consistent at every nu: the default); xsec interpolates the fiducial cross "
        "sections between nu = -1, 0, +1 (cheaper; biases shape nuisances whose per-event effect varies).",
    )
    interpolation: Literal["exponential", "polyexp"] = Field(
        default="polyexp",
        title="Interpolation",
        description="How per-event and cross-section variations at nu = -1, 0, +1 are interpolated: "
        "exponential (log-linear on each side, kink at 0) or polyexp (log of the ratio a 6th-order polynomial "
        "inside [-1, 1], smooth, linear outside).",
    )
    dtype: Literal["float64", "float32"] = Field(
        default="float64",
        title="Precision",
        description="Floating type of the per-event arrays in the NLL (sums are accumulated in float64).",
    )
    chunk_rows: int = Field(
        default=262144,
        ge=1,
        le=1 << 26,
        title="Events per chunk",
        description="Events per NLL chunk and per likelihood task: bounds the NLL's working memory.",
    )
    hessian_block_rows: int = Field(
        default=8, ge=1, le=4096, title="Hessian rows per task", description="Hessian rows computed by one mapped task."
    )
    scan: ScanOptions = Field(default_factory=ScanOptions, title="Scans", description="Profile-likelihood scans.")
    confidence_levels: list[float] = Field(
        default_factory=lambda: [0.68, 0.95],
        min_length=1,
        title="Confidence levels",
        description="Levels of the intervals and contours (each strictly between 0 and 1).",
    )
    cls_level: float = Field(
        default=0.95, gt=0, lt=1, title="CLs level", description="Confidence level of the CLs upper limits."
    )
    limits: dict[str, float] | None = Field(
        default=None,
        title="CLs upper limits",
        description="Parameter of interest -> its null (background-only) value: the asymptotic CLs upper limit "
        "(q~ test statistic) on it, the parameter bounded below at the null value. Omit for every parameter of "
        "interest whose range holds 0 (null 0); {} for none.",
    )
    toys: ToyOptions = Field(default_factory=ToyOptions, title="Toys", description="Toy pseudo-experiments.")

    @field_validator("confidence_levels")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0.0 < x < 1.0]
        if bad:
            raise ValueError(f"every level must be strictly between 0 and 1, got {bad}")
        return v

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (lo, hi) in v.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"{name}: must be finite with low < high, got {[lo, hi]}")
        return v


def scan_parameters(cfg: AnalysisConfig) -> list[list[str]]:
    """The configured scans, or every parameter of interest alone when none are given."""
    given = cfg.inference.scan.parameters
    return [list(e) for e in given] if given is not None else [[p] for p in cfg.parameter_names]


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
    overlap = sorted(set(pois) & {n.name for n in cfg.nuisance})
    if overlap:
        issues.append(("nuisance", f"nuisance parameters may not share a name with a parameter of interest: {overlap}"))
    return issues


def split_range(total: int, parts: int) -> list[str]:
    """'A:B' strings splitting 0..total into at most `parts` contiguous, nearly equal blocks."""
    parts = max(1, min(parts, total))
    edges = [round(i * total / parts) for i in range(parts + 1)]
    return [f"{a}:{b}" for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def scan_point_count(cfg: AnalysisConfig) -> int:
    """Grid points of all configured scans together: points per 1D scan, points^2 per 2D grid."""
    return sum(cfg.inference.scan.points ** len(entry) for entry in scan_parameters(cfg))


def scan_blocks(cfg: AnalysisConfig) -> list[str]:
    """The mapped scan tasks' point ranges over the concatenated grids of `scan_parameters(cfg)`."""
    return split_range(scan_point_count(cfg), cfg.inference.scan.blocks)


def toy_blocks(cfg: AnalysisConfig) -> list[str]:
    """The mapped toy tasks' ranges ('0:50', '50:100', ...); [] when toys.n is 0."""
    t = cfg.inference.toys
    return [f"{a}:{min(t.n, a + t.batch)}" for a in range(0, t.n, t.batch)]
