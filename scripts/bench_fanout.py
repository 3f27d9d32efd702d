"""Fan-out figures for `python -m bench fanout`: SIZE generate shards through sbi_pipeline and SIZE networks
through sbi_train under the real scheduler, each against the same work in one process.

- shards: sbi_pipeline with "Run up to: events", SIZE shards of 400 events (the benchmark analysis), at the
  shipped fan-out defaults (SBI_TASK_TARGET_S, pools from the machine); against `sbi-core generate` with every
  shard in one process.
- networks: sbi_train on those events, alices and benchmark_ratio with SIZE / 10 members (SIZE networks:
  (3 + 7) heads and variations x members; members are at most 100, so one method cannot reach 1000), one
  hidden layer of 16, 1 epoch, 1000 training samples per head; against `sbi-core train` with every network in
  one process, on a run derived and sampled the same way.
Per step: the mapped tasks, the step's wall under the scheduler (first task start to last task end), the
one-process wall, their ratio, and the overhead per task (task duration minus the step's own `seconds`);
the API server's and the scheduler's memory (RSS of their process trees) before and after the runs.
LocalExecutor and SQLite (the embedded default), tracking off. Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_local import BIN, REPO, LocalAirflow, free_port, process_tree
from trigger_run import AirflowApi, run

SHARD_EVENTS = 400
METHODS = ["alices", "benchmark_ratio"]
NETWORKS_PER_MEMBER = 10  # alices 1 head + 2 variations, benchmark_ratio 5 heads + 2 variations
TRAIN_SETS = ["training.network.hidden=[16]", "training.samples.test=200", "training.samples.n_thetas=20"]
TRAIN_SAMPLES, EPOCHS = 1000, 1


def _core(*args: str) -> dict[str, Any]:
    out = subprocess.run([str(BIN / "sbi-core"), *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _timed(*args: str) -> float:
    started = time.monotonic()
    _core(*args)
    return time.monotonic() - started


def _repeat(flag: str, items: list[Any]) -> list[str]:
    return [a for item in items for a in (flag, str(item))]


def one_process(workdir: Path, size: int) -> dict[str, Any]:
    """The same work without Airflow: every shard in one `generate`, every network in one `train`."""
    events = workdir / "one" / "events"
    configured = _core("configure", "--config", str(REPO / "configs" / "benchmark.yaml"), "--run", str(events),
                       "--set", f"generation.events={size * SHARD_EVENTS}", "--set", f"generation.shards={size}")
    generate_s = _timed("generate", "--run", str(events), *_repeat("--shard", configured["shards"]))
    for group in range(configured["n_groups"]):
        _core("combine", "--run", str(events), "--group", str(group))
    _core("combine", "--run", str(events), "--all")
    trained = workdir / "one" / "train"
    derived = _core("derive", "--from", str(events), "--run", str(trained), *_repeat("--set", train_sets(size)))
    networks: list[str] = []
    for method in derived["methods"]:
        networks += _core("sample", "--run", str(trained), "--method", method)["networks"]
    train_s = _timed("train", "--run", str(trained), *_repeat("--network", networks))
    return {"generate_s": generate_s, "train_s": train_s, "shards": size, "networks": len(networks)}


def train_sets(size: int) -> list[str]:
    """The sbi_train overrides of the benchmark: SIZE small networks, one epoch."""
    return [f"training.methods={json.dumps(METHODS)}", f"training.members={max(1, size // NETWORKS_PER_MEMBER)}",
            f"training.optimizer.epochs={EPOCHS}", f"training.samples.train={TRAIN_SAMPLES}", *TRAIN_SETS]


def rss_mb(airflow: LocalAirflow, component: str) -> float:
    """Resident memory of a component and every process under it (MiB, from /proc)."""
    total = 0
    for pid in process_tree(airflow.processes[component].pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return round(total / 1024, 1)


def step_figures(api: AirflowApi, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    """Tasks, wall (first start to last end) and the overhead per task of one mapped step of a finished run."""
    tis = [t for t in api.task_instances(dag_id, run_id)
           if t["task_id"] == task_id and t.get("start_date") and t.get("end_date")]
    if not tis:
        return {"tasks": 0, "error": f"no task instance of {task_id} ran"}
    starts = [datetime.fromisoformat(t["start_date"]) for t in tis]
    ends = [datetime.fromisoformat(t["end_date"]) for t in tis]
    durations = [(e - s).total_seconds() for s, e in zip(starts, ends, strict=True)]
    own = [float((api.summary(dag_id, run_id, task_id, t["map_index"]) or {}).get("seconds") or 0.0) for t in tis]
    return {"tasks": len(tis), "scheduled_s": round((max(ends) - min(starts)).total_seconds(), 2),
            "task_mean_s": round(sum(durations) / len(tis), 2), "step_mean_s": round(sum(own) / len(tis), 2),
            "overhead_per_task_s": round((sum(durations) - sum(own)) / len(tis), 2)}


def scheduled(workdir: Path, size: int, timeout: float) -> list[dict[str, Any]]:
    """Both runs under the scheduler (shipped fan-out defaults), with the components' memory around them."""
    env = {"SBI_BACKEND": "local", "SBI_ARTIFACT_ROOT": str(workdir / "artifacts"), "SBI_TRACKING": "off"}
    for name in ("SBI_TASK_TARGET_S", "SBI_MAX_FAN_OUT", "SBI_POOL_SLOTS", "SBI_TRAIN_SLOTS", "SBI_COST_RATES"):
        os.environ.pop(name, None)  # the shipped defaults
    airflow = LocalAirflow(home=workdir / "home", port=free_port(), log_ports=(free_port(), free_port()),
                           components=("api-server", "scheduler", "dag-processor"), extra_env=env)
    out = []
    with airflow:
        airflow.wait_ready()
        api = AirflowApi(airflow.url, AirflowApi.login(airflow.url, *airflow.credentials()))
        before = {c: rss_mb(airflow, c) for c in ("api-server", "scheduler")}
        conf = {"config": "benchmark", "until": "events", "events": size * SHARD_EVENTS, "shards": size}
        started = time.monotonic()
        events = run(api, "sbi_pipeline", conf, timeout, 2.0, tasks=["configure"])
        out.append({"figure": "shards", "size": size, "state": events["state"],
                    "run_wall_s": round(time.monotonic() - started, 1),
                    **step_figures(api, "sbi_pipeline", events["run_id"], "generate")})
        conf = {"source_run": events["summaries"]["configure"]["run"], "set": train_sets(size)}
        started = time.monotonic()
        trained = run(api, "sbi_train", conf, timeout, 2.0, tasks=["derive"])
        out.append({"figure": "networks", "size": size, "state": trained["state"],
                    "run_wall_s": round(time.monotonic() - started, 1),
                    **step_figures(api, "sbi_train", trained["run_id"], "training.train")})
        after = {c: rss_mb(airflow, c) for c in ("api-server", "scheduler")}
        parallelism = airflow.env["AIRFLOW__CORE__PARALLELISM"]
    out.append({"figure": "memory_mb", "before": before, "after": after, "parallelism": parallelism})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="shards, and networks (a multiple of 10)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for each run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sbi-bench-fanout-") as tmp:
        baseline = one_process(Path(tmp), args.size)
        _emit({"figure": "one_process", **{k: round(v, 2) if isinstance(v, float) else v for k, v in baseline.items()}})
        for figure in scheduled(Path(tmp), args.size, args.timeout):
            key = {"shards": "generate_s", "networks": "train_s"}.get(figure["figure"])
            if key and "scheduled_s" in figure:
                figure.update(one_process_s=round(baseline[key], 2), ratio=round(figure["scheduled_s"] / baseline[key], 2))
            _emit({**figure, "cpus": os.cpu_count()})
    return 0


def _emit(figure: dict[str, Any]) -> None:
    print(json.dumps({"bench": "fanout", **figure}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
