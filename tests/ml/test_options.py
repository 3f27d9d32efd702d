"""The `training:` config section and the network plan configure and derive report."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from sbi_core import steps
from sbi_core.analysis import validate_analysis as validate_config
from sbi_core.config_base import ConfigSection
from sbi_core.errors import ConfigError
from sbi_core.ml.options import KNOWN_METHODS, TrainingConfig
from sbi_core.ml.plan import training_plan
from tests.conftest import BENCHMARK_CONFIG, SMALL


def raw() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(BENCHMARK_CONFIG.read_text()))


def with_training(**training: Any) -> dict[str, Any]:
    data = raw()
    data["training"] = training
    return data


def issues(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate_config(data, "t.yaml")
    return info.value.issues


def test_section_is_optional_and_defaults_are_the_documented_ones():
    data = raw()
    del data["training"]
    t = validate_config(data).training
    assert t == TrainingConfig()
    assert t.methods == ["alices", "benchmark_ratio"] and t.members == 3 and t.min_members == 1
    assert t.variations and t.seed == 0 and t.device == "auto" and t.alpha == 1.0
    assert (t.samples.train, t.samples.validation_fraction, t.samples.test) == (20000, 0.2, 5000)
    assert (t.samples.theta0, t.samples.n_thetas, t.samples.theta_fixed) == ("prior", 100, None)
    assert t.network.hidden == [64, 64] and t.network.activation == "tanh"
    o = t.optimizer
    assert (o.epochs, o.batch_size, o.learning_rate, o.learning_rate_final) == (30, 256, 1e-3, 1e-4)
    assert (o.weight_decay, o.clip_grad_norm, o.patience) == (0.0, 10.0, 5)
    # the shipped config writes the section out with the defaults
    assert validate_config(raw()).training == TrainingConfig()


def test_training_sections_share_the_config_base_and_refuse_coerced_scalars():
    assert all(issubclass(type(getattr(TrainingConfig(), f)), ConfigSection)
               for f in ("samples", "network", "optimizer"))
    found = issues(with_training(members="3"))
    assert [p for p, _ in found] == ["training.members"]


def test_unknown_method_names_the_item():
    found = issues(with_training(methods=["alices", "alicse"]))
    assert [p for p, _ in found] == ["training.methods[1]"]
    assert "alicse" in found[0][1] and "benchmark_ratio" in found[0][1]


def test_known_methods_are_the_brief_ones():
    assert set(KNOWN_METHODS) == {"carl", "rolr", "rascal", "alice", "alices", "sally", "benchmark_ratio"}


@pytest.mark.parametrize(
    ("training", "path"),
    [
        ({"methods": []}, "training.methods"),
        ({"methods": ["carl", "carl"]}, "training.methods"),
        ({"members": 0}, "training.members"),
        ({"members": 101}, "training.members"),
        ({"members": 2, "min_members": 3}, "training"),
        ({"device": "tpu"}, "training.device"),
        ({"samples": {"validation_fraction": 1.0}}, "training.samples.validation_fraction"),
        ({"samples": {"theta0": "posterior"}}, "training.samples.theta0"),
        ({"samples": {"theta_fixed": {"cW": 0.1}}}, "training.samples.theta_fixed"),
        ({"samples": {"theta_fixed": {"cW": 0.1, "cHW": 0.0, "cX": 1.0}}}, "training.samples.theta_fixed"),
        ({"network": {"hidden": [64, 0]}}, "training.network.hidden"),
        ({"optimizer": {"learning_rate": 0}}, "training.optimizer.learning_rate"),
        ({"optimizer": {"epochs": 10, "patiance": 3}}, "training.optimizer.patiance"),
    ],
)
def test_bad_values_name_the_field(training, path):
    assert path in [p for p, _ in issues(with_training(**training))]


def test_benchmark_ratio_needs_a_second_benchmark():
    data = with_training(methods=["benchmark_ratio"])
    data["parameters"] = data["parameters"][:1]
    data["benchmarks"] = [{"name": "sm", "values": {"cW": 0.0}}]
    data["morphing"] = {**data.get("morphing", {}), "max_power": 0}
    assert "training.methods[0]" in [p for p, _ in issues(data)]


def test_benchmark_ratio_with_an_optimised_basis_from_the_sm_alone():
    """The recipe configs/benchmark.yaml documents: basis optimised, only the SM listed. The training checks
    run after the basis is filled, so benchmark_ratio sees the chosen benchmarks."""
    data = with_training(methods=["benchmark_ratio"])
    data["benchmarks"] = [{"name": "sm", "values": {"cW": 0.0, "cHW": 0.0}}]
    data["morphing"] = {**data.get("morphing", {}), "basis": "optimised"}
    cfg = validate_config(data, "t.yaml")
    assert len(cfg.benchmarks) == 6 and cfg.training.methods == ["benchmark_ratio"]


def test_network_count_is_heads_plus_variations_times_members():
    data = raw()
    data["training"]["members"] = 2
    data["training"]["methods"] = ["alices", "sally", "benchmark_ratio"]
    cfg = validate_config(data)
    plan = training_plan(cfg)
    # one shape systematic (energy_scale; lumi is a normalisation): 2 variations, at the reference `sm`.
    assert len(plan["networks"]["alices"]) == (1 + 2) * 2
    assert len(plan["networks"]["sally"]) == 1 * 2  # score head, no variations
    assert len(plan["networks"]["benchmark_ratio"]) == (5 + 2) * 2
    assert plan["n_networks"] == 6 + 2 + 14
    assert "benchmark_ratio-p3-nominal-m01" in plan["networks"]["benchmark_ratio"]
    assert "alices-sm-energy_scale_down-m00" in plan["networks"]["alices"]
    assert len({n for ids in plan["networks"].values() for n in ids}) == plan["n_networks"]
    data["training"]["variations"] = False
    assert training_plan(validate_config(data))["n_networks"] == 2 + 2 + 10


def test_configure_and_derive_report_methods_and_network_count(tmp_path):
    run = tmp_path / "run"
    summary = steps.configure(str(BENCHMARK_CONFIG), str(run), SMALL)
    assert summary["methods"] == ["alices", "benchmark_ratio"] and summary["n_networks"] == 30


def test_training_is_outside_the_events_hash():
    from sbi_core.config import config_hash

    a = validate_config(raw())
    b = validate_config(with_training(members=7, methods=["carl"]))
    assert config_hash(a) == config_hash(b)


def test_derive_reports_the_new_network_count(small_run, tmp_path):
    summary = steps.derive(str(small_run), str(tmp_path / "retrain"), ["training.members=5",
                                                                     "training.methods=[carl]"])
    assert summary["methods"] == ["carl"] and summary["n_networks"] == (1 + 2) * 5
