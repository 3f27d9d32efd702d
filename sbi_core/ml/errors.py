"""Failures of the learning stage. They are not InputErrors: a step that raises one exits 1 (a failure)."""

from __future__ import annotations

from sbi_core.errors import SbiError


class NetworkFailed(SbiError):
    """One network could not be trained (its loss went NaN or inf, ...): the message names it and the epoch."""

    def __init__(self, network_id: str, epoch: int, reason: str, history: list[dict] | None = None) -> None:
        self.network_id = network_id
        self.epoch = epoch
        self.reason = reason
        self.history = list(history or [])  # the epochs that completed before the failure
        super().__init__(f"network {network_id} failed at epoch {epoch}: {reason}")


class TrainingFailed(SbiError):
    """A batch of networks finished with some failed; `failed` maps each failed network id to its error."""

    def __init__(self, failed: dict[str, str], n_total: int) -> None:
        self.failed = dict(failed)
        lines = "\n  ".join(f"{k}: {v}" for k, v in self.failed.items())
        super().__init__(f"{len(self.failed)} of {n_total} networks failed:\n  {lines}")


class EnsembleFailed(SbiError):
    """An ensemble has fewer successful members than training.min_members."""

    def __init__(self, groups: dict[str, str]) -> None:
        self.groups = dict(groups)
        lines = "\n  ".join(f"{k}: {v}" for k, v in self.groups.items())
        super().__init__(f"{len(self.groups)} ensembles have too few members:\n  {lines}")
