"""The trigger forms are built from the config schema: each knob takes its field's title, help, type and limits,
and a knob whose field is not in the schema (a section not there yet) is left out."""

from __future__ import annotations

import copy
import json

import pytest
from airflow.sdk.exceptions import ParamValidationError

from operators.params import (
    GENERATION_KNOBS,
    INFERENCE_KNOBS,
    KEEP_LABEL,
    TRAINING_KNOBS,
    derive_params,
    has_field,
    knob_params,
    override_items,
    pipeline_params,
    trigger_params,
    unknown_conf_keys,
)
from tests.conftest import REPO

SHIPPED = json.loads((REPO / "sbi_core" / "schema" / "analysis-v1.json").read_text())


def with_stage_sections(schema: dict) -> dict:
    """The shipped schema plus `training` and `inference` sections shaped as pydantic writes them (refs into
    $defs, `X | None` as anyOf, Literals as enums), as the learning and inference branches add them."""
    schema = copy.deepcopy(schema)
    defs = schema["$defs"]
    defs["Optimizer"] = {"type": "object", "properties": {
        "epochs": {"type": "integer", "minimum": 1, "maximum": 10000, "title": "Epochs",
                   "description": "Passes over the training set."}}}
    defs["Samples"] = {"type": "object", "properties": {
        "train": {"type": "integer", "exclusiveMinimum": 0, "title": "Training samples", "description": "Per net."}}}
    defs["Training"] = {"type": "object", "properties": {
        "methods": {"type": "array", "items": {"type": "string"}, "title": "Methods", "description": "Estimators."},
        "members": {"type": "integer", "minimum": 1, "maximum": 100, "title": "Ensemble members",
                    "description": "Networks per ensemble."},
        "device": {"enum": ["auto", "cpu", "cuda"], "type": "string", "title": "Device", "description": "Where."},
        "optimizer": {"$ref": "#/$defs/Optimizer"},
        "samples": {"$ref": "#/$defs/Samples"}}}
    defs["Toys"] = {"type": "object", "properties": {
        "n": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}], "title": "Toys",
              "description": "Pseudo-experiments."}}}
    defs["Inference"] = {"type": "object", "properties": {
        "luminosity": {"type": "number", "exclusiveMinimum": 0, "title": "Luminosity", "description": "In 1/pb."},
        "toys": {"$ref": "#/$defs/Toys"}}}
    schema["properties"]["training"] = {"$ref": "#/$defs/Training", "title": "Training"}
    schema["properties"]["inference"] = {"$ref": "#/$defs/Inference", "title": "Inference"}
    return schema


FULL = with_stage_sections(SHIPPED)


def test_knobs_of_sections_not_in_the_schema_are_left_out():
    present = {k.name for k in (*TRAINING_KNOBS, *INFERENCE_KNOBS) if has_field(SHIPPED, k.path)}
    form = pipeline_params(SHIPPED, ["benchmark"])
    assert {k.name for k in (*TRAINING_KNOBS, *INFERENCE_KNOBS)} & set(form) == present
    assert {"events", "shards", "seed", "config", "until", "set"} <= set(form)


def test_knobs_take_title_help_type_and_limits_from_their_field():
    params = knob_params(FULL, (*TRAINING_KNOBS, *INFERENCE_KNOBS))
    assert set(params) == {"methods", "members", "device", "epochs", "train_samples", "luminosity", "toys"}
    members = params["members"]
    assert members.schema["title"] == "Ensemble members" and members.description.startswith("Networks per ensemble.")
    assert members.schema["section"] == "Training"
    assert (members.schema["minimum"], members.schema["maximum"]) == (1, 100)
    assert params["epochs"].schema["title"] == "Epochs"  # through $ref -> $defs
    assert params["luminosity"].schema["type"] == ["null", "number"]
    assert params["toys"].schema["minimum"] == 0  # anyOf [integer, null] unwrapped
    assert params["device"].schema["enum"] == [None, "auto", "cpu", "cuda"]


