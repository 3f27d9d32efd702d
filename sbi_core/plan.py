"""The generation plan: how many events each shard keeps, how shards are grouped, the chunk size.

Shard sizes count events AFTER cuts (generate simulates until its shard is full), so every file's
row count is known in advance. Runs that read input files (`make_file_plan`, LHE ingestion) are the
exception: a shard holds what its file yields, at most its planned size, and combine reads the sizes
from the shard headers (`sizes_known` False). The chunk size divides the common shard size whenever it can, which
lets combine copy compressed chunks as they are instead of decoding and re-encoding them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from sbi_core.errors import InputError

MIN_CHUNK_ROWS = 1024
MAX_CHUNK_ROWS = 16384
FALLBACK_CHUNK_ROWS = 4096


def choose_chunk_rows(shard_events: int) -> int:
    """Largest divisor of shard_events in [MIN, MAX] chunk rows; the shard size itself when smaller."""
    if shard_events <= MAX_CHUNK_ROWS:
        return max(1, shard_events)
    for rows in range(MAX_CHUNK_ROWS, MIN_CHUNK_ROWS - 1, -1):
        if shard_events % rows == 0:
            return rows
    return FALLBACK_CHUNK_ROWS


@dataclass(frozen=True)
class GenerationPlan:
    """Everything generate and combine need to agree on, written once by configure (plan.json)."""

    config_hash: str
    seed: int
    chunk_rows: int
    shard_events: list[int]
    groups: list[list[int]]
    #: Set on a derived run (`sbi-core derive`): the source run's events file, which this run reads
    #: instead of simulating again. None: the run's own `events.h5`.
    events_uri: str | None = None
    #: False when shards hold what their input files yield (LHE ingestion): shard_events are then upper
    #: bounds, and combine takes each file's event count from its header instead of checking it.
    sizes_known: bool = True
    #: Set on a derived run whose source trained ensembles (`sbi-core derive` from a sbi_train run): the run
    #: whose networks, ensembles and training sets the learned likelihood reads. None: the run's own.
    networks_uri: str | None = None

    @property
    def n_shards(self) -> int:
        return len(self.shard_events)

    @property
    def events(self) -> int:
        return sum(self.shard_events)

    def group_events(self, group: int) -> int:
        return sum(self.shard_events[i] for i in self.groups[group])

    def expected_shard_events(self, indices: list[int]) -> list[int] | None:
        """The planned event counts of these shards, or None when the plan does not know them."""
        return [self.shard_events[i] for i in indices] if self.sizes_known else None

    def expected_group_events(self) -> list[int] | None:
        """The planned event count of every group, or None when the plan does not know them."""
        return [self.group_events(g) for g in range(len(self.groups))] if self.sizes_known else None

    def check_shard(self, index: int) -> None:
        """InputError naming the shard when index is outside the plan."""
        if not 0 <= index < self.n_shards:
            raise InputError(f"shard {index} is outside the plan (0..{self.n_shards - 1})")

    def check_group(self, index: int) -> None:
        if not 0 <= index < len(self.groups):
            raise InputError(f"group {index} is outside the plan (0..{len(self.groups) - 1})")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, source: str = "plan.json") -> GenerationPlan:
        """The plan a plan.json holds; InputError naming the file and the field when it is malformed."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        missing = sorted(k for k, f in cls.__dataclass_fields__.items()
                         if k not in data and f.default is dataclasses.MISSING)
        if unknown or missing:
            raise InputError(f"{source}: unknown fields {unknown}, missing fields {missing}: reconfigure the run")
        problem = _plan_problem(data)
        if problem:
            raise InputError(f"{source}: {problem}: reconfigure the run")
        return cls(**data)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _plan_problem(d: dict[str, Any]) -> str | None:
    """What is wrong with a plan's fields (names the field), or None."""
    checks = [
        ("config_hash", isinstance(d["config_hash"], str) and len(d["config_hash"]) > 0, "a non-empty string"),
        ("seed", _is_int(d["seed"]) and d["seed"] >= 0, "an integer >= 0"),
        ("chunk_rows", _is_int(d["chunk_rows"]) and d["chunk_rows"] >= 1, "an integer >= 1"),
        ("shard_events", isinstance(d["shard_events"], list) and len(d["shard_events"]) > 0
         and all(_is_int(n) and n >= 0 for n in d["shard_events"]), "a non-empty list of integers >= 0"),
        ("groups", isinstance(d["groups"], list) and len(d["groups"]) > 0 and all(
            isinstance(g, list) and g and all(_is_int(i) for i in g) for g in d["groups"]),
         "a non-empty list of non-empty lists of shard indices"),
        ("events_uri", d.get("events_uri") is None or isinstance(d["events_uri"], str), "a string or null"),
        ("sizes_known", isinstance(d.get("sizes_known", True), bool), "true or false"),
    ]
    for name, ok, expected in checks:
        if not ok:
            return f"field {name} must be {expected}, got {d.get(name)!r}"
    n = len(d["shard_events"])
    listed = sorted(i for g in d["groups"] for i in g)
    if listed != list(range(n)):
        return f"field groups must list every shard 0..{n - 1} once, got {d['groups']!r}"
    return None


def make_plan(events: int, shards: int, shards_per_group: int, seed: int, config_hash: str) -> GenerationPlan:
    """Even shards; the last one takes the remainder. Groups of consecutive shards."""
    base = events // shards
    sizes = [base] * shards
    sizes[-1] += events - base * shards
    groups = [list(range(i, min(i + shards_per_group, shards))) for i in range(0, shards, shards_per_group)]
    return GenerationPlan(
        config_hash=config_hash, seed=seed, chunk_rows=choose_chunk_rows(base), shard_events=sizes, groups=groups
    )


def make_file_plan(n_files: int, events: int, shards_per_group: int, seed: int, config_hash: str) -> GenerationPlan:
    """One shard per input file, holding at most its even share of `events` (what the file yields, if less).

    Sizes are not known in advance (`sizes_known` False), so no chunk size divides them: a fixed one is used."""
    if n_files < 1:
        raise InputError("a file plan needs at least one input file")
    plan = make_plan(max(events, n_files), n_files, shards_per_group, seed, config_hash)
    return GenerationPlan(
        config_hash=config_hash,
        seed=seed,
        chunk_rows=FALLBACK_CHUNK_ROWS,
        shard_events=plan.shard_events,
        groups=plan.groups,
        sizes_known=False,
    )
