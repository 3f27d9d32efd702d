"""Run sbi_pipeline once on this machine (`make demo`): embedded Airflow, local backend, configs/benchmark.yaml.

Uses `dag.test()`: the tasks run one after another in this process (steps as subprocesses), recorded
in the same metadata database `make airflow` serves, so the run can be opened in the UI afterwards.
Airflow's own log goes to a file (its path is printed); the terminal gets one line per finished task,
then a table of the tasks (mapped ones summarised) and the figures a user came for: events, networks,
the fit, the interval, where the plots and results.json are (`--json`: one JSON line instead).

Demo size: the benchmark config asks for 200k events and full trainings; the demo runs a smaller
analysis so that it finishes in a few minutes on 2 cores (DEMO_SETTINGS below; a command-line flag or
`--set` wins, `--full-size` keeps the config as it is). A setting whose field the config schema does not
have is left out, so the demo runs whatever stages this checkout has.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from airflow_local import DEFAULT_HOME, REPO, embedded_env, migrate

DAG_ID = "sbi_pipeline"
STAGES = ("events", "training", "inference")
#: The demo's analysis, smaller than configs/benchmark.yaml (generation 200k events, training and
#: inference defaults): few events, small ensembles, few epochs and samples (at a larger learning rate, so
#: the networks still learn: ALICES's closure RMS at the truth about 0.4 x the untrained one), a coarse scan,
#: few toys. The scans, limits and toys use the exact likelihood (inference.source defaults to exact); the fit
#: step also fits the learned likelihood of ALICES and of benchmark_ratio on the same dataset
#: (inference.compare), printed beside the exact fit. No per-variation networks: the energy-scale shape then
#: enters the learned fits through its rate change alone (docs/likelihood-model.md).
DEMO_SETTINGS: dict[str, Any] = {
    "generation.events": 20_000,
    "generation.shards": 4,
    "generation.shards_per_group": 2,
    "training.members": 2,
    "training.variations": False,
    "training.optimizer.epochs": 10,
    "training.optimizer.learning_rate": 0.01,
    "training.optimizer.learning_rate_final": 0.001,
    "training.samples.train": 6_000,
    "training.samples.test": 2_000,
    "inference.compare": "[alices, benchmark_ratio]",
    "inference.scan.points": 11,
    "inference.scan.blocks": 2,
    "inference.toys.n": 20,
    "inference.toys.batch": 10,
}
#: Few, larger tasks: `dag.test()` runs tasks one at a time and each step pays its interpreter start
#: (numpy, h5py, torch or jax imports), so shards and networks go 4 tasks per step at most. The demo's
#: ranges stay within it (1 Hessian block, 2 scan blocks, 2 toy blocks, 1 evaluate batch): no range is
#: merged, which the joins (assemble, limits, report) need as long as they look for the configured blocks.
DEMO_MAX_FAN_OUT = "4"
FLAGS = {"events": "generation.events", "shards": "generation.shards", "seed": "generation.seed"}
_END_TASK = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")


def demo_conf(args: argparse.Namespace, schema: dict[str, Any]) -> dict[str, Any]:
    """The run conf: the config, how far to run, the demo settings the schema knows, then the user's."""
    from operators.params import has_field

    given = {FLAGS[k] for k in FLAGS if getattr(args, k) is not None}
    given |= {item.split("=", 1)[0] for item in args.set}
    demo = {} if args.full_size else {p: v for p, v in DEMO_SETTINGS.items() if p not in given and has_field(schema, p)}
    sets = [f"{path}={json.dumps(value) if isinstance(value, bool) else value}" for path, value in demo.items()]
    return {"config": args.config, "until": args.until, "events": args.events, "shards": args.shards,
            "seed": args.seed, "set": [*sets, *args.set]}


