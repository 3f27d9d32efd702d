"""Stand-in ensembles with exactly known outputs (the exact targets of the benchmark model plus optional noise):
they test the evaluation and learned-array formulas independently of how well a network trains."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import numpy as np

from sbi_core.errors import InputError
from sbi_core.ml.closure import ExactTargets


@dataclass
class FakeEnsemble:
    """log_ratio / score = the exact target + noise_scale * N(0, 1) noise (seeded by the inputs), spread `spread`."""

    exact: ExactTargets
    method: str
    head: str
    variation: str
    members: list[str]
    noise_scale: float = 0.0
    spread: float = 0.01
    parametrised: bool = False
    output: str = "log_ratio"
    member_shifts: tuple[float, ...] = ()
    offset: float = 0.0
    calls: list[str] = field(default_factory=list)

    def _noise(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        key = f"{self.method}/{self.head}/{self.variation}/{np.round(x[:, 0].sum(), 6)}"
        seed = zlib.crc32(key.encode())
        return self.noise_scale * np.random.default_rng(seed).standard_normal(shape)

    def log_ratio(self, x, theta0=None):
        self.calls.append("log_ratio")
        if self.parametrised == (theta0 is None):
            raise ValueError(f"{self.method}: theta0 given to an x-only ensemble or missing for a parametrised one")
        cfg = self.exact.cfg
        if self.variation != "nominal":
            target = self.exact.log_ratio_variation(x, self.variation)
        elif self.parametrised:
            target = self.exact.log_ratio(x, theta0, self.exact.reference)
        else:
            theta_b = np.asarray(cfg.benchmark_matrix()[cfg.benchmark_names.index(self.head)])
            target = self.exact.log_ratio(x, theta_b, self.exact.reference)
        return target + self.offset + self._noise(x, target.shape), np.full(target.shape, self.spread)

    def member(self, m):
        """Member m alone: the same outputs shifted by `member_shifts[m]` (0 when not given), spread 0."""
        if not 0 <= m < len(self.members):
            raise InputError(f"ensemble {self.method}/{self.head}/{self.variation} has {len(self.members)} members, "
                             f"member {m} was asked for")
        shift = self.member_shifts[m] if m < len(self.member_shifts) else 0.0
        return replace(self, members=self.members[m : m + 1], member_shifts=(), offset=self.offset + shift,
                       spread=0.0, calls=self.calls)

    def score(self, x, theta0=None):
        cfg = self.exact.cfg
        theta = np.asarray([cfg.training.samples.theta_fixed[p] for p in cfg.parameter_names]) \
            if cfg.training.samples.theta_fixed else self.exact.reference
        target = self.exact.score(x, theta)
        return target + self._noise(x, target.shape), np.full(target.shape, self.spread)


def fake_api(exact: ExactTargets, keys: list[tuple[str, str, str]], n_batches: int = 1, noise: float = 0.0,
             members: int = 2) -> SimpleNamespace:
    """An object with the ensemble module's evaluation API, serving FakeEnsembles for `keys`."""
    ensembles = {}
    for method, head, variation in keys:
        ensembles[(method, head, variation)] = FakeEnsemble(
            exact, method, head, variation, [f"{method}-{head}-{variation}-m{m:02d}" for m in range(members)],
            noise_scale=noise, parametrised=method != "benchmark_ratio" and variation == "nominal" and method != "sally",
            output="score" if method == "sally" else "log_ratio")

    def load_ensemble(layout, method, head, variation="nominal"):
        if (method, head, variation) not in ensembles:
            raise InputError(f"no ensemble {method}/{head}/{variation}")
        return ensembles[(method, head, variation)]

    def evaluate_batch_slice(n_rows, n, batch):
        if not 0 <= batch < n:
            raise InputError(f"evaluate batch {batch} is out of range (0..{n - 1})")
        return slice(n_rows * batch // n, n_rows * (batch + 1) // n)

    return SimpleNamespace(list_ensembles=lambda layout: list(keys), load_ensemble=load_ensemble,
                           evaluate_batch_slice=evaluate_batch_slice, ensembles=ensembles, n_batches=n_batches)
