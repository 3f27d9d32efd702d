"""Shared helpers: timing with repeats, the machine record, one JSON line per figure, a Markdown table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = fh.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "platform": platform.platform()}


def repeat(fn: Callable[[], Any], n: int) -> list[float]:
    """Wall times of n calls (seconds)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


@dataclass
class Figure:
    """One benchmark figure: ours vs a baseline, ratio = ours / baseline (unless stated otherwise)."""

    name: str
    sizes: dict[str, Any]
    ours: list[float]
    baseline: list[float]
    ours_label: str
    baseline_label: str
    target: str
    ratio_of: str = "median"
    extra: dict[str, Any] = field(default_factory=dict)
    invert: bool = False  # True: ratio = baseline / ours (a speed-up)

    def ratio(self) -> float:
        a = statistics.median(self.ours) if self.ratio_of == "median" else min(self.ours)
        b = statistics.median(self.baseline) if self.ratio_of == "median" else min(self.baseline)
        return b / a if self.invert else a / b

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "sizes": self.sizes,
                "ours": {"label": self.ours_label, "min": min(self.ours), "median": statistics.median(self.ours),
                         "n": len(self.ours)},
                "baseline": {"label": self.baseline_label, "min": min(self.baseline),
                             "median": statistics.median(self.baseline), "n": len(self.baseline)},
                "ratio": round(self.ratio(), 3), "target": self.target, **self.extra}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def table(records: list[dict[str, Any]]) -> str:
    """Markdown table of the figures."""
    rows = ["| figure | sizes | ours (median) | baseline (median) | ratio | target | notes |",
            "|---|---|---|---|---|---|---|"]
    for r in records:
        sizes = ", ".join(f"{k}={v}" for k, v in r.get("sizes", {}).items())
        if "ours" in r:
            ours = f"{r['ours']['label']}: {r['ours']['median']:.4g}"
            base = f"{r['baseline']['label']}: {r['baseline']['median']:.4g}"
        else:
            ours = base = ""
        notes = "; ".join(f"{k}={v}" for k, v in r.items()
                          if k not in ("name", "sizes", "ours", "baseline", "ratio", "target", "machine"))
        rows.append(f"| {r['name']} | {sizes} | {ours} | {base} | {r.get('ratio', '')} | {r.get('target', '')} "
                    f"| {notes} |")
    return "\n".join(rows)
