"""Trigger a DAG run through the Airflow 3 REST API, wait for it, print its state and last steps' summaries.

For CI: credentials come from the environment, never from the command line.
  AIRFLOW_API_URL    base URL of the API server (default http://127.0.0.1:8080)
  AIRFLOW_API_TOKEN  a bearer token, or else
  AIRFLOW_USERNAME / AIRFLOW_PASSWORD  exchanged for one at POST /auth/token
Prints one JSON line on stdout ({"dag_id", "run_id", "state", "summaries": {task: XCom}}: those of the last
tasks that ran, or those named by --task); progress goes to stderr. The last tasks that ran are the ones no
later task ran after: a run stopped early ("Run up to: events") ends at `combine_all`, not at the skipped
report; a gate or other task without a step summary gives way to the tasks before it; a mapped task gives the
list of its instances' summaries. Task instances are read page by page (the API returns 100 at most). Exit 0 when the run succeeds, 1 when it fails, 2 on bad input, 3 on timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any
from urllib.parse import quote

import requests

FINISHED = {"success", "failed"}
#: Task instance states of a task that did not run in this run (its summary, if any, is not this run's).
DID_NOT_RUN = {None, "skipped", "upstream_failed", "removed", "scheduled", "queued", "none", "no_status"}
PAGE = 100  # the API's default page limit (its `maximum_page_limit` may be higher, never assumed)
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TIMEOUT = 1, 2, 3


class ApiError(RuntimeError):
    """An API call answered with an unexpected status; the message has the method, path and body."""


class AirflowApi:
    """The few REST API v2 calls a CI job needs, over one authenticated session."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    @staticmethod
    def login(url: str, username: str, password: str, timeout: float = 30.0) -> str:
        """A bearer token for these credentials (SimpleAuthManager or any manager serving /auth/token)."""
        resp = requests.post(
            f"{url.rstrip('/')}/auth/token", json={"username": username, "password": password}, timeout=timeout
        )
        if resp.status_code not in (200, 201):
            raise ApiError(f"POST /auth/token -> {resp.status_code}: {resp.text[:300]}")
        return resp.json()["access_token"]

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        resp = self.session.request(method, f"{self.url}/api/v2{path}", timeout=self.timeout, **kwargs)
        if resp.status_code not in ok:
            raise ApiError(f"{method} /api/v2{path} -> {resp.status_code}: {resp.text[:500]}")
        return resp

    def wait_for_dag(self, dag_id: str, deadline: float) -> dict[str, Any]:
        """The DAG's details once the dag-processor has parsed it."""
        while True:
            resp = self.call("GET", f"/dags/{quote(dag_id)}", ok=(200, 404))
            if resp.status_code == 200:
                return resp.json()
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAG {dag_id!r} did not appear (not parsed yet, or an import error)")
            time.sleep(2.0)

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{quote(dag_id)}", params={"update_mask": "is_paused"}, json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        body = {"logical_date": None, "conf": conf}
        return self.call("POST", f"/dags/{quote(dag_id)}/dagRuns", ok=(200, 201), json=body).json()["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.call("GET", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}").json()["state"]

    def tasks(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's tasks (`task_id`, `downstream_task_ids`, ...)."""
        return self.call("GET", f"/dags/{quote(dag_id)}/tasks").json()["tasks"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (a mapped task has one per map index), read page by page."""
        path = f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances"
        out: list[dict[str, Any]] = []
        while True:
            page = self.call("GET", path, params={"limit": PAGE, "offset": len(out)}).json()
            out.extend(page["task_instances"])
            total = page.get("total_entries")
            if not page["task_instances"] or (isinstance(total, int) and len(out) >= total):
                return out

    def summary(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """The task's return value (its step summary), or None when it pushed none."""
        path = f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}/xcomEntries/return_value"
        resp = self.call("GET", path, ok=(200, 404), params={"deserialize": "true", "map_index": map_index})
        return resp.json().get("value") if resp.status_code == 200 else None


def last_summaries(api: AirflowApi, dag_id: str, run_id: str) -> dict[str, Any]:
    """The summaries of the last tasks that ran with one: tasks that pushed a step summary (a JSON object), or
    failed, and after which no task that ran did. A gate that stopped the run, or a skipped report, is passed
    over. Summaries are fetched only for tasks with nothing of the kind after them (not for every shard)."""
    ran: dict[str, list[int]] = {}
    failed: set[str] = set()
    for ti in api.task_instances(dag_id, run_id):
        if ti.get("state") not in DID_NOT_RUN:
            ran.setdefault(ti["task_id"], []).append(int(ti.get("map_index", -1)))
        if ti.get("state") == "failed":
            failed.add(ti["task_id"])
    downstream = {t["task_id"]: [d for d in t.get("downstream_task_ids") or () if d in ran] for t in api.tasks(dag_id)}
    values: dict[str, Any] = {}
    below: dict[str, bool] = {}

    def speaks(task: str) -> bool:  # failed, or pushed a step summary
        if task not in values:
            got = [api.summary(dag_id, run_id, task, i) for i in sorted(ran[task])]
            values[task] = got[0] if sorted(ran[task]) == [-1] else got
        return task in failed or any(isinstance(v, dict) for v in (values[task] if isinstance(values[task], list)
                                                                   else [values[task]]))

    def after(task: str) -> bool:  # a task after this one ran and speaks
        if task not in below:
            below[task] = any(after(d) or speaks(d) for d in downstream.get(task, ()))
        return below[task]

    return {task: values[task] for task in sorted(ran) if not after(task) and speaks(task)}


def run(api: AirflowApi, dag_id: str, conf: dict[str, Any], timeout: float, poll: float,
        tasks: list[str] | None = None) -> dict[str, Any]:
    """Unpause if needed, trigger, poll until finished or `timeout`; the result line (summaries of `tasks`,
    default the leaf tasks)."""
    deadline = time.monotonic() + timeout
    dag = api.wait_for_dag(dag_id, deadline)
    if dag.get("is_paused"):
        _say(f"unpausing {dag_id}")
        api.unpause(dag_id)
    run_id = api.trigger(dag_id, conf)
    _say(f"triggered {dag_id} run {run_id}")
    state = api.run_state(dag_id, run_id)
    while state not in FINISHED:
        if time.monotonic() > deadline:
            return {"dag_id": dag_id, "run_id": run_id, "state": state, "timed_out": True, "summaries": {}}
        time.sleep(poll)
        new_state = api.run_state(dag_id, run_id)
        if new_state != state:
            _say(f"run {run_id}: {new_state}")
        state = new_state
    if tasks:
        summaries = {task: api.summary(dag_id, run_id, task) for task in tasks}
    else:
        summaries = last_summaries(api, dag_id, run_id)
    return {"dag_id": dag_id, "run_id": run_id, "state": state, "summaries": summaries}


def _say(message: str) -> None:
    print(f"[trigger_run] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", default=os.environ.get("AIRFLOW_API_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--dag-id", default="sbi_pipeline")
    parser.add_argument("--conf", default="{}", help="run conf as a JSON object, e.g. '{\"events\": 4000}'")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between state checks")
    parser.add_argument("--task", action="append", default=[], metavar="TASK_ID",
                        help="print this task's summary (repeatable; default: the last tasks that ran, e.g. "
                        "inference.report, or combine_all for a run stopped after the events)")
    args = parser.parse_args(argv)
    try:
        conf = json.loads(args.conf)
        if not isinstance(conf, dict):
            raise ValueError("must be a JSON object")
    except ValueError as exc:
        _say(f"--conf: {exc}")
        return EXIT_BAD_INPUT
    token = os.environ.get("AIRFLOW_API_TOKEN")
    user, password = os.environ.get("AIRFLOW_USERNAME"), os.environ.get("AIRFLOW_PASSWORD")
    if not token and not (user and password):
        _say("set AIRFLOW_API_TOKEN, or AIRFLOW_USERNAME and AIRFLOW_PASSWORD")
        return EXIT_BAD_INPUT
    try:
        token = token or AirflowApi.login(args.api_url, user or "", password or "")
        result = run(AirflowApi(args.api_url, token), args.dag_id, conf, args.timeout, args.poll, args.task)
    except TimeoutError as exc:
        _say(str(exc))
        return EXIT_TIMEOUT
    except (ApiError, requests.RequestException) as exc:
        _say(str(exc))
        return EXIT_FAILED
    print(json.dumps(result), flush=True)
    _say(f"run {result['run_id']} finished: {result['state']}")
    if result.get("timed_out"):
        return EXIT_TIMEOUT
    return 0 if result["state"] == "success" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
