"""Config validation: every error names its field path (ConfigError.issues), overrides are literal."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sbi_core.analysis import load_analysis as load_config
from sbi_core.analysis import validate_analysis as validate_config
from sbi_core.config import AnalysisConfig, apply_overrides, flow_mapping, parse_yaml
from sbi_core.errors import ConfigError, InputError

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "benchmark.yaml"
PARAMS = ["cW", "cHW"]
PENTAGON = [(0.0, 0.0), (1.0, 0.0), (0.31, 0.95), (-0.81, 0.59), (-0.81, -0.59), (0.31, -0.95)]


def raw_config() -> dict[str, Any]:
    return copy.deepcopy(
        {
            "name": "cfg-test",
            "parameters": [{"name": p, "range": [-1, 1], "true_value": 0.1} for p in PARAMS],
            "benchmarks": [
                {"name": "sm" if i == 0 else f"p{i}", "values": dict(zip(PARAMS, v, strict=True))}
                for i, v in enumerate(PENTAGON)
            ],
            "observables": [{"name": f"x{i}"} for i in range(5)],
            "cuts": [{"observable": "x0", "min": -1.0}],
            "nuisance": [
                {"name": "lumi", "kind": "normalization", "size": 0.05},
                {"name": "energy_scale", "kind": "observable_scale", "size": 0.02},
            ],
            "simulator": {"name": "benchmark", "options": {}},
            "generation": {"events": 1000, "shards": 2, "seed": 1},
            "output": "./artifacts/test",
        }
    )


def issues_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate_config(data, "test.yaml")
    assert isinstance(info.value, InputError)
    assert info.value.source == "test.yaml"
    return info.value.issues


def paths_of(data: Any) -> list[str]:
    return [p for p, _ in issues_of(data)]


def test_base_config_is_valid() -> None:
    assert isinstance(validate_config(raw_config()), AnalysisConfig)


def test_shipped_config_loads_and_sets_every_field() -> None:
    cfg = load_config(str(SHIPPED))
    assert cfg.simulator.name == "benchmark"
    assert len(cfg.parameters) == 2 and len(cfg.benchmarks) == 6 and cfg.observable_names == [f"x{i}" for i in range(5)]
    assert cfg.generation.events == 200_000 and cfg.generation.shards == 8 and cfg.generation.seed == 1234
    assert cfg.benchmarks[0].values == {p: 0.0 for p in cfg.parameter_names}
    assert all(p.range[0] < p.true_value < p.range[1] for p in cfg.parameters if p.true_value is not None)
    raw = yaml.safe_load(SHIPPED.read_text())
    assert set(raw) == set(AnalysisConfig.model_fields)  # every top-level field is written out
    assert set(raw["generation"]) == {"events", "shards", "shards_per_group", "seed", "sampling_benchmark"}


def test_malformed_yaml_gives_the_line() -> None:
    text = "name: x\nparameters:\n  - name: a\n    range: [-1, 1\n  - name: b\n"
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "bad.yaml")
    ((path, msg),) = info.value.issues
    assert path == "" and "malformed YAML at line 5" in msg


def test_malformed_yaml_file_through_load_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngeneration: {events: 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad))
    assert "line" in info.value.issues[0][1]
    assert str(bad) in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/analysis.yaml")
    assert info.value.issues == [("", "file not found")]


def test_top_level_must_be_a_mapping() -> None:
    assert paths_of([1, 2]) == [""]


def test_unknown_simulator_lists_known_ones() -> None:
    data = raw_config()
    data["simulator"]["name"] = "madgraph"
    ((path, msg),) = issues_of(data)
    assert path == "simulator.name" and "'madgraph'" in msg and "benchmark" in msg


@pytest.mark.parametrize("events", [-5, 0])
def test_non_positive_events(events: int) -> None:
    data = raw_config()
    data["generation"]["events"] = events
    assert paths_of(data) == ["generation.events"]


def test_true_value_outside_range() -> None:
    data = raw_config()
    data["parameters"][0]["true_value"] = 3.0
    ((path, msg),) = issues_of(data)
    assert path == "parameters[0]" and "outside range" in msg


def test_misspelt_key() -> None:
    data = raw_config()
    data["generation"]["sead"] = 3
    ((path, msg),) = issues_of(data)
    assert path == "generation.sead" and "unknown key" in msg


def test_misspelt_top_level_key_reports_both_sides() -> None:
    data = raw_config()
    data["nuisances"] = data.pop("nuisance")
    assert paths_of(data) == ["nuisances"]  # nuisance is optional: only the unknown key is reported
    data = raw_config()
    data["paramters"] = data.pop("parameters")
    assert sorted(paths_of(data)) == ["parameters", "paramters"]


@pytest.mark.parametrize("size", [0.0, -0.1])
def test_non_positive_nuisance_size(size: float) -> None:
    data = raw_config()
    data["nuisance"][1]["size"] = size
    assert paths_of(data) == ["nuisance[1].size"]


def test_shape_weight_refused_by_the_benchmark_simulator() -> None:
    data = raw_config()
    data["nuisance"].append({"name": "pdf", "kind": "shape_weight", "size": 0.1})
    ((path, msg),) = issues_of(data)
    assert path == "nuisance[2].kind" and "shape_weight" in msg and "not supported" in msg


def test_cut_on_unknown_observable() -> None:
    data = raw_config()
    data["cuts"].append({"observable": "pt", "max": 3.0})
    ((path, msg),) = issues_of(data)
    assert path == "cuts[1].observable" and "'pt'" in msg


def test_cut_needs_a_bound() -> None:
    data = raw_config()
    data["cuts"][0] = {"observable": "x0"}
    assert paths_of(data) == ["cuts[0]"]


def test_unknown_sampling_benchmark() -> None:
    data = raw_config()
    data["generation"]["sampling_benchmark"] = "bsm"
    assert paths_of(data) == ["generation.sampling_benchmark"]


# ---------------------------------------------------------------- the benchmark simulator's own checks
def test_unknown_simulator_option() -> None:
    data = raw_config()
    data["simulator"]["options"] = {"model_sed": 3}
    ((path, msg),) = issues_of(data)
    assert path == "simulator.options.model_sed" and "unknown key" in msg


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"dimensions": 3}, "simulator.options.dimensions"),
        ({"sm_cross_section": -1.0}, "simulator.options.sm_cross_section"),
        ({"detector_resolution": [0.1, 0.2]}, "simulator.options"),
        ({"detector_resolution": 0.0}, "simulator.options"),
        ({"detector_correlation": -0.5}, "simulator.options"),
    ],
)
def test_bad_simulator_option_values(options: dict[str, Any], path: str) -> None:
    data = raw_config()
    data["simulator"]["options"] = options
    assert paths_of(data) == [path]


def test_observable_not_provided() -> None:
    data = raw_config()
    data["observables"].append({"name": "x5"})
    ((path, msg),) = issues_of(data)
    assert path == "observables[5].name" and "x5" in msg
    data["simulator"]["options"] = {"dimensions": 6}  # ... unless the simulator has 6 dimensions
    validate_config(data)


def test_wrong_number_of_benchmarks() -> None:
    data = raw_config()
    data["benchmarks"].pop()
    ((path, msg),) = issues_of(data)
    assert path == "benchmarks" and "5 benchmarks for 6 morphing components" in msg and "optimised" in msg


def test_singular_morphing_basis() -> None:
    data = raw_config()
    data["benchmarks"][5]["values"] = dict(data["benchmarks"][4]["values"])
    ((path, msg),) = issues_of(data)
    assert path == "benchmarks" and "condition number" in msg


def test_observable_scale_size_one_refused() -> None:
    data = raw_config()
    data["nuisance"][1]["size"] = 1.0
    assert paths_of(data) == ["nuisance[1].size"]


# ---------------------------------------------------------------- overrides
def test_override_events() -> None:
    cfg = validate_config(apply_overrides(raw_config(), ["generation.events=1000", "parameters[1].true_value=-0.5"]))
    assert cfg.generation.events == 1000 and isinstance(cfg.generation.events, int)
    assert cfg.parameters[1].true_value == -0.5


def test_override_string_with_shell_metacharacters_is_byte_identical() -> None:
    value = 'a; rm -rf $HOME "x"'
    data = apply_overrides(raw_config(), [f"name={value}"])
    assert data["name"] == value
    assert validate_config(data).name == value


def test_flow_mapping_overrides_a_mapping_field_exactly() -> None:
    point = {"cW": -0.7897241234567891, "cHW": 0.1 + 0.2}  # floats whose short forms would not read back
    sets = ["training.samples.theta0=fixed", f"training.samples.theta_fixed={flow_mapping(point)}"]
    cfg = validate_config(apply_overrides(raw_config(), sets))
    assert cfg.training.samples.theta_fixed == point


def test_override_leaves_the_input_untouched() -> None:
    data = raw_config()
    apply_overrides(data, ["generation.events=7"])
    assert data["generation"]["events"] == 1000


def test_override_unknown_path() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(raw_config(), ["generaton.events=5"])
    assert info.value.issues[0][0] == "generaton"
    with pytest.raises(ConfigError) as info:
        apply_overrides(raw_config(), ["parameters[7].true_value=0"])
    assert info.value.issues[0][0] == "parameters[7]"


def test_override_without_equals() -> None:
    with pytest.raises(ConfigError, match="expected PATH=VALUE"):
        apply_overrides(raw_config(), ["generation.events"])


def test_load_config_applies_overrides_before_validation(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(raw_config()))
    cfg = load_config(str(path), ["generation.events=1000", "generation.shards=4"])
    assert (cfg.generation.events, cfg.generation.shards) == (1000, 4)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), ["generation.events=-1"])
    assert [p for p, _ in info.value.issues] == ["generation.events"]


# ---------------------------------------------------------------- gaps found in review, now fixed
@pytest.mark.parametrize("value", ["yes", "2024", "#tag", "null"])
def test_override_string_field_with_yaml_looking_value(value: str) -> None:
    assert validate_config(apply_overrides(raw_config(), [f"name={value}"])).name == value


def test_nan_cut_bound_refused() -> None:
    data = raw_config()
    data["cuts"][0]["min"] = float("nan")
    assert paths_of(data) == ["cuts[0].min"]


def test_duplicate_yaml_key_refused() -> None:
    with pytest.raises(ConfigError):
        parse_yaml("generation: {events: 10, shards: 1}\ngeneration: {events: 20, shards: 1}\n", "dup.yaml")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("generation", "seed"), True, "generation.seed"),
        (("generation", "events"), "1000", "generation.events"),
        (("nuisance", 0, "size"), "0.05", "nuisance[0].size"),
        (("parameters", 0, "true_value"), False, "parameters[0].true_value"),
        (("parameters", 0, "range"), ["-1", 1], "parameters[0].range"),
        (("simulator", "options", "dimensions"), "5", "simulator.options.dimensions"),
    ],
)
def test_coerced_scalars_are_refused_with_the_field_named(path: tuple, value: Any, field: str) -> None:
    data = raw_config()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    ((where, msg),) = issues_of(data)
    assert where == field and "expected" in msg


def test_lists_still_fill_tuples_and_integers_fill_floats() -> None:
    data = raw_config()
    data["parameters"][0]["range"] = [-2, 2]
    data["nuisance"][0]["size"] = 1
    cfg = validate_config(data)
    assert cfg.parameters[0].range == (-2.0, 2.0) and cfg.nuisance[0].size == 1.0


def test_the_config_module_imports_no_physics() -> None:
    import subprocess
    import sys

    code = "import sys, sbi_core.config; print(sorted(m for m in sys.modules if m.startswith('sbi_core.physics')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_overrides_reach_a_section_the_file_leaves_at_its_defaults() -> None:
    data = raw_config()
    data.pop("training", None)
    cfg = validate_config(apply_overrides(data, ["training.members=2", "inference.toys.n=5"]))
    assert cfg.training.members == 2 and cfg.inference.toys.n == 5
    with pytest.raises(ConfigError, match="training.nope"):
        validate_config(apply_overrides(data, ["training.nope.x=1"]))