@contextmanager
def quiet(log_path: Path) -> Iterator[TextIO]:
    """Send fds 1 and 2 (Airflow's log, the steps' output) to `log_path`; yield the real terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        terminal.close()


def follow(log_path: Path, terminal: TextIO, started: float, stop: threading.Event) -> None:
    """Print a line per task instance as `dag.test()` logs its end (read from the log file)."""
    with open(log_path, errors="replace") as fh:
        while True:
            line = fh.readline()
            if not line:
                if stop.is_set():
                    return
                time.sleep(0.2)
                continue
            match = _END_TASK.search(line)
            if match:
                task, index = match.groups()
                label = task if index == "-1" else f"{task}[{index}]"
                terminal.write(f"  {time.monotonic() - started:7.1f} s  done  {label}\n")


def run_pipeline(conf: dict[str, Any], log_path: Path | None = None, terminal: TextIO | None = None) -> dict[str, Any]:
    """One `dag.test()` run of the DAG `DAG_ID` in the current (already configured) Airflow environment:
    state, seconds, `tasks` and `summaries` (every step's XCom), `summary` (combine_all's). With a
    `terminal`, a line per finished task goes there, read from Airflow's log at `log_path`."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    started = time.monotonic()
    stop = threading.Event()
    follower = None
    if terminal is not None and log_path is not None:
        follower = threading.Thread(target=follow, args=(log_path, terminal, started, stop), daemon=True)
        follower.start()
    try:
        dag_run = bag.get_dag(DAG_ID).test(run_conf=conf)
    finally:
        stop.set()
        if follower is not None:
            follower.join(timeout=5)
    seconds = time.monotonic() - started
    state = getattr(dag_run.state, "value", dag_run.state)
    records = _records(dag_run.run_id)
    return {"run_id": dag_run.run_id, "state": str(state), "seconds": round(seconds, 2), **records,
            "summary": records["summaries"].get("combine_all")}


