"""The trigger form: `Param`s built from the analysis config's JSON schema, so titles and help match sbi_core.

Reads `sbi_core/schema/analysis-v1.json` (found without importing sbi_core) and lists the shipped
config names: two small local reads, cheap enough for DAG parse time.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from airflow.sdk import Param

from operators import settings

SCHEMA_FILE = "schema/analysis-v1.json"
DEFAULT_CONFIG = "benchmark"


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
    """The schema of a field given as `section.field`, following `$ref`s into `$defs`."""
    node = schema
    for name in dotted.split("."):
        node = _deref(schema, node)["properties"][name]
    return _deref(schema, node)


def shipped_configs(directory: Path | None = None) -> list[str]:
    """Names (file stems) of the analysis configs offered in the form."""
    directory = directory or settings.shipped_configs_dir()
    names = sorted(p.stem for p in directory.glob("*.yaml"))
    if not names:
        raise FileNotFoundError(f"no analysis configs (*.yaml) in {directory}")
    return names


def trigger_params(schema: dict[str, Any] | None = None, configs: list[str] | None = None) -> dict[str, Param]:
    """Params of the sbi_pipeline trigger form: which config, and what to override in it."""
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
        "events": _override(schema, "generation.events"),
        "shards": _override(schema, "generation.shards"),
        "seed": _override(schema, "generation.seed"),
        "set": Param(
            None,
            type=["null", "array"],  # nullable, so the form does not mark it required
            items={"type": "string"},
            title="More overrides",
            description="PATH=VALUE, one per line (e.g. generation.shards_per_group=8); applied after the above.",
            section="Overrides",
        ),
    }


def _override(schema: dict[str, Any], dotted: str) -> Param:
    """An optional integer override with the field's own title, help text and limits; empty or 0 keeps it."""
    field = schema_field(schema, dotted)
    limits = {k: v for k, v in field.items() if k in ("maximum", "exclusiveMaximum")}
    return Param(
        None,
        type=["null", "integer"],
        minimum=0,
        **limits,
        title=field.get("title", dotted),
        description=f"{field.get('description', '')} Empty or 0 keeps the config's value.".strip(),
        section="Overrides",
    )


def _deref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Resolve a local `$ref` (pydantic writes `#/$defs/Name`)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
