"""The learning/inference contract file: round trip, shape checks, chunks and joins."""

from __future__ import annotations

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
        arrays(reference="nope")
    with pytest.raises(ValueError, match="xsec"):
        arrays(xsec=np.array([1.0, -2.0, 3.0]))


def test_join_refuses_another_model_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match="part 1"):
        concatenate([arrays(), arrays(xsec=np.array([1.0, 2.0, 4.0]))])
    (tmp_path / "x.h5").write_bytes(b"")
    import h5py

    with h5py.File(tmp_path / "y.h5", "w") as f:
        f.attrs["format"] = "sbi-events"
    with pytest.raises(InputError, match="y.h5.*not an sbi-likelihood"):
        read_arrays(tmp_path / "y.h5")
