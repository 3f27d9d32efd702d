"""The analysis config: one YAML file that describes a whole analysis.

What to use when:
- `load_config(uri, overrides)` reads YAML from a path or URI, applies `--set` style
  overrides and validates it against the schema; `validate_config(dict)` does the same for a dict.
  Neither knows simulators: `sbi_core.analysis.load_analysis` adds the simulator's own checks.
- `config_hash(cfg)` is the identity of the events a config produces (the output URI excluded):
  shards carry it, and combine refuses to mix files with different hashes.
- `json_schema()` is the schema the Airflow trigger form is built from (shipped as
  `sbi_core/schema/analysis-v1.json`; a test keeps the two identical).

Every error is a `ConfigError` whose issues name the field path, e.g. `nuisance[1].size`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from sbi_core.config_base import ConfigSection as _Strict
from sbi_core.config_base import format_loc, validation_issues
from sbi_core.errors import ConfigError
from sbi_core.inference.options import InferenceConfig
from sbi_core.ml.options import TrainingConfig

SCHEMA_VERSION = 1
Identifier = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=64,
        description="letters, digits and _, not starting with a digit",
    ),
]


class Parameter(_Strict):
    """A parameter of interest (an EFT coefficient, a signal strength)."""

    name: Identifier = Field(title="Name", description="Parameter name, used in benchmarks and results.")
    range: tuple[float, float] = Field(
        title="Range", description="[low, high] of the physically allowed or scanned region."
    )
    true_value: float | None = Field(
        default=None,
        title="True value",
        description="Value used to generate pseudo-data for closure tests; inside the range.",
    )
    description: str = Field(default="", title="Description", description="Free text for reports and the UI.")

    @field_validator("range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(x) for x in v) or not v[0] < v[1]:
            raise ValueError(f"must be finite with low < high, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _true_in_range(self) -> Parameter:
        if self.true_value is not None and not self.range[0] <= self.true_value <= self.range[1]:
            raise ValueError(f"true_value {self.true_value} is outside range {list(self.range)}")
        return self


class Benchmark(_Strict):
    """A named point in parameter space; the morphing basis is the list of benchmarks."""

    name: Identifier = Field(title="Name", description="Benchmark name (e.g. sm).")
    values: dict[str, float] = Field(
        title="Values", description="Value of every parameter of interest at this benchmark."
    )


class Observable(_Strict):
    """An observable kept in the event files (a column of `samples/observations`)."""

    name: Identifier = Field(title="Name", description="Observable name; must be one the simulator provides.")
    description: str = Field(default="", title="Description", description="What it is, for plots and reports.")
    unit: str = Field(default="", title="Unit", description="Unit for axis labels (e.g. GeV).")


class Cut(_Strict):
    """Keep events with min <= observable < max (either bound may be omitted)."""

    observable: str = Field(title="Observable", description="Name of an observable listed under observables.")
    min: float | None = Field(default=None, title="Minimum", description="Lower bound (inclusive); omit for none.")
    max: float | None = Field(default=None, title="Maximum", description="Upper bound (exclusive); omit for none.")

    @model_validator(mode="after")
    def _bounds(self) -> Cut:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"min {self.min} must be < max {self.max}")
        return self


class NuisanceKind(StrEnum):
    """How a nuisance parameter acts on events."""

    NORMALIZATION = "normalization"
    SHAPE_WEIGHT = "shape_weight"
    OBSERVABLE_SCALE = "observable_scale"
    OBSERVABLE_RESOLUTION = "observable_resolution"


class Nuisance(_Strict):
    """A systematic uncertainty, constrained by a unit Gaussian; `size` is its relative one-sigma effect."""

    name: Identifier = Field(title="Name", description="Nuisance parameter name.")
    kind: NuisanceKind = Field(
        title="Kind",
        description="normalization: rate x (1+size)^nu; shape_weight: per-event weight; "
        "observable_scale: observables x (1 + size*nu); observable_resolution: the detector resolution "
        "x (1 + size*nu) (simulators with a detector model).",
    )
    size: float = Field(
        gt=0, le=1, title="One sigma", description="Relative size of a one-sigma variation (0.05 = 5%)."
    )
    observables: list[str] | None = Field(
        default=None,
        title="Observables",
        description="For observable_scale: the observables it scales (default: all).",
    )
    samples: list[str] | None = Field(
        default=None,
        min_length=1,
        title="Samples",
        description="The samples of the model it acts on (default: all; the simulator names its samples, e.g. "
        "the benchmark's signal and background): a systematic on one part of the model, as a HistFactory modifier.",
    )

    @model_validator(mode="after")
    def _observables_only_for_scale(self) -> Nuisance:
        if self.observables is not None and self.kind is not NuisanceKind.OBSERVABLE_SCALE:
            raise ValueError("observables is only allowed for kind observable_scale")
        if self.samples is not None and len(set(self.samples)) != len(self.samples):
            raise ValueError(f"samples: names must be unique, got {self.samples}")
        return self


class SimulatorSpec(_Strict):
    """Which simulator generates the events, and its own options (validated by the simulator)."""

    name: str = Field(title="Simulator", description="Registered simulator name (sbi-core lists them on error).")
    options: dict[str, Any] = Field(default_factory=dict, title="Options", description="Simulator-specific options.")


class Generation(_Strict):
    """The generation plan: how many events, in how many shards, combined in groups of how many."""

    events: int = Field(
        gt=0,
        le=10**10,
        title="Events",
        description="Events to keep after cuts, in total; each shard simulates until it is full.",
    )
    shards: int = Field(gt=0, le=100_000, title="Shards", description="Number of parallel generate tasks.")
    shards_per_group: int = Field(
        default=16, gt=0, title="Shards per group", description="Shards combined by one first-level combine task."
    )
    seed: int = Field(
        default=0, ge=0, lt=2**63, title="Seed", description="Run seed; shard i draws from SeedSequence(seed, spawn_key=(i,))."
    )
    sampling_benchmark: str | None = Field(
        default=None,
        title="Sampling benchmark",
        description="Benchmark events are drawn at (default: the first benchmark); the reference of every "
        "learned ratio.",
    )
    sampling_point: dict[str, float] | None = Field(
        default=None,
        title="Sampling point",
        description="Draw the events at this parameter point instead of at the sampling benchmark (active "
        "learning asks for simulation where the networks are least certain). The weights stay per basis "
        "benchmark and the reference stays the sampling benchmark: only where events are drawn changes. "
        "Simulators that generate events (benchmark, drell_yan_eft) support it.",
    )

    @model_validator(mode="after")
    def _shards_fit(self) -> Generation:
        if self.shards > self.events:
            raise ValueError(f"shards ({self.shards}) must not exceed events ({self.events})")
        return self


class MorphingOptions(_Strict):
    """How weights at a few benchmarks give the weight at any theta: the monomials and the basis."""

    max_power: int | dict[str, int] = Field(
        default=2,
        title="Maximum power",
        description="Highest power of each parameter in the squared amplitude (2 when it enters the "
        "amplitude linearly): one value for all, or {parameter: power}; unlisted parameters get 2.",
    )
    max_overall_power: int | None = Field(
        default=None,
        ge=0,
        title="Maximum overall power",
        description="Highest total degree of a monomial (default: the largest maximum power).",
    )
    basis: Literal["given", "optimised"] = Field(
        default="given",
        title="Basis",
        description="given: the benchmarks listed are the basis (one per monomial). optimised: the listed "
        "benchmarks are kept and the rest are chosen to minimise the expected sum of squared morphing "
        "weights over the parameter ranges (written into the run's resolved config).",
    )
    candidates: int = Field(
        default=400, ge=10, le=100_000, title="Candidates", description="Candidate points drawn in the ranges."
    )
    seed: int = Field(default=0, ge=0, lt=2**63, title="Seed", description="Seed of the candidate points.")

    @field_validator("max_power")
    @classmethod
    def _powers_non_negative(cls, v: int | dict[str, int]) -> int | dict[str, int]:
        values = [v] if isinstance(v, int) else list(v.values())
        if any(p < 0 or p > 8 for p in values):
            raise ValueError(f"powers must be in 0..8, got {v}")
        return v


class AnalysisConfig(_Strict):
    """A whole analysis. See configs/benchmark.yaml for a documented example."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, title="Analysis config")

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION, title="Schema version", description="Config schema version."
    )
    name: str = Field(
        min_length=1, max_length=200, title="Analysis name", description="Shown in the UI, reports and MLflow."
    )
    description: str = Field(default="", title="Description", description="Free text.")
    parameters: list[Parameter] = Field(
        min_length=1, title="Parameters of interest", description="EFT coefficients, signal strengths."
    )
    benchmarks: list[Benchmark] = Field(
        min_length=1, title="Benchmarks", description="Morphing basis points in parameter space."
    )
    observables: list[Observable] = Field(min_length=1, title="Observables", description="Observables kept per event.")
    cuts: list[Cut] = Field(
        default_factory=list, title="Cuts", description="Selection applied after detector response."
    )
    nuisance: list[Nuisance] = Field(
        default_factory=list, title="Nuisance parameters", description="Systematic uncertainties."
    )
    simulator: SimulatorSpec = Field(title="Simulator", description="Event generator and its options.")
    morphing: MorphingOptions = Field(
        default_factory=MorphingOptions,
        title="Morphing",
        description="Monomials of the squared amplitude and how the benchmark basis is chosen.",
    )
    generation: Generation = Field(title="Generation", description="Events, shards, combine groups and seed.")
    output: str = Field(
        min_length=1, title="Output URI", description="Default run location: a local path or s3://bucket/prefix."
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig,
        title="Training",
        description="The learning stage: estimators, ensembles, per-variation networks, samples, optimiser.",
    )
    inference: InferenceConfig = Field(
        default_factory=InferenceConfig,
        title="Inference",
        description="The fit: likelihood source, dataset, luminosity, fixed/bounded parameters, scans, toys.",
    )

    @model_validator(mode="after")
    def _cross_references(self) -> AnalysisConfig:
        issues: list[tuple[str, str]] = []
        _unique(issues, "parameters", [p.name for p in self.parameters])
        _unique(issues, "benchmarks", [b.name for b in self.benchmarks])
        _unique(issues, "observables", [o.name for o in self.observables])
        _unique(issues, "nuisance", [n.name for n in self.nuisance])
        pnames = [p.name for p in self.parameters]
        for i, b in enumerate(self.benchmarks):
            missing = [p for p in pnames if p not in b.values]
            extra = [k for k in b.values if k not in pnames]
            if missing:
                issues.append((f"benchmarks[{i}].values", f"missing parameters {missing}"))
            if extra:
                issues.append((f"benchmarks[{i}].values", f"unknown parameters {extra} (known: {pnames})"))
        onames = {o.name for o in self.observables}
        for i, c in enumerate(self.cuts):
            if c.observable not in onames:
                issues.append(
                    (f"cuts[{i}].observable", f"unknown observable {c.observable!r} (known: {sorted(onames)})")
                )
        for i, n in enumerate(self.nuisance):
            for o in n.observables or []:
                if o not in onames:
                    issues.append((f"nuisance[{i}].observables", f"unknown observable {o!r} (known: {sorted(onames)})"))
        if isinstance(self.morphing.max_power, dict):
            unknown = sorted(set(self.morphing.max_power) - set(pnames))
            if unknown:
                issues.append(("morphing.max_power", f"unknown parameters {unknown} (known: {pnames})"))
        sb = self.generation.sampling_benchmark
        if sb is not None and sb not in {b.name for b in self.benchmarks}:
            issues.append(("generation.sampling_benchmark", f"unknown benchmark {sb!r}"))
        point = self.generation.sampling_point
        if point is not None:
            if sorted(point) != sorted(pnames):
                issues.append(("generation.sampling_point", f"give every parameter ({pnames}), got {sorted(point)}"))
            for p in self.parameters:
                if p.name in point and not p.range[0] <= point[p.name] <= p.range[1]:
                    issues.append((f"generation.sampling_point.{p.name}",
                                   f"{point[p.name]} is outside the range {list(p.range)}"))
        if issues:
            raise ConfigError("", issues)
        return self

    # Convenience accessors used by every step; they keep index bookkeeping in one place.
    @property
    def parameter_names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def benchmark_names(self) -> list[str]:
        return [b.name for b in self.benchmarks]

    @property
    def observable_names(self) -> list[str]:
        return [o.name for o in self.observables]

    @property
    def max_powers(self) -> list[int]:
        """morphing.max_power resolved per parameter (config order)."""
        mp = self.morphing.max_power
        return [mp if isinstance(mp, int) else mp.get(p, 2) for p in self.parameter_names]

    @property
    def sampling_benchmark(self) -> str:
        return self.generation.sampling_benchmark or self.benchmarks[0].name

    def sampling_theta(self) -> list[float]:
        """Where events are drawn (config parameter order): generation.sampling_point when set, else the
        sampling benchmark's values."""
        point = self.generation.sampling_point
        if point is not None:
            return [float(point[p]) for p in self.parameter_names]
        return [float(v) for v in self.benchmark_matrix()[self.benchmark_names.index(self.sampling_benchmark)]]

    def benchmark_matrix(self) -> list[list[float]]:
        """Benchmark values as rows (benchmark) x columns (parameter, config order)."""
        return [[b.values[p] for p in self.parameter_names] for b in self.benchmarks]


