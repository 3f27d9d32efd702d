"""ingest-lhe: events/s against pylhe's own parse of the same file; peak RSS at two file sizes (must stay flat).

The files are the toy MadGraph-style Drell-Yan files of tests/physics/lhe_files.py (2-3 final-state
particles, six reweighting weights per event), plain text. `ours` is the whole `ingest-lhe` of one file
(parse, detector, observables, cuts, parts, shard); the baseline iterates pylhe's event generator over the
same file and does nothing else: the ratio is the cost of everything ingest adds to parsing. Both run in
a fresh subprocess, one core (OMP_NUM_THREADS=1); peak RSS is that subprocess's VmHWM.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.common import Figure, emit

REPO = Path(__file__).resolve().parents[1]

_INGEST = """
import json, sys, time
def hwm_kib():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
from sbi_core import steps
from sbi_core.data.ingest import ingest_lhe
import pylhe  # imported before the clock starts, as in the baseline
config, run = sys.argv[1], sys.argv[2]
steps.configure(config, run)
base = hwm_kib()
t0 = time.perf_counter()
out = ingest_lhe(run, [0])["files"][0]
print(json.dumps({"seconds": time.perf_counter() - t0, "rss_before_kib": base, "peak_rss_kib": hwm_kib(), **out}))
"""

_PARSE = """
import json, sys, time
import pylhe
t0 = time.perf_counter()
n = sum(1 for _ in pylhe.LHEFile.fromfile(sys.argv[1]).events)
print(json.dumps({"seconds": time.perf_counter() - t0, "events": n}))
"""


def _run(script: str, *args: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _config(root: Path, lhe: Path) -> Path:
    data = yaml.safe_load((REPO / "configs" / "lhe_example.yaml").read_text())
    data["simulator"]["options"]["files"] = [str(lhe)]
    data["simulator"]["options"]["part_events"] = 10_000
    data["generation"]["shards"] = 1
    path = root / f"{lhe.stem}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(quick: bool) -> list[dict[str, Any]]:
    sys.path.insert(0, str(REPO))
    from tests.physics.lhe_files import write_lhe

    small, factor, repeats = (10_000, 4, 1) if quick else (50_000, 8, 3)
    records, rss = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        for n in (small, small * factor):
            lhe = root / f"dy-{n}.lhe"
            write_lhe(lhe, n, seed=1)
            config = _config(root, lhe)
            ours, base, info = [], [], {}
            for r in range(repeats if n == small else 1):
                info = _run(_INGEST, str(config), str(root / f"run-{n}-{r}"))
                ours.append(info["seconds"])
                base.append(_run(_PARSE, str(lhe))["seconds"])
            rss[n] = info["peak_rss_kib"]
            fig = Figure(name="ingest_lhe", sizes={"events": n, "MB": round(lhe.stat().st_size / 1e6, 1)},
                         ours=ours, baseline=base, ours_label="ingest-lhe s", baseline_label="pylhe parse s",
                         target="<= 2.0 (parsing dominates)",
                         extra={"events_per_s": round(n / min(ours)), "parse_events_per_s": round(n / min(base)),
                                "kept": info["n_events"], "peak_rss_MiB": round(info["peak_rss_kib"] / 1024, 1)})
            records.append(fig.record())
            emit(records[-1])
    growth = {"name": "ingest_lhe_peak_rss", "sizes": {"events_small": small, "events_large": small * factor},
              "ratio": round(rss[small * factor] / rss[small], 3), "target": "~1.0 (must not grow with the file)",
              "peak_rss_MiB_small": round(rss[small] / 1024, 1), "peak_rss_MiB_large": round(rss[small * factor] / 1024, 1)}
    records.append(growth)
    emit(growth)
    return records
