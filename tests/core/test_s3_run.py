"""A whole run whose artifacts live on S3 (moto server on 127.0.0.1): same events as a local run."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sbi_core import steps, storage
from sbi_core.data.format import SAMPLE_DATASETS
from sbi_core.errors import ShardError
from sbi_core.layout import RunLayout
from tests.conftest import BENCHMARK_CONFIG, SMALL


@pytest.mark.integration
def test_run_on_s3_matches_the_local_run(s3_bucket, small_run):
    run = f"s3://{s3_bucket}/runs/r1"
    plan = steps.configure(str(BENCHMARK_CONFIG), run, SMALL)
    assert plan["setup"] == f"{run}/setup.h5"
    steps.generate(run, plan["shards"])
    for g in range(plan["n_groups"]):
        steps.combine(run, g)
    out = steps.combine(run, None)
    assert out["output"] == f"{run}/events.h5" and out["n_events"] == 6000
    with storage.local_copy(out["output"]) as remote, h5py.File(remote) as a, \
            h5py.File(RunLayout(str(small_run)).events) as b:
        for name in SAMPLE_DATASETS:
            np.testing.assert_array_equal(a[name][()], b[name][()])
    # streamed to S3 or written locally, HDF5 lays the file out the same way: the same bytes
    local = RunLayout(str(small_run))
    for uri, path in ((out["output"], local.events), (f"{run}/shards/shard-00002.h5", local.shard(2))):
        assert storage.read_bytes(uri) == storage.read_bytes(path), uri

    # a corrupt shard on S3 is refused by name, and no group file appears
    layout = RunLayout(run)
    with storage.local_copy(layout.shard(1)) as p:
        data = bytearray(p.read_bytes())
    storage.write_bytes(layout.shard(1), bytes(data[: len(data) // 3]))
    storage.remove(layout.group(0))
    with pytest.raises(ShardError, match="shard-00001.h5"):
        steps.combine(run, 0)
    assert not storage.exists(layout.group(0))
