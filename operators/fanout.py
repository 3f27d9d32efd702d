"""Fan-out sized by work: how many mapped tasks a step gets, and which work items each task takes.

A mapped task pays a fixed start-up (Airflow's task runner, the `sbi-core` process, the XCom push: seconds)
before its work starts, so a task should do at least `SBI_TASK_TARGET_S` seconds of work (default 30). The
plan estimates every item's cost from the summary that lists it, then cuts the items, in order, into groups
of nearly equal cost.

What to use when:
- `COSTS` (a registry, one `Cost` per mapped step): the unit an item is measured in (events of a shard,
  epochs x training rows of a network, points of a block...), how the summary tells it, and the default
  seconds per unit (`DEFAULT_RATES`; `SBI_COST_RATES=generate=1e-4,train=5e-5` overrides).
- `item_costs(step, summaries, rates)`: the estimated seconds of each item, in the order of the items.
- `group_by_cost(costs, limits)`: the [start, stop) ranges of consecutive items each task takes.
- `fan_limits(profile)`: the limits of one plan, read at planning time: SBI_MAX_FAN_OUT (checked against
  Airflow's `core.max_map_length`), SBI_TASK_TARGET_S, and the size of the profile's pool (a step never gets
  fewer tasks than it has slots and items while each keeps `TASK_START_S` of work, so the work spreads over
  every slot when that pays).

Nothing here imports Airflow at module level (Airflow's configuration is read inside `map_length_limit`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from operators import settings

__all__ = ["COSTS", "DEFAULT_RATES", "Cost", "FanLimits", "FanOutConflict", "fan_limits", "group_by_cost",
           "item_costs", "map_length_limit"]

#: Seconds a mapped task spends before its step works (Airflow's task runner, the step's process, the XCom):
#: ~5 s in issue 27's runs, 2-6 s in `python -m bench fanout` here. A step is spread over its pool's slots only
#: as far as each task keeps at least this much work.
TASK_START_S = 5.0

Size = Callable[[Mapping[str, Any], Any], "float | None"]


class FanOutConflict(ValueError):
    """SBI_MAX_FAN_OUT asks for more mapped tasks than Airflow's `core.max_map_length` allows."""


@dataclass(frozen=True)
class FanLimits:
    """What bounds one fan-out: at most `max_tasks` tasks, each with about `target_s` seconds of work
    (0: batches by count, as many tasks as `max_tasks` allows), at least `min_tasks` when there are that many items."""

    max_tasks: int
    target_s: float = 0.0
    min_tasks: int = 1


def _shard_events(summary: Mapping[str, Any], item: Any) -> float | None:
    """Events of one shard: configure's `events` over its `n_shards` (an upper bound for an LHE file)."""
    events, shards = summary.get("events"), summary.get("n_shards")
    return events / shards if _number(events) and _number(shards) and shards > 0 else None


def _group_events(summary: Mapping[str, Any], item: Any) -> float | None:
    """Events of one first-level group: its shards times the events of a shard."""
    groups, per_shard = summary.get("groups"), _shard_events(summary, item)
    if not isinstance(groups, list) or per_shard is None or not 0 <= int(item) < len(groups):
        return None
    return len(groups[int(item)]) * per_shard


def _rows_x_epochs(summary: Mapping[str, Any], item: Any) -> float | None:
    """Training rows times epochs of one network (a sample summary's `n_train` and `epochs`)."""
    rows, epochs = summary.get("n_train"), summary.get("epochs")
    return float(rows * epochs) if _number(rows) and _number(epochs) else None


def _range_length(summary: Mapping[str, Any], item: Any) -> float | None:
    """Points, rows or toys of an "A:B" block."""
    start, _, stop = str(item).partition(":")
    return float(int(stop) - int(start)) if start.isdigit() and stop.isdigit() else None


def _one(summary: Mapping[str, Any], item: Any) -> float | None:
    return 1.0


#: Seconds of one budget unit of a study kind (toy_limits: a toy fit; hpo: a training). A kind not listed
#: (active_learning: its unit, events, says little of an item's work) gets a task per item.
STUDY_UNIT_SECONDS = {"toy_limits": 0.5, "hpo": 30.0}


def _study_item(summary: Mapping[str, Any], item: Any) -> float | None:
    """A study item's share of the round's `cost`, in seconds of its kind's budget unit."""
    cost, n, unit = summary.get("cost"), summary.get("n_items"), STUDY_UNIT_SECONDS.get(summary.get("kind", ""))
    return cost / n * unit if _number(cost) and _number(n) and n > 0 and unit else None


@dataclass(frozen=True)
class Cost:
    """How a step's work item is measured: `unit` (for the docs and messages), `size(summary, item)` in that
    unit, or None when the summary does not tell (the item then counts as a whole task's work), and `fixed`: the
    seconds an item costs whatever its size (a network's model, data loading and checkpoints; a shard's file)."""

    unit: str
    size: Size
    fixed: float = 0.0