@pytest.mark.parametrize("name, value, ok", [
    ("members", None, True), ("members", 5, True), ("members", 0, False), ("members", 101, False),
    ("luminosity", 150.5, True), ("luminosity", 0, False), ("device", "cuda", True), ("device", "tpu", False),
    ("methods", ["alices", "sally"], True), ("methods", "alices", False), ("toys", 0, True), ("toys", -1, False),
    ("train_samples", 0, False),
])
def test_form_values_are_validated_like_the_config(name, value, ok):
    param = knob_params(FULL, (*TRAINING_KNOBS, *INFERENCE_KNOBS))[name]
    if ok:
        assert param.resolve(value) == value
    else:
        with pytest.raises(ParamValidationError):
            param.resolve(value)


def test_each_derived_form_offers_only_its_own_stage():
    train, infer = derive_params("training", FULL), derive_params("inference", FULL)
    assert {"members", "epochs", "methods"} <= set(train) and not {"luminosity", "toys"} & set(train)
    assert {"luminosity", "toys"} <= set(infer) and not {"members", "epochs"} & set(infer)
    pipeline = pipeline_params(FULL, ["benchmark"])
    assert {"events", "members", "epochs", "luminosity", "toys"} <= set(pipeline)


def test_overrides_keep_the_config_for_empty_fields_and_format_values_as_set_reads_them():
    params = {"events": None, "shards": 4, "seed": 0, "members": 0, "methods": ["alices"], "device": "",
              "luminosity": 150.5, "toys": 0, "train_samples": None}
    knobs = (*GENERATION_KNOBS, *TRAINING_KNOBS, *INFERENCE_KNOBS)
    assert override_items(params, knobs) == [
        "generation.shards=4", "generation.seed=0",  # empty events keeps the config's; seed 0 is a seed
        'training.methods=["alices"]', "training.members=0",  # 0 is a value: the config refuses it
        "inference.luminosity=150.5", "inference.toys.n=0",
    ]


@pytest.mark.parametrize("name, value, ok", [
    ("events", -5, False), ("events", 0, False), ("events", 1, True), ("events", None, True), ("shards", 0, False),
    ("seed", 0, True), ("seed", -1, False),
])
def test_events_shards_and_seed_take_the_schemas_limits(name, value, ok):
    """Events = -5 (or 0) is refused when the run is triggered, not read as "the config's value"."""
    param = trigger_params(SHIPPED, ["benchmark"])[name]
    if ok:
        assert param.resolve(value) == value
    else:
        with pytest.raises(ParamValidationError):
            param.resolve(value)


def test_an_empty_choice_shows_as_the_configs_value_not_null():
    device = knob_params(FULL, TRAINING_KNOBS)["device"]
    assert device.schema["enum"][0] is None and device.schema["values_display"] == {"null": KEEP_LABEL}
    assert "null" not in KEEP_LABEL


def test_a_misspelt_conf_key_is_named_with_a_suggestion():
    form = pipeline_params(FULL, ["benchmark"])
    message = unknown_conf_keys({"sead": 7, "events": 10}, form)
    assert message.startswith("unknown key(s) in the run's conf: 'sead' (did you mean 'seed'?)")
    assert unknown_conf_keys({"seed": 7, "publish": True}, form) is None


def test_the_data_stage_form_is_the_first_part_of_the_pipeline_form():
    data, pipeline = trigger_params(FULL, ["benchmark"]), pipeline_params(FULL, ["benchmark"])
    assert list(data) == ["config", "config_uri", "events", "shards", "seed", "set"]  # sbi_ingest's form
    assert list(pipeline)[:3] == ["config", "config_uri", "until"] and list(pipeline)[-1] == "set"
    assert set(pipeline) - set(data) == {"until", "publish", "methods", "members", "device", "epochs",
                                         "train_samples", "luminosity", "toys"}
