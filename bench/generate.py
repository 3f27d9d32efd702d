"""generate: events per second with 2 processes (shards in parallel) vs 1 process, same shards; and the
drell_yan_eft simulator on one core: unweighted events per second from the vegas-adapted map vs the flat
map, the unweighting efficiency before and after adaptation, and the generate step's rate after cuts."""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import Figure, emit

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "benchmark.yaml"
DY_CONFIG = REPO / "configs" / "drell_yan_eft.yaml"


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
    return [rec, run_drell_yan(quick)]


def _dy_simulator(adapt: bool) -> tuple[Any, float]:
    """The shipped drell_yan_eft simulator (adapted or flat map) and its set-up time in seconds."""
    from sbi_core.config import load_config
    from sbi_core.physics import drell_yan

    drell_yan._engine.cache_clear()  # time the set-up (adaptation, max search, quadrature) every time
    drell_yan._vegas.cache_clear()
    cfg = load_config(str(DY_CONFIG), [f"simulator.options.sampling.adapt={str(adapt).lower()}"])
    t0 = time.perf_counter()
    sim = drell_yan.DrellYanSimulator(cfg)
    sim.unweighting_report()  # the sampler is set up when first needed
    return sim, time.perf_counter() - t0


def run_drell_yan(quick: bool) -> dict[str, Any]:
    """Unweighted drell_yan_eft events per second on one core (before cuts), adapted vs flat map."""
    import numpy as np

    n_adapted, n_flat, repeats = (50_000, 2_000, 3) if quick else (400_000, 10_000, 5)
    sim, setup = _dy_simulator(True)
    flat, setup_flat = _dy_simulator(False)
    adapted_rates, flat_rates = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        sim.simulate(n_adapted, np.random.default_rng(r))
        adapted_rates.append(n_adapted / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        flat.simulate(n_flat, np.random.default_rng(r))
        flat_rates.append(n_flat / (time.perf_counter() - t0))
    rep = sim.unweighting_report()
    after_cuts = _dy_generate_rate(n_adapted)
    fig = Figure(name="generate_drell_yan", sizes={"events": n_adapted, "flat_map_events": n_flat,
                                                   "config": DY_CONFIG.name, "processes": 1},
                 ours=adapted_rates, baseline=flat_rates, ours_label="events/s (vegas-adapted map)",
                 baseline_label="events/s (flat map)", target="> 10",
                 extra={"unweighting_efficiency_flat": round(rep.efficiency_flat, 6),
                        "unweighting_efficiency_adapted": round(rep.efficiency, 4),
                        "overweight_excess_fraction": rep.excess / rep.integral,
                        "setup_seconds_adapted": round(setup, 2), "setup_seconds_flat": round(setup_flat, 2),
                        "generate_step_events_per_s_after_cuts": round(after_cuts)})
    rec = fig.record()
    emit(rec)
    return rec


def _dy_generate_rate(events: int) -> float:
    """Events per second of `sbi-core generate` (one shard, in this process, after cuts, file written)."""
    from sbi_core import steps

    with tempfile.TemporaryDirectory(prefix="bench-generate-dy-") as tmp:
        run_uri = str(Path(tmp) / "run")
        steps.configure(str(DY_CONFIG), run_uri, [f"generation.events={events}", "generation.shards=1"])
        t0 = time.perf_counter()  # the engine is cached by configure: this times simulation, cuts and writing
        steps.generate(run_uri, [0])
        return events / (time.perf_counter() - t0)
