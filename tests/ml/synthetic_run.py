"""A configured benchmark run with synthetic training sets written where `sbi-core sample` puts them.

The train and ensemble steps need only the run's config and the sample files, so their tests do not depend
on generating events or on the sampler; the sets follow the file contract (sbi_core.data.training_sets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sbi_core import steps, storage
from sbi_core.data.training_sets import TrainingSet, write_training_set
from sbi_core.layout import RunLayout
from tests.conftest import BENCHMARK_CONFIG, SMALL
from tests.ml.synthetic import gaussian_set

#: Small, fast training: one parametrised method, 2 members, no per-variation networks.
TRAINING = ["training.methods=[alices]", "training.members=2", "training.min_members=1", "training.variations=false",
            "training.network.hidden=[16]", "training.optimizer.epochs=3", "training.optimizer.batch_size=128",
            "training.optimizer.learning_rate=0.01", "training.optimizer.patience=0", "training.device=cpu"]


def synthetic_run(root: Path, extra: list[str] | None = None, n_train: int = 1600, n_val: int = 400,
                  n_test: int = 300) -> str:
    """Configure a run (no events) and write alices/theta/nominal train, val and test sets."""
    summary = steps.configure(str(BENCHMARK_CONFIG), str(root), SMALL + TRAINING + list(extra or []))
    layout = RunLayout(summary["run"])
    for split, n, seed in (("train", n_train, 1), ("val", n_val, 2), ("test", n_test, 3)):
        d = gaussian_set(n, seed)
        ts = TrainingSet(**d, event=np.arange(n, dtype=np.int64), method="alices", head="theta",
                         variation="nominal", split=split, seed=0, config_hash=summary["config_hash"],
                         observables=("x0", "x1", "x2", "x3", "x4"), parameters=("cW", "cHW"))
        with storage.atomic_write(layout.training_set("alices", "theta", "nominal", split)) as tmp:
            write_training_set(tmp, ts)
    return summary["run"]