#: Every step whose items may be grouped by cost (the `repeat` steps of `operators.plans.FANS` and study work).
COSTS: dict[str, Cost] = {
    "generate": Cost("event", _shard_events, fixed=0.005),
    "ingest-lhe": Cost("event", _shard_events, fixed=0.05),
    "combine": Cost("event", _group_events, fixed=0.05),
    "train": Cost("training row x epoch", _rows_x_epochs, fixed=1.0),
    "evaluate": Cost("batch", _one),
    "likelihood": Cost("batch", _one),
    "hessian": Cost("row", _range_length),
    "scan": Cost("point", _range_length),
    "toys": Cost("toy", _range_length),
    "work": Cost("second of the kind's budget unit", _study_item),
}

#: Seconds per unit on one core, measured on the benchmark analysis (docs/operations.md, "Fan-out"):
#: generate 500 x 400 events in 5.75 s in one process; training 49.5k rows x epochs/s (docs/training.md), plus
#: about 1 s per network whatever its size (10 networks of 1000 rows x 1 epoch: 17.9 s in one process, torch's
#: import included). The rest are round figures; a site with slower simulators sets SBI_COST_RATES.
DEFAULT_RATES: dict[str, float] = {
    "generate": 3e-5,
    "ingest-lhe": 1e-4,
    "combine": 2e-6,
    "train": 2e-5,
    "evaluate": 2.0,
    "likelihood": 2.0,
    "hessian": 1.0,
    "scan": 0.5,
    "toys": 0.5,
    "work": 1.0,
}


def rates() -> dict[str, float]:
    """The default seconds per unit with `SBI_COST_RATES` over them (a step it names must be in `COSTS`)."""
    given = settings.cost_rates()
    unknown = sorted(set(given) - set(COSTS))
    if unknown:
        raise settings.SettingError(f"SBI_COST_RATES names steps without a cost: {unknown} (known: {sorted(COSTS)})")
    return {**DEFAULT_RATES, **given}


def item_costs(step: str, summaries: Sequence[Mapping[str, Any]], items_of: Callable[[Mapping[str, Any]], list[Any]],
               rate_table: Mapping[str, float], unknown: float) -> list[float]:
    """Estimated seconds of each work item of `step`, in order: the step's fixed cost per item plus its size (from
    the summary that lists it) times the step's rate; `unknown` for an item whose summary does not tell its size."""
    cost, rate = COSTS[step], rate_table[step]
    out: list[float] = []
    for summary in summaries:
        for item in items_of(summary):
            size = cost.size(summary, item)
            out.append(unknown if size is None else cost.fixed + max(0.0, size) * rate)
    return out


def group_by_cost(costs: Sequence[float], limits: FanLimits) -> list[tuple[int, int]]:
    """[start, stop) ranges of consecutive items, one per task, of nearly equal cost.

    Tasks: floor(total / target) (so each averages at least the target), raised to `min_tasks` as far as each
    task keeps at least `TASK_START_S` of work (spreading less work over the slots costs more starts than it
    saves), capped by `max_tasks` and the item count (target 0: as many as the caps allow). Each cut is the
    item boundary nearest to a multiple of the equal share total / tasks, so a task's cost is within the largest
    item's cost of that share; an item heavier than a share is a task of its own (then there are fewer tasks).
    Deterministic: the same costs and limits give the same ranges."""
    n_items = len(costs)
    if n_items == 0:
        return []
    total = float(sum(costs))
    wanted = math.floor(total / limits.target_s) if limits.target_s > 0 else n_items
    spread = min(limits.min_tasks, math.floor(total / TASK_START_S))
    n = max(1, min(max(wanted, spread), limits.max_tasks, n_items))
    if total <= 0:  # nothing to weigh: equal counts
        return _even_ranges(n_items, n)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    cuts = {0, n_items}
    for k in range(1, n):
        goal = k * total / n
        i = bisect_left(prefix, goal)  # the first boundary at or past the goal; the one before may be nearer
        cuts.add(i - 1 if i > 0 and goal - prefix[i - 1] <= prefix[i] - goal else i)
    ordered = sorted(cuts)  # an item heavier than a share takes its goals with it: fewer, never empty, tasks
    return list(zip(ordered[:-1], ordered[1:], strict=True))


def _even_ranges(n_items: int, n: int) -> list[tuple[int, int]]:
    edges = [round(i * n_items / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def map_length_limit() -> int:
    """Airflow's `[core] max_map_length` (the most mapped tasks one task may expand to), read now."""
    from airflow.configuration import conf

    return conf.getint("core", "max_map_length")


def checked_max_tasks(max_fan_out: int, map_length: int) -> int:
    """SBI_MAX_FAN_OUT, refused when it exceeds `core.max_map_length` (Airflow would fail the plan's expansion)."""
    if max_fan_out > map_length:
        raise FanOutConflict(
            f"SBI_MAX_FAN_OUT={max_fan_out} exceeds Airflow's core.max_map_length={map_length} "
            f"(AIRFLOW__CORE__MAX_MAP_LENGTH): lower SBI_MAX_FAN_OUT or raise core.max_map_length")
    return max_fan_out


def fan_limits(profile: str | None) -> FanLimits:
    """The limits of one plan, from the deployment settings and Airflow's configuration at planning time."""
    from operators.profiles import get_profile, load_pools

    max_tasks = checked_max_tasks(settings.max_fan_out(), map_length_limit())
    pool = get_profile(profile).pool if profile else None
    slots = load_pools()[pool].slots if pool else 1
    return FanLimits(max_tasks=max_tasks, target_s=settings.task_target_s(), min_tasks=slots)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
