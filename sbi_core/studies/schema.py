"""The study config's JSON schema, shipped as `sbi_core/schema/study-v1.json` (a test keeps the two identical):
`study` is the common section (`options.StudyConfig`), `kinds` the options schema of every built-in kind.
The Airflow trigger forms of the study DAGs are built from it (`operators/params.py`)."""

from __future__ import annotations

from typing import Any

from sbi_core.studies.kinds import KINDS, get_kind
from sbi_core.studies.options import StudyConfig

__all__ = ["SCHEMA_ID", "study_schema"]

SCHEMA_ID = "https://airflow-nsbi/schema/study-v1.json"


def study_schema() -> dict[str, Any]:
    """{"$id", "study": the common section's schema, "kinds": {kind: its options' schema}}."""
    return {"$id": SCHEMA_ID, "study": StudyConfig.model_json_schema(),
            "kinds": {name: get_kind(name).options.model_json_schema() for name in sorted(KINDS)}}
