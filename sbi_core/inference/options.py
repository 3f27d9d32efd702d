"""The `inference` section of the analysis config: what the fit runs on and how.

What to use when:
- `InferenceConfig` is the section (`cfg.inference`); every field has a default, so a config without
  an `inference:` key is valid and fits pseudo-data at the parameters' true values with the exact arrays.
- The checks against the rest of the config are `sbi_core.inference.checks`; the mapped tasks' blocks
  (scan points, toys) are `sbi_core.inference.blocks`. This module knows nothing of the whole config.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sbi_core.config_base import ConfigSection as _Strict

__all__ = ["DatasetOptions", "InferenceConfig", "SallyOptions", "ScanOptions", "ToyOptions"]




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


class SallyOptions(_Strict):
    """The histograms of the estimated score t(x) (inference.source sally, `sbi_core/inference/sally.py`)."""

    bins: int = Field(
        default=5, ge=1, le=100, title="Bins per score component",
        description="Bins per component of t(x), at the weighted quantiles of the run's events at the reference; "
        "the histogram is their product grid (bins^P), bins without simulated events dropped.",
    )
    staterror: bool = Field(
        default=True, title="MC statistical uncertainty",
        description="One constrained nuisance per bin for the run's finite MC sample (Barlow-Beeston-lite).",
    )


class InferenceConfig(_Strict):
    """How the measurement is made: arrays, dataset, luminosity, fixed/bounded parameters, scans, toys."""

    source: Literal["exact", "learned", "sally"] = Field(
        default="exact",
        title="Likelihood source",
        description="exact: the simulator's closed-form densities (closure tests); learned: the trained ratio "
        "networks' evaluated arrays; sally: a binned likelihood of histograms of the trained score t(x).",
    )
    estimator: Literal["benchmark_ratio", "carl", "rolr", "rascal", "alice", "alices"] = Field(
        default="benchmark_ratio",
        title="Learned estimator",
        description="For source learned: the trained method whose networks make the likelihood. benchmark_ratio: "
        "per-benchmark ratios morphed in theta (per-event arrays); carl, rolr, rascal, alice, alices: one "
        "theta-parametrised network evaluated inside the fit (sbi_core/inference/parametrised.py). It must be in "
        "training.methods.",
    )
    compare: list[Literal["benchmark_ratio", "carl", "rolr", "rascal", "alice", "alices"]] = Field(
        default_factory=list,
        title="Methods compared with the exact fit",
        description="For source learned on a simulator with an exact likelihood: trained methods fitted beside "
        "the estimator and the exact likelihood on the same dataset (fit.json and results.json "
        "`learned_vs_exact`). The estimator is always compared.",
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
    interpolation: Literal["exponential", "polyexp", "linear"] = Field(
        default="polyexp",
        title="Interpolation",
        description="How per-event and cross-section variations at nu = -1, 0, +1 are interpolated: "
        "exponential (log-linear on each side, kink at 0: HistFactory code 1) or polyexp (log of the ratio a "
        "6th-order polynomial inside [-1, 1], smooth, linear outside) or linear (additive: HistFactory code 0).",
    )
    nuisance_interpolation: dict[str, Literal["exponential", "polyexp", "linear"]] = Field(
        default_factory=dict,
        title="Interpolation per nuisance",
        description="Nuisance name -> its interpolation, overriding `interpolation` (e.g. linear for a "
        "histosys-like shape, exponential for a normalisation, as HistFactory models set them per modifier).",
    )
    normalization_table: int = Field(
        default=0,
        ge=0,
        le=64,
        title="Normalisation table degree",
        description="Theta-parametrised estimators (alices, ...) with normalisation mc. 0: the network runs over "
        "the run's events at every call of every fit. d > 0: log Z(theta) comes from a Chebyshev series of degree "
        "d per parameter of interest over their ranges, built once per process ((d + 1)^P passes over the run's "
        "events, its largest error in fit.json), so toys, scans and limits run the network on their own events "
        "only; fits are then bounded to the ranges, and shape-systematic networks are refused "
        "(sbi_core/inference/normalization_table.py).",
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
    bootstrap: bool = Field(
        default=False, title="Bootstrap method uncertainty",
        description="Also fit each ensemble member's likelihood alone (members train on bootstrap resamples) and "
        "report the spread of best fits and interval ends as the method uncertainty (learned and sally sources).",
    )
    sally: SallyOptions = Field(
        default_factory=SallyOptions, title="SALLY histograms", description="Binning of the score (source sally)."
    )

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
