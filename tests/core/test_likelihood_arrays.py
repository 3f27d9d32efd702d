"""The learning/inference contract file (version 2, version 1 still read): round trip, shape checks, chunks,
joins, and bad files refused naming the file and the array."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sbi_core.data.likelihood_arrays import LikelihoodArrays, concatenate, iter_event_chunks, read_arrays, write_arrays
from sbi_core.errors import InputError


def arrays(n: int = 10, seed: int = 0, **over) -> LikelihoodArrays:
    rng = np.random.default_rng(seed)
    fields = dict(
        source="exact", parameters=["a"], benchmarks=["b0", "b1", "b2"],
        benchmark_values=np.array([[0.0], [1.0], [-1.0]]), reference="b0",
        morphing_components=np.array([[0], [1], [2]]), morphing_matrix=np.eye(3),
        nuisance=["lumi"], nuisance_kinds=["normalization"], nuisance_sizes=np.array([0.05]),
        xsec=np.array([1.0, 2.0, 3.0]), xsec_var=np.ones((1, 2, 3)),
        log_ratio=rng.normal(size=(n, 3)), log_ratio_var=rng.normal(size=(n, 1, 2)), weight=np.ones(n),
        config_hash="abc", meta={"dataset": "pseudo"},
    )
    fields.update(over)
    return LikelihoodArrays(**fields)


def test_round_trip_and_chunks(tmp_path):
    a = arrays(25)
    write_arrays(tmp_path / "l.h5", a, chunk_rows=8)
    b = read_arrays(tmp_path / "l.h5")
    assert b.parameters == a.parameters and b.benchmarks == a.benchmarks and b.meta == {"dataset": "pseudo"}
    np.testing.assert_array_equal(b.log_ratio, a.log_ratio)
    np.testing.assert_array_equal(b.log_ratio_var, a.log_ratio_var)
    assert b.log_ratio_std is None
    chunks = list(iter_event_chunks(tmp_path / "l.h5", 10))
    assert [c.n_events for c in chunks] == [10, 10, 5]
    np.testing.assert_array_equal(concatenate(chunks).log_ratio, a.log_ratio)


def test_shapes_are_checked_and_named():
    with pytest.raises(ValueError, match="log_ratio_var"):
        arrays(log_ratio_var=np.zeros((10, 2, 2)))
    with pytest.raises(ValueError, match="reference"):
        arrays(reference="")
    with pytest.raises(ValueError, match="xsec"):
        arrays(xsec=np.array([1.0, -2.0, 3.0]))


def test_join_refuses_another_model_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match="part 1"):
        concatenate([arrays(), arrays(xsec=np.array([1.0, 2.0, 4.0]))])
    (tmp_path / "x.h5").write_bytes(b"")
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f.attrs["format"] = "sbi-events"
    with pytest.raises(InputError, match="y.h5.*not an sbi-likelihood"):
        read_arrays(tmp_path / "y.h5")


def _two_samples(n: int = 40):
    from sbi_core.inference.synthetic import two_sample_arrays

    return two_sample_arrays(n, truth=(0.3, -0.2), seed=2)


def test_version_2_round_trip_keeps_samples_modifiers_and_aux(tmp_path):
    from dataclasses import replace

    a = replace(_two_samples(), aux=np.array([0.5, -1.0, 0.25]))
    write_arrays(tmp_path / "v2.h5", a, chunk_rows=16)
    with h5py.File(tmp_path / "v2.h5") as f:
        assert f.attrs["format_version"] == 2 and f["events/log_ratio_var"].shape == (40, 3, 2, 2)
    b = read_arrays(tmp_path / "v2.h5")
    assert b.samples == ["signal", "background"] and b.constraints == ["gaussian"] * 3
    np.testing.assert_array_equal(b.benchmark_sample, [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(b.modifier_mask, a.modifier_mask)
    np.testing.assert_array_equal(b.aux, [0.5, -1.0, 0.25])
    np.testing.assert_array_equal(b.log_ratio_var, a.log_ratio_var)
    assert np.isnan(b.benchmark_values[-1]).all()  # the background column is no point of parameter space
    assert concatenate(list(iter_event_chunks(tmp_path / "v2.h5", 16))).same_model(a)


def _write_v1(path, a) -> None:
    """A version-1 file as wave 2 wrote it: no samples, (n, K, 2) variations, no aux."""
    with h5py.File(path, "w") as f:
        f.attrs.update(format="sbi-likelihood", format_version=1, source="exact", reference="b0", config_hash="",
                       n_events=a.n_events)
        for name, value in (("parameters/names", a.parameters), ("benchmarks/names", a.benchmarks),
                            ("nuisance/names", a.nuisance), ("nuisance/kinds", a.nuisance_kinds)):
            f[name] = np.array([v.encode() for v in value], dtype="S256")
        f["benchmarks/values"], f["morphing/components"] = a.benchmark_values, a.morphing_components
        f["morphing/morphing_matrix"], f["nuisance/sizes"] = a.morphing_matrix, a.nuisance_sizes
        f["xsec/benchmarks"], f["xsec/variations"] = a.xsec, a.xsec_var
        f["events/log_ratio"], f["events/weight"] = a.log_ratio, a.weight
        f["events/log_ratio_var"] = a.log_ratio_var[..., 0]


def test_version_1_files_read_as_one_sample(tmp_path):
    a = arrays(12)
    _write_v1(tmp_path / "v1.h5", a)
    b = read_arrays(tmp_path / "v1.h5")
    assert b.samples == ["total"] and b.log_ratio_var.shape == (12, 1, 2, 1)
    np.testing.assert_array_equal(b.log_ratio_var, a.log_ratio_var)
    assert b.modifier_mask.all() and not b.aux.any()
    from sbi_core.inference.nll import NLLModel  # the fit reads a version-1 file as the model it always was

    p = np.array([0.3, -0.4])
    v1 = NLLModel.from_file(tmp_path / "v1.h5", luminosity=2.0, chunk_rows=4).value(p)
    assert v1 == NLLModel.from_arrays(a, luminosity=2.0, chunk_rows=4).value(p)


def test_bad_version_2_files_are_refused_naming_file_and_array(tmp_path):
    a = _two_samples()
    for name in ("nuisance/samples", "samples/names", "nuisance/aux"):
        path = tmp_path / f"missing_{name.replace('/', '_')}.h5"
        write_arrays(path, a)
        with h5py.File(path, "a") as f:
            del f[name]
        with pytest.raises(InputError, match=rf"{path.name}: format_version 2 file lacks {name}"):
            read_arrays(path)
    path = tmp_path / "shape.h5"
    write_arrays(path, a)
    with h5py.File(path, "a") as f:  # the v1 shape in a v2 file: one sample's worth of variations
        v = f["events/log_ratio_var"][()]
        del f["events/log_ratio_var"]
        f["events/log_ratio_var"] = v[..., 0]
    with pytest.raises(InputError, match=r"shape.h5: events/log_ratio_var: expected floating \(40, 3, 2, 2\)"):
        read_arrays(path)
    with h5py.File(path, "a") as f:
        del f["events/log_ratio_var"]
        f["events/log_ratio_var"] = v
        f["benchmarks/sample"][-1] = 5
    with pytest.raises(InputError, match=r"shape.h5: benchmarks/sample: sample indices must lie in 0..1"):
        read_arrays(path)


def test_a_nuisance_must_not_touch_a_sample_it_does_not_act_on():
    from dataclasses import replace

    a = _two_samples()
    lrv = a.log_ratio_var.copy()
    lrv[:, 1, :, 0] = 0.01  # bkg_norm on the signal
    with pytest.raises(ValueError, match="'bkg_norm' does not act on sample 'signal'"):
        replace(a, log_ratio_var=lrv)
    with pytest.raises(ValueError, match="constraint"):
        replace(a, constraints=["gaussian", "poisson", "gaussian"])
