"""The trigger forms: `Param`s built from the analysis config's JSON schema, so titles and help match sbi_core.

What to use when:
- `trigger_params()`: the data stage's form (a config and the generation overrides; sbi_ingest's too).
- `pipeline_params()`: sbi_pipeline's form: that, "Run up to", and the headline knobs of every stage.
- `derive_params(stage)`: sbi_train's / sbi_infer's form (an existing run, the knobs of that stage).
- `override_items(params, knobs)`: the `PATH=VALUE` overrides a form's values stand for.
- `unknown_conf_keys(conf, params)`: the first task of every DAG refuses a conf key the form does not have.

A knob (`Knob`) is a form field for one config path. Its title, help, type and limits come from the
schema (so Events = -5 or 0 is refused when the run is triggered; an empty field keeps the config's value,
and an empty choice shows as "(the config's value)"); a knob whose path is not in the schema (a section
that is not there yet) is left out of the form.
Reads `sbi_core/schema/analysis-v1.json` (found without importing sbi_core) and lists the shipped config
names: two small local reads, cheap enough for DAG parse time.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from functools import lru_cache
from pathlib import Path
from typing import Any

from airflow.sdk import Param

from operators import settings

SCHEMA_FILE = "schema/analysis-v1.json"
DEFAULT_CONFIG = "benchmark"
#: sbi_pipeline's stages, in order; the form's "Run up to" picks the last one to run.
STAGES = ("events", "training", "inference")
KEEP = (None, "")  # a knob left at one of these keeps the config's value


#: What an empty choice field shows (the UI would show "null").
KEEP_LABEL = "(the config's value)"


@dataclass(frozen=True)
class Knob:
    """A form field that overrides one config path; empty keeps the config's value."""

    name: str
    path: str
    section: str


GENERATION_KNOBS = (
    Knob("events", "generation.events", "Overrides"),
    Knob("shards", "generation.shards", "Overrides"),
    Knob("seed", "generation.seed", "Overrides"),
)
TRAINING_KNOBS = (
    Knob("methods", "training.methods", "Training"),
    Knob("members", "training.members", "Training"),
    Knob("epochs", "training.optimizer.epochs", "Training"),
    Knob("train_samples", "training.samples.train", "Training"),
    Knob("device", "training.device", "Training"),
)
INFERENCE_KNOBS = (
    Knob("source", "inference.source", "Inference"),
    Knob("luminosity", "inference.luminosity", "Inference"),
    Knob("dataset", "inference.dataset.kind", "Inference"),
    Knob("scan_points", "inference.scan.points", "Inference"),
    Knob("toys", "inference.toys.n", "Inference"),
)


def schema_path() -> Path:
    """Where the installed sbi_core keeps its config schema."""
    spec = importlib.util.find_spec("sbi_core")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("sbi_core is not installed: cannot find the analysis config schema")
    return Path(next(iter(spec.submodule_search_locations))) / SCHEMA_FILE


@lru_cache(maxsize=1)
def analysis_schema() -> dict[str, Any]:
    """The analysis config JSON schema (cached per process)."""
    return json.loads(schema_path().read_text())


