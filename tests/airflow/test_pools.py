"""Pools: each profile names one, sizes come from the profiles file or SBI_POOL_SLOTS, and they reach Airflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from airflow_local import embedded_env

from operators import settings
from operators.pools import CONCURRENCY_SETTINGS, concurrency_env, import_pools, pools_json
from operators.profiles import Pool, ProfileError, get_profile, load_pools
from tests.conftest import REPO


def test_each_shipped_profile_names_a_sized_pool(monkeypatch):
    monkeypatch.setenv("SBI_BACKEND", "kubernetes")  # the file's sizes: one GPU unless the site says more
    pools = load_pools()
    assert {get_profile(p).pool for p in ("cpu", "gpu", "highmem")} == set(pools) == {"sbi_cpu", "sbi_gpu",
                                                                                     "sbi_highmem"}
    assert pools["sbi_gpu"].slots == 1 and pools["sbi_gpu"].description


def test_the_training_pool_follows_the_machine_on_the_local_backend(monkeypatch):
    monkeypatch.setattr(settings.os, "cpu_count", lambda: 12)
    pools = load_pools()
    assert (pools["sbi_gpu"].slots, pools["sbi_cpu"].slots, pools["sbi_highmem"].slots) == (12, 12, 2)
    monkeypatch.setenv("SBI_TRAIN_SLOTS", "3")  # a setting wins over the cores, on both backends
    assert load_pools()["sbi_gpu"].slots == 3
    monkeypatch.setenv("SBI_BACKEND", "kubernetes")
    monkeypatch.setenv("SBI_TRAIN_SLOTS", "64")  # the GPUs the site declares
    assert load_pools()["sbi_gpu"].slots == 64
    monkeypatch.setenv("SBI_POOL_SLOTS", "sbi_gpu=5")  # the explicit pool size wins over all
    assert load_pools()["sbi_gpu"].slots == 5
    monkeypatch.setenv("SBI_TRAIN_SLOTS", "0")
    with pytest.raises(settings.SettingError, match="SBI_TRAIN_SLOTS"):
        load_pools()


def test_airflows_own_caps_are_sized_to_fill_the_pools(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(settings.os, "cpu_count", lambda: 6)
    assert concurrency_env({"SBI_BACKEND": "local"}) == dict.fromkeys(CONCURRENCY_SETTINGS, "18")  # 6 + 6 + 2 + 4
    kept = concurrency_env({"SBI_BACKEND": "kubernetes", "AIRFLOW__CORE__PARALLELISM": "64"})  # 16 + 1 + 2 + 4
    assert (kept["AIRFLOW__CORE__PARALLELISM"], kept["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"]) == ("64", "23")
    env = embedded_env(tmp_path, base={"SBI_BACKEND": "local", "SBI_POOL_SLOTS": "sbi_gpu=10"})  # make airflow's
    assert (env["AIRFLOW__CORE__PARALLELISM"], env["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"]) == ("22", "22")


def test_sbi_pool_slots_overrides_the_file(monkeypatch):
    monkeypatch.setenv("SBI_BACKEND", "kubernetes")
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
    monkeypatch.setenv("SBI_BACKEND", "kubernetes")
    assert load_pools() == {"lab_gpus": Pool("lab_gpus", 1)}
    assert get_profile("cpu").pool is None  # the task then runs in Airflow's default_pool
    custom.write_text("defaults: {image: i, namespace: n}\nprofiles: {gpu: {pool: g}}\npools: {g: {slots: 0}}\n")
    with pytest.raises(ProfileError, match="pool 'g' needs `slots`"):
        load_pools()


def test_the_pools_json_is_what_airflow_pools_import_reads(monkeypatch):
    monkeypatch.setenv("SBI_BACKEND", "kubernetes")
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
