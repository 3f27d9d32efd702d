"""Fan-out sized by work: items grouped to a target of seconds per task, within the limits Airflow sets."""

from __future__ import annotations

import numpy as np
import pytest

from operators import settings
from operators.fanout import COSTS, DEFAULT_RATES, FanLimits, FanOutConflict, checked_max_tasks, group_by_cost
from operators.plans import FANS, plan, planned_arguments

CONFIGURED = {"step": "configure", "run": "/r", "events": 400_000, "n_shards": 1000, "shards": list(range(1000)),
              "n_groups": 10, "groups": [list(range(i, i + 100)) for i in range(0, 1000, 100)]}


def _costs(groups: list[tuple[int, int]], costs: list[float]) -> list[float]:
    return [sum(costs[a:b]) for a, b in groups]


def test_items_of_different_cost_are_grouped_to_the_target_within_one_item():
    rng = np.random.default_rng(27)
    costs = list(rng.uniform(0.5, 8.0, 400))  # seconds per item; total ~1700 s
    groups = group_by_cost(costs, FanLimits(max_tasks=256, target_s=30.0))
    total, n = sum(costs), len(groups)
    assert n == int(total // 30.0)  # as many tasks as leave each at least the target on average
    share = total / n
    assert 30.0 <= share < 31.0
    # Tolerance: a task's cost is within the largest item's cost of the equal share (cuts at the nearest item).
    assert all(abs(c - share) <= max(costs) for c in _costs(groups, costs))
    assert [i for a, b in groups for i in range(a, b)] == list(range(400))  # consecutive, in order, each once


def test_the_caps_win_over_the_target_and_the_pool_raises_the_count():
    costs = [1.0] * 100  # 100 s of work
    assert len(group_by_cost(costs, FanLimits(max_tasks=2, target_s=30.0))) == 2  # SBI_MAX_FAN_OUT caps
    assert len(group_by_cost(costs, FanLimits(max_tasks=256, target_s=30.0))) == 3
    assert len(group_by_cost(costs, FanLimits(max_tasks=256, target_s=30.0, min_tasks=8))) == 8  # every slot works
    assert len(group_by_cost(costs[:12], FanLimits(max_tasks=256, target_s=30.0, min_tasks=8))) == 2  # 5 s a start
    assert len(group_by_cost(costs[:4], FanLimits(max_tasks=256, target_s=30.0, min_tasks=8))) == 1  # less: 1 task
    assert len(group_by_cost([30.0] * 5, FanLimits(max_tasks=256, target_s=60.0, min_tasks=8))) == 5  # no empty task
    assert len(group_by_cost(costs, FanLimits(max_tasks=256, target_s=0.0))) == 100  # target 0: by count
    assert group_by_cost([], FanLimits(max_tasks=4, target_s=30.0)) == []
    assert group_by_cost([0.0] * 4, FanLimits(max_tasks=2, target_s=0.0)) == [(0, 2), (2, 4)]


def test_a_heavy_item_gets_a_task_of_its_own_and_the_light_ones_share():
    costs = [1.0] * 30 + [60.0] + [1.0] * 29  # 119 s: 3 tasks; the cuts nearest 39.7 s and 79.3 s
    assert group_by_cost(costs, FanLimits(max_tasks=256, target_s=30.0)) == [(0, 30), (30, 31), (31, 60)]


def test_shards_are_grouped_by_their_events_and_spread_over_the_pool():
    limits = FanLimits(max_tasks=256, target_s=30.0, min_tasks=2)
    # 1000 shards of 400 events at 3e-5 s/event and 5 ms each: 17 s of work, less than one target: a task per slot.
    argv = planned_arguments(FANS["generate"], "/r", CONFIGURED, limits)
    assert [len(a[4::2]) for a in argv] == [500, 500]
    assert [int(s) for a in argv for s in a[4::2]] == list(range(1000))
    bigger = {**CONFIGURED, "events": 400_000_000}  # 400k events a shard: 12 s each, 2-3 shards a task
    argv = planned_arguments(FANS["generate"], "/r", bigger, limits)
    assert len(argv) == 256 and {len(a[4::2]) for a in argv} <= {3, 4, 5}  # capped by SBI_MAX_FAN_OUT
    assert planned_arguments(FANS["generate"], "/r", bigger, limits) == argv  # deterministic


def test_networks_are_grouped_by_rows_times_epochs_of_their_method():
    heavy = {"step": "sample", "networks": [f"alices-{i}" for i in range(4)], "n_train": 295_000, "epochs": 10}
    light = {"step": "sample", "networks": [f"sally-{i}" for i in range(10)], "n_train": 25_000, "epochs": 10}
    limits = FanLimits(max_tasks=256, target_s=30.0, min_tasks=1)
    argv = planned_arguments(FANS["train"], "/r", [heavy, light], limits)  # 60 s per alices, 6 s per sally
    assert [a[4::2] for a in argv[:4]] == [[f"alices-{i}"] for i in range(4)]
    assert [a[4::2] for a in argv[4:]] == [[f"sally-{i}" for i in range(5)], [f"sally-{i}" for i in range(5, 10)]]
    # the 60 s of sally networks in two tasks of 30 s: 6 tasks, not the 10 of 300 s / 30 s
    assert COSTS["train"].fixed + DEFAULT_RATES["train"] * 295_000 * 10 == pytest.approx(60.0)  # 1 s + rows x epochs


def test_blocks_weigh_their_points_and_a_summary_without_sizes_keeps_a_task_per_item():
    blocks = [f"{i}:{i + 8}" for i in range(0, 80, 8)]  # 10 blocks of 8 rows at 1 s a row: 80 s, 2 tasks
    argv = planned_arguments(FANS["hessian"], "/r", {"step": "fit", "hessian_blocks": blocks},
                             FanLimits(max_tasks=256, target_s=30.0))
    assert [a[4::2] for a in argv] == [blocks[:5], blocks[5:]]
    old = {"step": "sample", "networks": ["a", "b", "c"]}  # a sample summary without n_train / epochs
    argv = planned_arguments(FANS["train"], "/r", old, FanLimits(max_tasks=256, target_s=30.0))
    assert [a[4::2] for a in argv] == [["a"], ["b"], ["c"]]


def test_a_fan_out_past_airflows_map_length_is_refused_naming_both_settings(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(FanOutConflict, match=r"SBI_MAX_FAN_OUT=2000 .*core\.max_map_length=1024"):
        checked_max_tasks(2000, 1024)
    monkeypatch.setenv("SBI_MAX_FAN_OUT", "2000")
    with pytest.raises(AirflowFailException, match=r"SBI_MAX_FAN_OUT=2000 .*core\.max_map_length=1024"):
        plan.function("generate", "/r", CONFIGURED, "cpu")  # at planning time, before Airflow expands anything
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "4096")  # read from Airflow's configuration, now
    assert len(plan.function("generate", "/r", CONFIGURED, "cpu")) == 1000  # target 0 here (conftest): by count


def test_settings_of_the_fan_out_refuse_bad_values(monkeypatch):
    from operators.fanout import rates

    assert settings.task_target_s() == 0.0  # conftest; the shipped default is 30
    monkeypatch.delenv("SBI_TASK_TARGET_S")
    assert settings.task_target_s() == settings.DEFAULT_TASK_TARGET_S == 30.0
    monkeypatch.setenv("SBI_COST_RATES", "generate=1e-4, train=5e-5")
    assert (rates()["generate"], rates()["train"], rates()["scan"]) == (1e-4, 5e-5, DEFAULT_RATES["scan"])
    for name, bad in (("SBI_TASK_TARGET_S", "-1"), ("SBI_TASK_TARGET_S", "nan"), ("SBI_COST_RATES", "generate"),
                      ("SBI_COST_RATES", "generate=-1")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(settings.SettingError, match=name):
            settings.task_target_s() if name == "SBI_TASK_TARGET_S" else settings.cost_rates()
        monkeypatch.delenv(name)
    monkeypatch.setenv("SBI_COST_RATES", "simulate=1")
    with pytest.raises(settings.SettingError, match="simulate"):
        rates()


def test_study_work_is_weighed_by_its_kinds_budget_unit():
    from operators.loop import work_arguments

    limits = FanLimits(max_tasks=256, target_s=30.0, min_tasks=2)
    toys = {"study": "/s", "round": 1, "kind": "toy_limits", "items": [f"p{i}" for i in range(40)], "n_items": 40,
            "cost": 40 * 50}  # 50 toys an item at 0.5 s: 25 s each, 1000 s in all
    assert len(work_arguments(toys, limits)) == 33
    trainings = {**toys, "kind": "hpo", "items": [f"t{i}" for i in range(8)], "n_items": 8, "cost": 8}
    assert [a[7::2] for a in work_arguments(trainings, limits)] == [[f"t{i}"] for i in range(8)]  # 30 s each
    points = {**trainings, "kind": "active_learning", "cost": 8000}  # events: no estimate, a task per item
    assert len(work_arguments(points, limits)) == 8
