"""A study as every step sees it: its layout, validated config, the kind's options, the kind, the source run.

What to use when:
- `validate_study(data, source, layout)`: the study section as parsed YAML -> `Study`, or `StudyConfigError`
  (exit 2) naming every bad field: the common fields, the kind's options, the source run, and the kind's checks
  against the run's analysis config. `study --create` calls it before anything is written.
- `read_study_data(config_uri, overrides)`: a study YAML file and `--set PATH=VALUE` overrides as a dict.
- `load_study(uri)`: a created study (every later step).
- `study_to_yaml(study)`: the resolved config (defaults written out) as `study.yaml` holds it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from types import UnionType
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

import yaml

from sbi_core import storage
from sbi_core.config_base import ConfigSection, parse_section
from sbi_core.errors import ConfigError, InputError
from sbi_core.studies.kinds import StudyKind, get_kind
from sbi_core.studies.layout import StudyLayout
from sbi_core.studies.options import StudyConfig

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.layout import RunLayout
    from sbi_core.plan import GenerationPlan

__all__ = ["Study", "StudyConfigError", "load_study", "read_study_data", "study_to_yaml", "validate_study"]


class StudyConfigError(ConfigError):
    """The study config is invalid; `issues` holds (field path, message) pairs."""

    def __init__(self, source: str, issues: list[tuple[str, str]]) -> None:
        super().__init__(source, issues)
        lines = [f"{path}: {msg}" if path else msg for path, msg in self.issues]
        Exception.__init__(self, f"invalid study config {source}:\n  " + "\n  ".join(lines))


@dataclass(frozen=True)
class Study:
    """A validated study: where it lives, its config, its kind and the kind's options."""

    layout: StudyLayout
    config: StudyConfig
    kind: StudyKind
    options: ConfigSection

    @property
    def name(self) -> str:
        return self.config.name or self.layout.name

    @property
    def uri(self) -> str:
        return self.layout.root

    @cached_property
    def source(self) -> tuple[RunLayout, AnalysisConfig, GenerationPlan]:
        """The source run's layout, analysis config and plan; InputError when the study has none."""
        from sbi_core.runs import load_run

        if not self.config.run:
            raise InputError(f"study {self.uri}: kind {self.kind.name} needs a source run (run: URI)")
        return load_run(self.config.run)

    @property
    def analysis(self) -> AnalysisConfig:
        return self.source[1]

    @property
    def unit(self) -> str:
        """What the budget counts: the kind's `unit_for(study)` when it has one (a kind whose unit depends on its
        options: active learning counts evaluations or simulated events), else its `unit`."""
        unit_for = getattr(self.kind, "unit_for", None)
        return str(unit_for(self)) if callable(unit_for) else str(self.kind.unit)


def _wants_text(annotation: Any) -> bool:
    """Whether a field takes text (then an override's value stays text, e.g. `name=2024`)."""
    if annotation is str:
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(_wants_text(a) for a in get_args(annotation))
    return False


def _override(data: dict[str, Any], item: str) -> None:
    """Set one dotted PATH=VALUE in data, creating missing mappings (validation then names unknown keys)."""
    from sbi_core.config import parse_override

    path, _ = parse_override(item)
    parts = path.split(".")
    if any(not p for p in parts):
        raise StudyConfigError("--set", [(path, "malformed path")])
    node = data
    for k, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise StudyConfigError("--set", [(".".join(parts[: k + 1]), "not a section: cannot set a key in it")])
        node = child
    model: Any = StudyConfig
    if parts[0] == "options" and len(parts) == 2 and isinstance(data.get("kind"), str):
        try:
            model = get_kind(data["kind"]).options
        except InputError:
            model = None
    field = model.model_fields.get(parts[-1]) if model is not None else None
    current = "" if field is not None and _wants_text(field.annotation) else node.get(parts[-1])
    node[parts[-1]] = parse_override(item, current)[1]


def read_study_data(config_uri: str | None, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], str]:
    """(the study section as a dict, a name for its source) from a YAML file and/or `--set` overrides.

    A file may hold the section at its top level or under a `study:` key."""
    from sbi_core.config import parse_yaml

    data: Any = {}
    source = config_uri or "--set"
    if config_uri:
        try:
            data = parse_yaml(storage.read_text(config_uri), config_uri)
        except FileNotFoundError:
            raise StudyConfigError(config_uri, [("", "file not found")]) from None
        if isinstance(data, dict) and set(data) == {"study"}:
            data = data["study"]
        if not isinstance(data, dict):
            raise StudyConfigError(config_uri, [("", f"the top level must be a mapping, got {type(data).__name__}")])
    data = copy.deepcopy(data)
    for item in overrides:
        _override(data, item)
    return data, source


def validate_study(data: Any, source: str, layout: StudyLayout, *, checks: bool = True) -> Study:
    """The study section -> Study; StudyConfigError naming every bad field. `checks`: also the kind's checks
    against the source run (creation; later steps trust what creation accepted)."""
    if not isinstance(data, dict):
        raise StudyConfigError(source, [("", f"the study section must be a mapping, got {type(data).__name__}")])
    cfg, issues = parse_section(StudyConfig, data, "")
    if cfg is None:
        raise StudyConfigError(source, issues)
    try:
        kind = get_kind(cfg.kind)
    except InputError as exc:
        raise StudyConfigError(source, [("kind", str(exc).removeprefix("kind: "))]) from None
    options, issues = parse_section(kind.options, cfg.options, "options")
    if options is None:
        raise StudyConfigError(source, issues)
    study = Study(layout, cfg, kind, options)
    if checks:
        if cfg.run:
            try:
                study.source  # noqa: B018 - loads and checks the run
            except InputError as exc:
                raise StudyConfigError(source, [("run", str(exc))]) from None
        issues = list(kind.check(study))
        if issues:
            raise StudyConfigError(source, issues)
    return study


def study_to_yaml(study: Study) -> str:
    """The resolved study config (every default written out) as YAML."""
    data = study.config.model_dump(mode="json")
    data["options"] = study.options.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)


def load_study(uri: str) -> Study:
    """A created study; InputError when there is none at uri."""
    layout = StudyLayout(uri)
    try:
        text = storage.read_text(layout.config)
    except FileNotFoundError:
        raise InputError(f"no study at {layout.root} (no study.yaml): create it with `sbi-core study --create "
                         f"--study {layout.root} --config FILE`") from None
    from sbi_core.config import parse_yaml

    return validate_study(parse_yaml(text, layout.config), layout.config, layout, checks=False)
