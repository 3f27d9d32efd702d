"""generate and combine: determinism, order, normalisation, and the direct-chunk fast path."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sbi_core import steps
from sbi_core.data.format import SAMPLE_DATASETS, inspect_event_file, read_samples
from sbi_core.layout import RunLayout
from sbi_core.plan import choose_chunk_rows, make_plan
from tests.conftest import BENCHMARK_CONFIG, SMALL


def test_plan_sizes_groups_and_chunks():
    plan = make_plan(events=10_001, shards=4, shards_per_group=3, seed=1, config_hash="h")
    assert plan.shard_events == [2500, 2500, 2500, 2501]
    assert plan.groups == [[0, 1, 2], [3]]
    assert plan.events == 10_001 and plan.group_events(0) == 7500
    assert choose_chunk_rows(25_000) == 12_500 and 25_000 % choose_chunk_rows(25_000) == 0
    assert choose_chunk_rows(1500) == 1500
    assert choose_chunk_rows(100_003) == 4096  # prime: no divisor in range, combine decodes instead


def test_shard_is_deterministic_given_seed_and_index(tmp_path, small_run):
    """Regenerating shard 2 alone, in another run directory, gives identical arrays."""
    other = tmp_path / "again"
    steps.configure(str(BENCHMARK_CONFIG), str(other), SMALL)
    steps.generate(str(other), [2])
    a = read_samples(RunLayout(str(small_run)).shard(2))
    b = read_samples(RunLayout(str(other)).shard(2))
    for name in SAMPLE_DATASETS:
        np.testing.assert_array_equal(a[name], b[name])
    c = read_samples(RunLayout(str(small_run)).shard(1))
    assert not np.array_equal(a[name], c[name]), "different shards must use different random streams"


def test_other_seed_gives_other_events(tmp_path, small_run):
    other = tmp_path / "seed12"
    steps.configure(str(BENCHMARK_CONFIG), str(other), [*SMALL, "generation.seed=12"])
    steps.generate(str(other), [0])
    a = read_samples(RunLayout(str(small_run)).shard(0))["samples/observations"]
    b = read_samples(RunLayout(str(other)).shard(0))["samples/observations"]
    assert not np.array_equal(a, b)


def test_combined_file_holds_every_shard_in_order(small_run):
    layout = RunLayout(str(small_run))
    combined = read_samples(layout.events)
    shards = [read_samples(layout.shard(i)) for i in range(4)]
    for name in SAMPLE_DATASETS:
        np.testing.assert_array_equal(combined[name], np.concatenate([s[name] for s in shards]))
    with h5py.File(layout.events) as f:
        assert list(f.attrs["shards"]) == [0, 1, 2, 3]
        assert f.attrs["n_events"] == 6000 and f.attrs["kind"] == "combined"
        assert f.attrs["n_generated"] == sum(h5py.File(layout.shard(i)).attrs["n_generated"] for i in range(4))
        # MadMiner-compatible header travels with the events
        assert [b.decode() for b in f["benchmarks/names"][()]][0] == "sm"
        assert f["samples/weights"].shape[1] == f["benchmarks/names"].shape[0]
    info = inspect_event_file(layout.events, layout.events)
    assert info.n_events == 6000


def test_weights_estimate_the_cross_section(small_run):
    """Summed over the run, weights at each benchmark estimate the fiducial cross section (positive, finite);
    nuisance columns at the sampling benchmark carry exactly the normalisation variation."""
    layout = RunLayout(str(small_run))
    with h5py.File(layout.events) as f:
        w = f["samples/weights"][()]
        names = [b.decode() for b in f["benchmarks/names"][()]]
        sizes = dict(zip([b.decode() for b in f["nuisance_parameters/names"][()]], f["nuisance_parameters/sizes"][()], strict=True))
    sampling = names.index("sm")
    assert np.all(w[:, sampling] > 0)
    lumi = sizes["lumi"]
    np.testing.assert_allclose(w[:, names.index("lumi_up")], w[:, sampling] * (1 + lumi), rtol=1e-12)
    np.testing.assert_allclose(w[:, names.index("lumi_down")], w[:, sampling] / (1 + lumi), rtol=1e-12)
    assert np.isfinite(w).all()


def test_combine_decodes_when_chunks_do_not_align(tmp_path):
    """An uneven plan (last shard larger) forces the decode path somewhere; arrays stay identical."""
    run = tmp_path / "uneven"
    s = steps.configure(str(BENCHMARK_CONFIG), str(run), ["generation.events=4003", "generation.shards=3",
                                                           "generation.shards_per_group=3"])
    steps.generate(str(run), s["shards"])
    out = steps.combine(str(run), 0)
    layout = RunLayout(str(run))
    combined = read_samples(layout.group(0))
    for name in SAMPLE_DATASETS:
        np.testing.assert_array_equal(combined[name], np.concatenate([read_samples(layout.shard(i))[name]
                                                                      for i in range(3)]))
    assert out["n_events"] == 4003


def test_small_run_uses_direct_chunk_copy(tmp_path):
    run = tmp_path / "aligned"
    s = steps.configure(str(BENCHMARK_CONFIG), str(run), SMALL)
    steps.generate(str(run), s["shards"])
    out = steps.combine(str(run), 0)
    assert out["decoded_chunks"] == 0 and out["raw_chunks"] > 0


def test_generate_refuses_shard_outside_plan(small_run):
    from sbi_core.errors import InputError

    with pytest.raises(InputError, match="shard 9 is outside the plan"):
        steps.generate(str(small_run), [9])


def test_rerun_skips_a_finished_shard_and_redoes_a_damaged_one(tmp_path, small_run):
    """A retried batch task: shards already complete and verified are kept, anything else is rewritten."""
    run = tmp_path / "retry"
    s = steps.configure(str(BENCHMARK_CONFIG), str(run), SMALL)
    first = steps.generate(str(run), s["shards"][:2])
    assert [r["skipped"] for r in first["shards"]] == [False, False]
    layout = RunLayout(str(run))
    good = (run / "shards" / "shard-00000.h5").read_bytes()
    p = run / "shards" / "shard-00001.h5"
    with h5py.File(p) as f:
        offset = f["samples/latent"].id.get_chunk_info(0).byte_offset
    damaged = bytearray(p.read_bytes())
    damaged[offset + 50] ^= 0xFF
    p.write_bytes(bytes(damaged))
    again = steps.generate(str(run), s["shards"][:2])
    assert [r["skipped"] for r in again["shards"]] == [True, False]
    assert (run / "shards" / "shard-00000.h5").read_bytes() == good
    assert p.read_bytes() != bytes(damaged)
    reference = read_samples(RunLayout(str(small_run)).shard(1))  # same config and seed, never damaged
    for name in SAMPLE_DATASETS:
        np.testing.assert_array_equal(read_samples(layout.shard(1))[name], reference[name])
    from sbi_core.data.format import verify_complete

    verify_complete(layout.shard(1), layout.shard(1), config_hash=s["config_hash"], expected_events=1500)


def test_shard_from_another_package_version_is_regenerated(tmp_path, monkeypatch):
    run = tmp_path / "version"
    s = steps.configure(str(BENCHMARK_CONFIG), str(run), SMALL)
    steps.generate(str(run), [0])
    with h5py.File(run / "shards" / "shard-00000.h5", "r+") as f:
        f.attrs["package_version"] = "0.0.1"
    assert steps.generate(str(run), [0])["shards"][0]["skipped"] is False
    assert s["shards"] == [0, 1, 2, 3]
