"""combine: 16 shards into one file vs `cp` of the same bytes; peak RSS at two sizes (8x apart).

The baseline pays the same durability as combine, which fsyncs its output and the directory it renames
it into (`sbi_core.storage.atomic_write`): `cp` followed by an fsync of each copy and of the directory.
The plain `cp` (no fsync: the page cache absorbs it) is printed beside it, with the ratio against it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import Figure, emit, repeat

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "benchmark.yaml"
N_SHARDS = 16

# Peak RSS from VmHWM, the high-water mark of this process's own memory: ru_maxrss would also count
# the parent's RSS at fork time (Linux carries it across exec), and the parent grows while generating.
_RSS_SCRIPT = """
import json, sys, time
from sbi_core.data.combine import combine_files
def hwm_kib():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
inputs, output, digest = json.loads(sys.argv[1])
base = hwm_kib()
t0 = time.perf_counter()
out = combine_files(inputs, output, config_hash=digest)
print(json.dumps({"seconds": time.perf_counter() - t0, "rss_before_kib": base, "peak_rss_kib": hwm_kib(), **out}))
"""


def _make_shards(root: Path, events_per_shard: int) -> tuple[list[str], str]:
    from sbi_core import steps

    run = root / f"run-{events_per_shard}"
    s = steps.configure(str(CONFIG), str(run), [f"generation.events={events_per_shard * N_SHARDS}",
                                                f"generation.shards={N_SHARDS}", "generation.shards_per_group=16"])
    steps.generate(str(run), s["shards"])
    from sbi_core.layout import RunLayout

    layout = RunLayout(str(run))
    return [layout.shard(i) for i in range(N_SHARDS)], s["config_hash"]


def fsync_copies(directory: Path) -> None:
    """fsync every file in `directory`, then the directory itself (what combine pays for its output)."""
    for path in directory.iterdir():
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rss(inputs: list[str], output: str, digest: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, json.dumps([inputs, output, digest])],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(res.stdout.splitlines()[-1])


def run(quick: bool) -> list[dict[str, Any]]:
    from sbi_core.data.combine import combine_files

    # Both sizes have full 16384-row chunks, so peak RSS compares like with like (it scales with the
    # chunk size, which the plan caps, not with the number of events).
    small, repeats = (16_384, 5) if quick else (65_536, 7)
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-combine-") as tmp:
        root = Path(tmp)
        rss = {}
        for per_shard in (small, small * 8):
            inputs, digest = _make_shards(root, per_shard)
            out = root / f"combined-{per_shard}.h5"
            nbytes = sum(Path(p).stat().st_size for p in inputs)
            cp_dir = root / f"cp-{per_shard}"
            cp_dir.mkdir()

            def ours(inputs=inputs, out=out, digest=digest):
                combine_files(inputs, str(out), config_hash=digest)

            def cp(inputs=inputs, cp_dir=cp_dir):
                subprocess.run(["cp", *inputs, str(cp_dir)], check=True)

            def cp_fsync(cp=cp, cp_dir=cp_dir):
                cp()
                fsync_copies(cp_dir)

            ours()
            cp_fsync()  # warm the page cache for both sides equally
            t_ours, t_cp, t_plain = repeat(ours, repeats), repeat(cp_fsync, repeats), repeat(cp, repeats)
            info = _rss(inputs, str(root / "rss.h5"), digest)
            rss[per_shard] = info["peak_rss_kib"]
            fig = Figure(name="combine", sizes={"shards": N_SHARDS, "events": per_shard * N_SHARDS,
                                                "MB": round(nbytes / 1e6, 1)},
                         ours=t_ours, baseline=t_cp, ours_label="combine s", baseline_label="cp+fsync s",
                         target="<= 2.0",
                         extra={"cp_plain_s": round(statistics.median(t_plain), 4),
                                "ratio_vs_plain_cp": round(statistics.median(t_ours) / statistics.median(t_plain), 3),
                                "raw_chunks": info["raw_chunks"], "decoded_chunks": info["decoded_chunks"],
                                "peak_rss_MiB": round(info["peak_rss_kib"] / 1024, 1),
                                "MB_per_s": round(nbytes / 1e6 / min(t_ours), 1)})
            records.append(fig.record())
            emit(records[-1])
        growth = {"name": "combine_peak_rss", "sizes": {"events_small": small * N_SHARDS,
                                                        "events_large": small * 8 * N_SHARDS},
                  "ratio": round(rss[small * 8] / rss[small], 3), "target": "~1.0 (must not grow with events)",
                  "peak_rss_MiB_small": round(rss[small] / 1024, 1),
                  "peak_rss_MiB_large": round(rss[small * 8] / 1024, 1)}
        records.append(growth)
        emit(growth)
    return records