def schema_field(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The schema of a field given as `section.field`, following `$ref`s into `$defs`; KeyError if absent."""
    node = schema
    for name in dotted.split("."):
        node = _deref(schema, node)["properties"][name]
    return _deref(schema, node)


def has_field(schema: dict[str, Any], dotted: str) -> bool:
    """Whether the schema knows `section.field` (sections of later stages may not be there yet)."""
    try:
        schema_field(schema, dotted)
    except (KeyError, TypeError):
        return False
    return True


def shipped_configs(directory: Path | None = None) -> list[str]:
    """Names (file stems) of the analysis configs offered in the form."""
    directory = directory or settings.shipped_configs_dir()
    names = sorted(p.stem for p in directory.glob("*.yaml"))
    if not names:
        raise FileNotFoundError(f"no analysis configs (*.yaml) in {directory}")
    return names


def trigger_params(schema: dict[str, Any] | None = None, configs: list[str] | None = None) -> dict[str, Param]:
    """Params of a data-stage trigger form: which config, and what to override in its generation."""
    schema = schema or analysis_schema()
    configs = configs or shipped_configs()
    default = DEFAULT_CONFIG if DEFAULT_CONFIG in configs else configs[0]
    return {
        "config": Param(
            default,
            type="string",
            enum=configs,
            title="Analysis config",
            description=f"A shipped config (configs/<name>.yaml). {schema.get('description', '')}".strip(),
            section="Analysis",
        ),
        "config_uri": Param(
            None,
            type=["null", "string"],
            title="Config URI (optional)",
            description="Any config file or s3:// URI; when set it replaces the choice above.",
            section="Analysis",
        ),
        **knob_params(schema, GENERATION_KNOBS),
        "set": _more_overrides("e.g. generation.shards_per_group=8"),
    }


def pipeline_params(schema: dict[str, Any] | None = None, configs: list[str] | None = None) -> dict[str, Param]:
    """Params of the sbi_pipeline trigger form: which config, how far to run, and what to override."""
    schema = schema or analysis_schema()
    data = trigger_params(schema, configs)
    until = Param(
        STAGES[-1],
        type="string",
        enum=list(STAGES),
        title="Run up to",
        description="events: simulate and combine only (train and fit later with sbi_train / sbi_infer); "
        "training: also train and evaluate the networks; inference: everything, to the fit and limits.",
        section="Analysis",
    )
    stages = knob_params(schema, (*TRAINING_KNOBS, *INFERENCE_KNOBS))
    first = {k: data.pop(k) for k in ("config", "config_uri")}
    more = data.pop("set")
    publish = Param(
        False,
        type="boolean",
        title="Publish the events",
        description="Emit the `sbi_events` asset event once the events are combined, as sbi_ingest does: where "
        "the deployment chains the stages (SBI_CHAIN_STAGES), sbi_train then starts a run on them.",
        section="Analysis",
    )
    return {**first, "until": until, "publish": publish, **data, **stages, "set": more}



def derive_params(stage: str, schema: dict[str, Any] | None = None) -> dict[str, Param]:
    """Params of sbi_train (`stage="training"`) or sbi_infer (`"inference"`): an existing run + overrides."""
    schema = schema or analysis_schema()
    knobs = {"training": TRAINING_KNOBS, "inference": INFERENCE_KNOBS}[stage]
    return {
        "source_run": Param(
            None,
            type=["null", "string"],
            title="Source run URI",
            description="An existing run with events (configured and combined), e.g. the `run` in the XCom of a "
            "sbi_pipeline run's `prepare` task. When empty, the DAG id and run id below pick it; with neither, the "
            "run named by the newest asset event of this stage's input (a sbi_ingest or sbi_train run).",
            section="Source run",
        ),
        "source_dag_id": Param(
            "sbi_pipeline",
            type="string",
            title="Source DAG",
            description="The DAG whose run made the events (its runs write under $SBI_ARTIFACT_ROOT/<dag id>/).",
            section="Source run",
        ),
        "source_run_id": Param(
            None,
            type=["null", "string"],
            title="Source run id",
            description="The run id of that DAG run, e.g. manual__2026-01-01T00:00:00+00:00.",
            section="Source run",
        ),
        **knob_params(schema, knobs),
        "set": _more_overrides(f"only {stage}.* settings: the events stay those of the source run"),
    }


def knob_params(schema: dict[str, Any], knobs: Sequence[Knob]) -> dict[str, Param]:
    """A Param per knob whose path the schema knows, with the field's title, help text and limits."""
    out = {}
    for knob in knobs:
        if has_field(schema, knob.path):
            param = _knob_param(knob, schema_field(schema, knob.path))
            if param is not None:
                out[knob.name] = param
    return out


def override_items(params: Mapping[str, Any], knobs: Sequence[Knob]) -> list[str]:
    """`PATH=VALUE` for every knob the form set (empty keeps the config's value; 0 is a value)."""
    items = []
    for knob in knobs:
        value = params.get(knob.name)
        if value in KEEP or value == []:
            continue
        items.append(f"{knob.path}={_text(value)}")
    return items


def _knob_param(knob: Knob, field: dict[str, Any]) -> Param | None:
    """An optional (nullable) Param shaped like the schema field; None for a kind of field forms do not offer."""
    branches = [b for b in field.get("anyOf", ()) if b.get("type") != "null"]
    if len(branches) == 1:  # pydantic writes `X | None` as anyOf [X, null]
        field = {**{k: v for k, v in field.items() if k != "anyOf"}, **branches[0]}
    kind = field.get("type")
    common = {
        "title": field.get("title", knob.path),
        "description": f"{field.get('description', '')} Empty keeps the config's value.".strip(),
        "section": knob.section,
    }
    if "enum" in field:
        values = [v for v in field["enum"] if isinstance(v, str | int | float)]
        return Param(None, type=["null", kind or "string"], enum=[None, *values], values_display={"null": KEEP_LABEL},
                     **common)
    if kind in ("integer", "number"):
        limits = {k: v for k, v in field.items() if k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")}
        return Param(None, type=["null", kind], **limits, **common)
    if kind in ("string", "boolean"):
        return Param(None, type=["null", kind], **common)
    if kind == "array" and (field.get("items") or {}).get("type") in ("string", "integer", "number"):
        return Param(None, type=["null", "array"], items=field["items"], **common)
    return None


def unknown_conf_keys(conf: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    """A message naming the keys of a run's conf that are not fields of the DAG's form (None when all are).

    Airflow keeps an unknown key as a param of its own and the run goes on without it; a misspelt override
    (`"sead": 7`) would be ignored silently, so the first task of each DAG refuses it with this message."""
    unknown = sorted(set(conf) - set(params))
    if not unknown:
        return None
    hints = [f"{key!r} (did you mean {close[0]!r}?)" if (close := get_close_matches(key, list(params), n=1)) else repr(key)
             for key in unknown]
    return f"unknown key(s) in the run's conf: {', '.join(hints)}; this DAG's fields are {', '.join(sorted(params))}"


def _more_overrides(example: str) -> Param:
    return Param(
        None,
        type=["null", "array"],  # nullable, so the form does not mark it required
        items={"type": "string"},
        title="More overrides",
        description=f"PATH=VALUE, one per line ({example}); applied after the fields above.",
        section="Overrides",
    )


def _text(value: Any) -> str:
    """A form value as `--set` reads it: lists as JSON flow lists, booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _deref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Resolve a local `$ref` (pydantic writes `#/$defs/Name`)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
