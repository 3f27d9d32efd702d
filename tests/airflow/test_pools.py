"""Pools: each profile names one, sizes come from the profiles file or SBI_POOL_SLOTS, and they reach Airflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from operators import settings
from operators.pools import import_pools, pools_json
from operators.profiles import Pool, ProfileError, get_profile, load_pools
from tests.conftest import REPO


def test_each_shipped_profile_names_a_sized_pool():
    pools = load_pools()
    assert {get_profile(p).pool for p in ("cpu", "gpu", "highmem")} == set(pools) == {"sbi_cpu", "sbi_gpu",
                                                                                     "sbi_highmem"}
    assert pools["sbi_gpu"].slots == 1 and pools["sbi_gpu"].description


def test_sbi_pool_slots_overrides_the_file(monkeypatch):
    monkeypatch.setenv("SBI_POOL_SLOTS", "sbi_gpu=8, sbi_highmem=3")
    pools = load_pools()
    assert (pools["sbi_gpu"].slots, pools["sbi_highmem"].slots, pools["sbi_cpu"].slots) == (8, 3, 16)
    monkeypatch.setenv("SBI_POOL_SLOTS", "sbi_tpu=2")
    with pytest.raises(ProfileError, match="sbi_tpu"):
        load_pools()
    for bad in ("sbi_gpu", "sbi_gpu=0", "sbi_gpu=x"):
        monkeypatch.setenv("SBI_POOL_SLOTS", bad)
        with pytest.raises(settings.SettingError, match="SBI_POOL_SLOTS"):
            load_pools()


def test_a_profiles_file_without_pools_section_gives_one_slot_pools(tmp_path: Path, monkeypatch):
    custom = tmp_path / "profiles.yaml"
    custom.write_text("defaults: {image: i, namespace: n}\nprofiles: {gpu: {pool: lab_gpus}, cpu: {}}\n")
    monkeypatch.setenv("SBI_PROFILES", str(custom))
    assert load_pools() == {"lab_gpus": Pool("lab_gpus", 1)}
    assert get_profile("cpu").pool is None  # the task then runs in Airflow's default_pool
    custom.write_text("defaults: {image: i, namespace: n}\nprofiles: {gpu: {pool: g}}\npools: {g: {slots: 0}}\n")
    with pytest.raises(ProfileError, match="pool 'g' needs `slots`"):
        load_pools()


def test_the_pools_json_is_what_airflow_pools_import_reads():
    done = subprocess.run([sys.executable, "-m", "operators.pools"], capture_output=True, text=True, check=True,
                          cwd=REPO)
    assert json.loads(done.stdout) == pools_json(load_pools())
    assert json.loads(done.stdout)["sbi_gpu"] == {"slots": 1, "description": load_pools()["sbi_gpu"].description,
                                                  "include_deferred": False}


def test_pools_are_created_in_airflow_and_updated_in_place(migrated_airflow_home):
    from airflow.models.pool import Pool as AirflowPool

    AirflowPool.create_or_update_pool("sbi_test", slots=3, description="old", include_deferred=False)
    import_pools({"sbi_test": Pool("sbi_test", 5, "a test pool"), "sbi_other": Pool("sbi_other", 2)})
    assert (AirflowPool.get_pool("sbi_test").slots, AirflowPool.get_pool("sbi_test").description) == (5, "a test pool")
    assert AirflowPool.get_pool("sbi_other").slots == 2
