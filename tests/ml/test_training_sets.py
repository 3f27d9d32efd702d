"""The training-set file contract: round trip, byte-identical rewrites, shape checks, network ids."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sbi_core.data.training_sets import (
    NetworkSpec,
    TrainingSet,
    network_id,
    parse_network_id,
    read_training_set,
    write_training_set,
)
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout


def make_set(n: int = 50, o: int = 3, p: int = 2, seed: int = 0) -> TrainingSet:
    rng = np.random.default_rng(seed)
    f = np.float32
    return TrainingSet(
        x=rng.normal(size=(n, o)).astype(f), theta0=rng.uniform(-1, 1, (n, p)).astype(f),
        theta1=np.zeros((n, p), f), y=(np.arange(n) % 2).astype(f), log_r_xz=rng.normal(size=n).astype(f),
        t_xz=rng.normal(size=(n, p)).astype(f), event=rng.integers(0, 1000, n), method="alices", head="theta",
        variation="nominal", split="train", seed=3, config_hash="abc", observables=("x0", "x1", "x2"),
        parameters=("cW", "cHW"), attrs={"xsec_theta1": 4.5, "note": "t"},
    )


def test_round_trip_and_identical_bytes(tmp_path):
    ts = make_set()
    write_training_set(tmp_path / "a.h5", ts)
    write_training_set(tmp_path / "b.h5", ts)
    back = read_training_set(tmp_path / "a.h5")
    for name in ("x", "theta0", "theta1", "y", "log_r_xz", "t_xz", "event"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ts, name))
    assert dataclasses.replace(back, **{k: getattr(ts, k) for k in ("x", "theta0", "theta1", "y", "log_r_xz",
                                                                      "t_xz", "event")}) == ts
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("x", np.zeros((50, 2), np.float32), "TrainingSet.x"),
        ("x", np.zeros((50, 3), np.float64), "TrainingSet.x"),
        ("theta0", np.zeros((50, 3), np.float32), "TrainingSet.theta0"),
        ("y", np.full(50, 2, np.float32), "labels"),
        ("t_xz", np.zeros((49, 2), np.float32), "TrainingSet.t_xz"),
        ("event", np.zeros(50, np.int32), "TrainingSet.event"),
        ("log_r_xz", np.full(50, np.nan, np.float32), "finite"),
        ("split", "training", "split"),
    ],
)
def test_shapes_and_values_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(make_set(), **{field: value})


def test_unavailable_joint_ratio_is_nan_and_flagged(tmp_path):
    ts = dataclasses.replace(make_set(), log_r_xz=np.full(50, np.nan, np.float32), has_joint_ratio=False)
    write_training_set(tmp_path / "v.h5", ts)
    back = read_training_set(tmp_path / "v.h5")
    assert not back.has_joint_ratio and np.isnan(back.log_r_xz).all()
    with pytest.raises(ValueError, match="NaN"):
        dataclasses.replace(make_set(), has_joint_ratio=False)


def test_reading_a_foreign_file_names_it(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "sbi-events"
    with pytest.raises(InputError, match="other.h5"):
        read_training_set(tmp_path / "other.h5")


def test_network_ids_round_trip():
    nid = network_id("benchmark_ratio", "p3", "energy_scale_up", 4)
    assert nid == "benchmark_ratio-p3-energy_scale_up-m04"
    assert parse_network_id(nid) == NetworkSpec("benchmark_ratio", "p3", "energy_scale_up", 4)
    assert parse_network_id(nid).is_variation and not parse_network_id("alices-theta-nominal-m00").is_variation
    assert parse_network_id("carl-theta-nominal-m12").member == 12


@pytest.mark.parametrize("bad", ["alices-theta-nominal", "alicse-theta-nominal-m00", "alices-theta-nominal-00",
                                 "alices-th.eta-nominal-m00", ""])
def test_bad_network_ids_are_input_errors_naming_them(bad):
    with pytest.raises(InputError, match="network"):
        parse_network_id(bad)


def test_layout_paths(tmp_path):
    layout = RunLayout(str(tmp_path))
    assert layout.training_set("alices", "theta", "nominal", "val").endswith("samples/alices/theta/nominal/val.h5")
    assert layout.samples_manifest("carl").endswith("samples/carl/manifest.json")