def _records(run_id: str) -> dict[str, Any]:
    """Per task: instances, their states and seconds (first start to last end); and every step's XCom."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    tasks: dict[str, dict[str, Any]] = {}
    summaries: dict[str, list[Any]] = {}
    with create_session() as session:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == DAG_ID,
                                                         TaskInstance.run_id == run_id)).all()
        for ti in sorted(tis, key=lambda t: (t.start_date is None, t.start_date or 0, t.map_index)):
            entry = tasks.setdefault(ti.task_id, {"n": 0, "states": Counter(), "start": None, "end": None})
            entry["n"] += 1
            entry["states"][str(getattr(ti.state, "value", ti.state))] += 1
            if ti.start_date and (entry["start"] is None or ti.start_date < entry["start"]):
                entry["start"] = ti.start_date
            if ti.end_date and (entry["end"] is None or ti.end_date > entry["end"]):
                entry["end"] = ti.end_date
        rows = session.scalars(select(XComModel).where(XComModel.dag_id == DAG_ID, XComModel.run_id == run_id,
                                                       XComModel.key == "return_value")).all()
        for row in sorted(rows, key=lambda r: r.map_index):
            summaries.setdefault(row.task_id, []).append(XComModel.deserialize_value(row))
    table = {
        task: {"n": e["n"], "states": dict(e["states"]),
               "seconds": round((e["end"] - e["start"]).total_seconds(), 2) if e["start"] and e["end"] else None}
        for task, e in tasks.items()
    }
    return {"tasks": table, "summaries": {k: v[0] if len(v) == 1 else v for k, v in summaries.items()}}


def report(result: dict[str, Any], log_path: Path) -> str:
    """The compact view: the task table, then the figures (read defensively: steps may lack some keys)."""
    lines = [f"\n{DAG_ID} run {result['run_id']}: {result['state']} in {result['seconds']:.1f} s\n",
             f"  {'task':<34} {'n':>3}  {'state':<28} {'seconds':>8}"]
    skipped: Counter = Counter()
    for task, e in result["tasks"].items():
        if e["states"] == {"skipped": e["n"]}:  # stages the run did not reach: one line per group below
            skipped[task.split(".")[0] + (".*" if "." in task else "")] += 1
            continue
        states = ", ".join(f"{s} x{n}" if e["n"] > 1 else s for s, n in sorted(e["states"].items()))
        seconds = "" if e["seconds"] is None else f"{e['seconds']:.1f}"
        lines.append(f"  {task:<34} {e['n']:>3}  {states:<28} {seconds:>8}")
    lines += [f"  {group:<34} {'':>3}  skipped ({n} tasks)" for group, n in skipped.items()]
    lines.append("  (the first task's seconds include dag.test()'s one-time start of Airflow's task API)")
    s = result["summaries"]
    lines.append("")
    events = _one(s.get("combine_all"))
    if events:
        lines.append(f"Events:        {events.get('n_events')} in {events.get('output')}")
    lines += _networks(s.get("training.train"), _one(s.get("training.ensemble")))
    lines += _figures("Evaluation:", _one(s.get("training.evaluate_report")))
    lines += _closure(_one(s.get("training.evaluate_report")))
    lines += _fit(_one(s.get("inference.fit")))
    lines += _learned_vs_exact(_one(s.get("inference.fit")))
    lines += _intervals(_one(s.get("inference.report")))
    lines += _figures("Results:", _one(s.get("inference.report")))
    lines.append(f"Full log:      {log_path}")
    lines.append(f"See it in the UI: `make airflow`, log in, then open\n"
                 f"  http://127.0.0.1:8080/dags/{DAG_ID}/runs/{result['run_id']}")
    return "\n".join(lines)


def _one(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _networks(train: Any, ensemble: dict[str, Any] | None) -> list[str]:
    """Every trained network with its validation loss (the train tasks' summaries: `results` by network id,
    else a `networks` list), and the failed ones the ensemble step names."""
    summaries = train if isinstance(train, list) else [train] if isinstance(train, dict) else []
    rows = []
    for summary in filter(None, map(_one, summaries)):
        results = summary.get("results")
        if isinstance(results, dict):
            entries = [{"id": k, **v} for k, v in results.items() if isinstance(v, dict)]
        else:
            entries = summary.get("networks") or []
        for net in entries:
            if isinstance(net, dict):
                loss = net.get("best_val_loss")
                loss = f"{loss:.4g}" if isinstance(loss, int | float) else loss
                rows.append(f"  {net.get('id', '?'):<44} val loss {loss}  {net.get('status', '')}".rstrip())
            else:
                rows.append(f"  {net}")
    failed = (ensemble or {}).get("failed_networks") or []
    if failed:
        rows.append(f"  failed (the ensemble went on without them): {', '.join(map(str, failed))}")
    return [f"Networks:      {len(rows) - bool(failed)} trained", *rows] if rows else []


def _intervals(report: dict[str, Any] | None) -> list[str]:
    """`poi in [lo, hi] at level`, from the report summary's `intervals` (its headline)."""
    intervals = (report or {}).get("intervals")
    if not isinstance(intervals, dict):
        return []
    parts = []
    for poi, iv in intervals.items():
        if isinstance(iv, dict) and {"lo", "hi"} <= set(iv):
            level = iv.get("level")
            level = f" at {level:.0%}" if isinstance(level, int | float) else ""
            parts.append(f"{poi} in [{_num(iv['lo'])}, {_num(iv['hi'])}]{level}")
    return [f"Interval:      {'; '.join(parts)}"] if parts else []


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def _fit(fit: dict[str, Any] | None) -> list[str]:
    """Best-fit values +- errors, wherever the fit summary keeps them."""
    if not fit:
        return []
    found = _find_values(fit)
    if not found:
        return _figures("Fit:", fit)
    values, errors = found
    parts = [f"{k} = {v:.4g} +- {errors.get(k, float('nan')):.2g}" for k, v in values.items()
             if isinstance(v, int | float)]
    valid = fit.get("valid", (fit.get("fit") or {}).get("valid") if isinstance(fit.get("fit"), dict) else None)
    return [f"Fit:           {', '.join(parts)}" + ("" if valid is None else f"  (valid: {valid})")]