def _unique(issues: list[tuple[str, str]], field: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        issues.append((field, f"duplicate names {dupes}"))


def validate_config(data: Any, source: str = "<dict>") -> AnalysisConfig:
    """Validate a parsed config dict against the schema and its cross-references; raise ConfigError.

    The config only names its simulator: the simulator's own checks (options, observables it provides,
    nuisance kinds, morphing basis) run in `sbi_core.analysis.validate_analysis` / `load_analysis`,
    which is what the steps call. This keeps the config below physics in the import graph."""
    if not isinstance(data, dict):
        raise ConfigError(source, [("", f"the top level must be a mapping, got {type(data).__name__}")])
    try:
        cfg = AnalysisConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, validation_issues(exc)) from None
    except ConfigError as exc:
        raise ConfigError(source, exc.issues) from None
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (safe_load silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML, turning syntax errors into a ConfigError that gives the line and column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(source, [("", f"malformed YAML at {where}: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [("", f"malformed YAML: {exc}")]) from None


def parse_override(item: str, current: Any = None) -> tuple[str, Any]:
    """'generation.events=1000' -> ('generation.events', 1000).

    The value keeps the type of the value it replaces: text stays text byte for byte when the
    field holds a string (so `name=yes` or `name=2024` are names); otherwise it is read as a YAML
    scalar (numbers, booleans, null) or an explicit [..]/{..} flow collection; anything else stays text.
    """
    if "=" not in item:
        raise ConfigError("--set", [("", f"expected PATH=VALUE, got {item!r}")])
    path, raw = item.split("=", 1)
    if not path:
        raise ConfigError("--set", [("", f"empty path in {item!r}")])
    if isinstance(current, str) or not raw.strip():
        return path, raw
    for number in (int, float):
        try:
            return path, number(raw)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return path, raw
    if isinstance(value, str) or (isinstance(value, dict | list) and not raw.lstrip().startswith(("[", "{"))):
        return path, raw
    return path, value


def flow_mapping(values: Mapping[str, float]) -> str:
    """{name: value, ...} as the YAML flow mapping an override of a mapping field takes (a --set of
    `training.samples.theta_fixed` or `generation.sampling_point`); floats by repr, so they read back exactly."""
    return "{" + ", ".join(f"{k}: {float(v)!r}" for k, v in values.items()) + "}"


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, _Strict)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted paths (with [i] for list items) in a copy of a raw config dict."""
    import copy
    import re

    out = copy.deepcopy(data)
    for item in overrides:
        path, _ = parse_override(item)
        parts: list[str | int] = []
        for tok in path.split("."):
            m = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", tok)
            if not m:
                raise ConfigError("--set", [(path, "malformed path")])
            parts.append(m.group(1))
            parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
        node: Any = out
        model: Any = AnalysisConfig
        for k, part in enumerate(parts[:-1]):
            try:
                field = model.model_fields.get(part) if isinstance(part, str) and model is not None else None
                model = field.annotation if field is not None and _is_section(field.annotation) else None
                if model is not None and isinstance(node, dict) and part not in node:
                    node[part] = {}  # a config section the file leaves at its defaults
                node = node[part]
            except (KeyError, IndexError, TypeError):
                raise ConfigError("--set", [(format_loc(tuple(parts[: k + 1])), "no such field to override")]) from None
        try:
            current = node[parts[-1]] if isinstance(node, list) else node.get(parts[-1])
            node[parts[-1]] = parse_override(item, current)[1]
        except (IndexError, TypeError, AttributeError):
            raise ConfigError("--set", [(path, "no such field to override")]) from None
    return out


def load_config(uri: str, overrides: list[str] | None = None) -> AnalysisConfig:
    """Read, override and validate (schema only) a config from a local path or URI."""
    from sbi_core import storage

    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        raise ConfigError(uri, [("", "file not found")]) from None
    data = parse_yaml(text, uri)
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(uri, [("", "the top level must be a mapping")])
        data = apply_overrides(data, overrides)
    return validate_config(data, uri)


def config_to_yaml(cfg: AnalysisConfig) -> str:
    """The resolved config as YAML (what configure writes next to the setup file)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


#: Config fields that do not change the events: the output URI, names and free text, and the sections of
#: the stages after generation (a run can be retrained or refitted with other settings, `sbi-core derive`).
NOT_EVENT_FIELDS = frozenset({"output", "name", "description", "training", "inference"})


def config_hash(cfg: AnalysisConfig) -> str:
    """sha256 of everything that determines the events (fields in NOT_EVENT_FIELDS excluded: renaming an
    analysis or changing how it is trained or fitted does not change its events)."""
    payload = json.dumps(cfg.model_dump(mode="json", exclude=set(NOT_EVENT_FIELDS)), sort_keys=True,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def json_schema() -> dict[str, Any]:
    """JSON schema of the analysis config (drives the Airflow trigger form)."""
    schema = AnalysisConfig.model_json_schema()
    schema["$id"] = f"https://airflow-nsbi/schema/analysis-v{SCHEMA_VERSION}.json"
    return schema
