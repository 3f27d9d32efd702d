"""Where a study's files live: the ONE place that builds URIs under a study prefix.

    study.yaml                         the validated study config (written once, by `study --create`)
    state.json                         where it stands: round, status, budget used, why it stopped (the commit point)
    history.json                       every evaluated point, round by round (rebuilt from the aggregates)
    rounds/round-NNNN/plan.json        the round's work items
    rounds/round-NNNN/work/<item>.json each item's result (or its failure and the reason)
    rounds/round-NNNN/aggregate.json   what the round's aggregate decided, and the state it led to
    stop                               the stop flag (`study --stop`): the study ends at the next aggregate
    results.json, plots/               the final results (`study --finish`)
"""

from __future__ import annotations

from dataclasses import dataclass

from sbi_core import storage

__all__ = ["StudyLayout"]


@dataclass(frozen=True)
class StudyLayout:
    """Artifact URIs of one study under `root` (a local directory or an s3:// prefix)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", storage.normalize(self.root))

    @property
    def name(self) -> str:
        """The last component of the prefix: the study's default name."""
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    @property
    def config(self) -> str:
        return storage.join(self.root, "study.yaml")

    @property
    def state(self) -> str:
        return storage.join(self.root, "state.json")

    @property
    def history(self) -> str:
        return storage.join(self.root, "history.json")

    @property
    def stop(self) -> str:
        return storage.join(self.root, "stop")

    @property
    def results(self) -> str:
        return storage.join(self.root, "results.json")

    def plot(self, name: str) -> str:
        """A PNG of the final results, e.g. `cls`."""
        return storage.join(self.root, "plots", f"{name}.png")

    def round_dir(self, r: int) -> str:
        return storage.join(self.root, "rounds", f"round-{r:04d}")

    def plan(self, r: int) -> str:
        return storage.join(self.round_dir(r), "plan.json")

    def work(self, r: int, item: str) -> str:
        return storage.join(self.round_dir(r), "work", f"{item}.json")

    def aggregate(self, r: int) -> str:
        return storage.join(self.round_dir(r), "aggregate.json")
