"""Run sbi_pipeline once on this machine (`make demo`): embedded Airflow, local backend, configs/benchmark.yaml.

Uses `dag.test()`: the tasks run one after another in this process (steps as subprocesses), recorded
in the same metadata database `make airflow` serves, so the run can be opened in the UI afterwards.
Prints where the combined event file is and how many events it holds (`--json`: one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from airflow_local import DEFAULT_HOME, embedded_env, migrate

DAG_ID = "sbi_pipeline"
LAST_STEP = "combine_all"


def run_pipeline(conf: dict[str, Any]) -> dict[str, Any]:
    """One `dag.test()` run of sbi_pipeline in the current (already configured) Airflow environment."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    started = time.monotonic()
    dag_run = bag.get_dag(DAG_ID).test(run_conf=conf)
    seconds = time.monotonic() - started
    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == DAG_ID,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == LAST_STEP,
                XComModel.key == "return_value",
            )
        ).all()
        summary = XComModel.deserialize_value(rows[0]) if rows else None
    state = getattr(dag_run.state, "value", dag_run.state)
    return {"run_id": dag_run.run_id, "state": state, "seconds": round(seconds, 2), "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmark", help="shipped config name (configs/<name>.yaml)")
    parser.add_argument("--events", type=int, help="override generation.events")
    parser.add_argument("--shards", type=int, help="override generation.shards")
    parser.add_argument("--seed", type=int, help="override generation.seed")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="any other override")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("SBI_AIRFLOW_HOME", DEFAULT_HOME)))
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the report")
    args = parser.parse_args(argv)

    os.environ.update(embedded_env(args.home.resolve()))  # before anything imports airflow
    migrate(dict(os.environ))
    conf = {"config": args.config, "events": args.events, "shards": args.shards, "seed": args.seed, "set": args.set}
    result = run_pipeline(conf)
    summary = result["summary"] or {}
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(
            f"\nsbi_pipeline run {result['run_id']}: {result['state']} in {result['seconds']:.1f} s\n"
            f"Combined events: {summary.get('output')}\n"
            f"Events in it:    {summary.get('n_events')}\n"
            f"See it in the UI: `make airflow`, log in, then open\n"
            f"  http://127.0.0.1:8080/dags/{DAG_ID}/runs/{result['run_id']}",
            flush=True,
        )
    return 0 if result["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
