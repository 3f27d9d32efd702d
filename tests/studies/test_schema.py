"""The study schema shipped for the trigger forms is the code's, and every field has a title and help text."""

from __future__ import annotations

import json

from sbi_core.studies.schema import study_schema
from tests.conftest import REPO

SHIPPED = REPO / "sbi_core" / "schema" / "study-v1.json"


def test_the_shipped_study_schema_is_current():
    assert json.loads(SHIPPED.read_text()) == study_schema(), (
        "sbi_core/schema/study-v1.json is stale: regenerate with `sbi-core study --schema --indent 2`")


def test_every_study_field_has_title_and_description():
    schema = study_schema()
    models = [("study", schema["study"])]
    for kind, sub in schema["kinds"].items():
        models += [(kind, sub), *((f"{kind}.{n}", d) for n, d in sub.get("$defs", {}).items())]
    for name, model in models:
        for field, prop in model.get("properties", {}).items():
            assert prop.get("title") and prop.get("description"), f"{name}.{field}"