def _closure(evaluation: dict[str, Any] | None) -> list[str]:
    """Per closure family, the learned log r's RMS against the exact one at the truth beside log r = 0's (an
    untrained network's), read from the evaluation's metrics.json."""
    uri = (evaluation or {}).get("metrics")
    if not isinstance(uri, str) or not Path(uri).is_file():
        return []
    closure = json.loads(Path(uri).read_text()).get("closure") or {}
    rows = [f"  {family:<16} learned {t['true']['rms']:.3f}  untrained {t['true']['rms_trivial']:.3f}  ratio "
            f"{t['true']['rms'] / t['true']['rms_trivial']:.2f}" for family, c in closure.items()
            if isinstance(t := c.get("thetas"), dict) and "true" in t]
    return ["Closure RMS at the truth (learned vs exact log r):", *rows] if rows else []


def _learned_vs_exact(fit: dict[str, Any] | None) -> list[str]:
    """Each learned method's fit beside the exact one: value +- error, width ratio, shift in exact errors."""
    cmp = (fit or {}).get("learned_vs_exact") or {}
    exact, methods = cmp.get("exact") or {}, cmp.get("methods") or {}
    if not methods:
        return [f"Learned fits:  {cmp['skipped']}"] if "skipped" in cmp else []
    lines = ["Learned vs exact fit (68% width = 2 x Hesse error):"]
    for poi, err in (exact.get("errors") or {}).items():
        if poi not in next(iter(methods.values()))["parameters"]:
            continue
        lines.append(f"  {'exact':<16} {poi} = {exact['values'][poi]:.4g} +- {err:.2g}")
        for method, c in methods.items():
            r = c["parameters"][poi]
            lines.append(f"  {method:<16} {poi} = {r['learned']:.4g} +- {r['learned_width_68'] / 2:.2g}   width ratio "
                         f"{r['width_ratio']:.2f}, shift {r['shift_in_exact_errors']:+.2f} exact errors"
                         + ("" if c.get("valid", True) else "  (fit not valid)"))
    return lines


def _find_values(node: Any, depth: int = 0) -> tuple[dict[str, Any], dict[str, Any]] | None:
    if not isinstance(node, dict) or depth > 3:
        return None
    if isinstance(node.get("values"), dict) and isinstance(node.get("errors"), dict):
        return node["values"], node["errors"]
    for child in node.values():
        found = _find_values(child, depth + 1)
        if found:
            return found
    return None


def _figures(title: str, summary: dict[str, Any] | None) -> list[str]:
    """A summary's paths and small items (headline numbers), one per line; long lists left to the XCom."""
    if not summary:
        return []
    out = []
    for key, value in summary.items():
        if key in ("step", "run", "argv", "seconds"):
            continue
        if isinstance(value, str):  # paths and names: always shown, whatever their length
            out.append(f"  {key}: {value}")
        elif len(text := json.dumps(value)) <= 160:
            out.append(f"  {key}: {text}")
    return [title, *out] if out else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmark", help="shipped config name (configs/<name>.yaml)")
    parser.add_argument("--events", type=int, help="override generation.events")
    parser.add_argument("--shards", type=int, help="override generation.shards")
    parser.add_argument("--seed", type=int, help="override generation.seed")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="any other override")
    parser.add_argument("--until", choices=STAGES, default=STAGES[-1], help="last stage to run (default: all)")
    parser.add_argument("--full-size", action="store_true", help="the config's own sizes, not the demo's")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("SBI_AIRFLOW_HOME", DEFAULT_HOME)))
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the report")
    args = parser.parse_args(argv)

    home = args.home.resolve()
    os.environ.update(embedded_env(home, database="", executor="local"))  # the embedded default, before airflow loads
    os.environ.setdefault("SBI_MAX_FAN_OUT", DEMO_MAX_FAN_OUT)
    migrate(dict(os.environ))
    sys.path.insert(0, str(REPO))
    from operators.params import analysis_schema

    conf = demo_conf(args, analysis_schema())
    log_dir = home / "logs" / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"demo-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    if args.json:
        with quiet(log_path):
            result = run_pipeline(conf, log_path, None)
        print(json.dumps({**result, "log": str(log_path), "conf": conf}), flush=True)
    else:
        print(f"Running {DAG_ID} (up to: {args.until}); Airflow's log goes to {log_path}", flush=True)
        with quiet(log_path) as terminal:
            result = run_pipeline(conf, log_path, terminal)
        print(report(result, log_path), flush=True)
    return 0 if result["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
