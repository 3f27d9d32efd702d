"""generate: events per second with 2 processes (shards in parallel) vs 1 process, same shards."""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import Figure, emit

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "benchmark.yaml"


def _gen(run: str, shard: int) -> float:
    from sbi_core import steps

    t0 = time.perf_counter()
    steps.generate(run, [shard])
    return time.perf_counter() - t0


def _clear(run: str) -> None:
    """Delete the shards, so the next round simulates them again (generate keeps finished shards)."""
    import shutil

    shutil.rmtree(Path(run) / "shards", ignore_errors=True)


def _warm() -> None:
    import sbi_core.steps  # noqa: F401  (imports out of the timed region)


def run(quick: bool) -> list[dict[str, Any]]:
    from sbi_core import steps

    per_shard, repeats = (100_000, 3) if quick else (400_000, 5)
    n_shards = 4
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        run_uri = str(Path(tmp) / "run")
        steps.configure(str(CONFIG), run_uri, [f"generation.events={per_shard * n_shards}",
                                               f"generation.shards={n_shards}"])
        serial, parallel = [], []
        with ProcessPoolExecutor(1) as one, ProcessPoolExecutor(2) as two:
            one.submit(_warm).result()
            for f in [two.submit(_warm) for _ in range(2)]:
                f.result()
            for _ in range(repeats):
                _clear(run_uri)
                t0 = time.perf_counter()
                for s in range(n_shards):
                    one.submit(_gen, run_uri, s).result()
                serial.append(time.perf_counter() - t0)
                _clear(run_uri)
                t0 = time.perf_counter()
                for f in [two.submit(_gen, run_uri, s) for s in range(n_shards)]:
                    f.result()
                parallel.append(time.perf_counter() - t0)
    events = per_shard * n_shards
    fig = Figure(name="generate", sizes={"events": events, "shards": n_shards, "processes": "2 vs 1"},
                 ours=[events / t for t in parallel], baseline=[events / t for t in serial],
                 ours_label="events/s (2 proc)", baseline_label="events/s (1 proc)", target=">= 1.8",
                 extra={"events_per_s_per_core": round(events / min(serial))})
    rec = fig.record()
    emit(rec)
    return [rec]
