"""scripts/trigger_run.py refuses bad input before calling anything, and fails cleanly when the API is down."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import unquote

import pytest
import trigger_run
from airflow_local import free_port


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch):
    for name in ("AIRFLOW_API_TOKEN", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def test_missing_credentials_are_bad_input(capsys):
    assert trigger_run.main(["--conf", "{}"]) == trigger_run.EXIT_BAD_INPUT
    assert "AIRFLOW_USERNAME" in capsys.readouterr().err


@pytest.mark.parametrize("conf", ["{not json", "[1, 2]"])
def test_conf_must_be_a_json_object(conf, monkeypatch):
    monkeypatch.setenv("AIRFLOW_API_TOKEN", "t")
    assert trigger_run.main(["--conf", conf]) == trigger_run.EXIT_BAD_INPUT


def test_an_unreachable_api_fails_the_job(monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW_API_TOKEN", "t")
    down = f"http://127.0.0.1:{free_port()}"
    assert trigger_run.main(["--api-url", down, "--timeout", "5"]) == trigger_run.EXIT_FAILED
    assert capsys.readouterr().out == ""  # stdout carries the result line only


class FakeApi:
    """The REST API v2 answers trigger_run reads, from a DAG's tasks and a run's task instances (no server)."""

    def __init__(self, tasks: dict[str, list[str]], instances: list[dict], xcoms: dict[tuple[str, int], object]):
        self.tasks, self.instances, self.xcoms = tasks, instances, xcoms
        self.pages: list[int] = []
        self.xcom_reads: list[str] = []

    def request(self, method: str, url: str, *, params: dict | None = None, **_: object) -> SimpleNamespace:
        path = url.split("/api/v2", 1)[1]
        params = params or {}
        if path.endswith("/tasks"):
            body = {"tasks": [{"task_id": t, "downstream_task_ids": d} for t, d in self.tasks.items()]}
        elif path.endswith("/taskInstances"):
            limit, offset = params["limit"], params["offset"]
            self.pages.append(offset)
            assert limit <= 100  # the API's default page limit
            body = {"task_instances": self.instances[offset:offset + limit], "total_entries": len(self.instances)}
        elif path.endswith("/xcomEntries/return_value"):
            task = unquote(path.split("/taskInstances/")[1].split("/")[0])
            self.xcom_reads.append(task)
            key = (task, params["map_index"])
            if key not in self.xcoms:
                return SimpleNamespace(status_code=404, json=lambda: {}, text="not found")
            body = {"value": self.xcoms[key]}
        else:
            raise AssertionError(f"unexpected call {method} {path}")
        return SimpleNamespace(status_code=200, json=lambda: body, text="")


#: sbi_pipeline's shape, shortened: 250 mapped generate tasks, a gate, and the training stage after it.
PIPELINE = {"configure": ["plan_generate"], "plan_generate": ["generate"], "generate": ["combine_all"],
            "combine_all": ["publish_events", "to_training"], "publish_events": [], "to_training": ["training.train"],
            "training.train": ["inference.report"], "inference.report": []}


def _instances(states: dict[str, str], mapped: int = 250) -> list[dict]:
    out = [{"task_id": t, "map_index": -1, "state": s} for t, s in states.items() if t != "generate"]
    return out[:2] + [{"task_id": "generate", "map_index": i, "state": "success"} for i in range(mapped)] + out[2:]


def test_a_run_stopped_after_the_events_prints_what_ran_last_paging_past_100_instances():
    states = {"configure": "success", "plan_generate": "success", "combine_all": "success",
              "publish_events": "skipped", "to_training": "success", "training.train": "skipped",
              "inference.report": "skipped"}
    xcoms = {("combine_all", -1): {"step": "combine", "events": 4000}, ("to_training", -1): False,
             **{("generate", i): {"step": "generate"} for i in range(250)}}
    fake = FakeApi(PIPELINE, _instances(states), xcoms)
    api = trigger_run.AirflowApi("http://airflow", "t")
    api.session = fake
    assert len(api.task_instances("sbi_pipeline", "r")) == 257 and fake.pages == [0, 100, 200]
    # the gate ran last but carries no summary: the task before it speaks; the skipped report does not
    assert trigger_run.last_summaries(api, "sbi_pipeline", "r") == {"combine_all": {"step": "combine", "events": 4000}}
    assert fake.xcom_reads == ["to_training", "combine_all"]  # not one per generate shard


def test_a_whole_run_prints_its_report_and_a_failed_last_task_is_named():
    states = dict.fromkeys(PIPELINE, "success")
    xcoms = {("combine_all", -1): {"step": "combine"}, ("training.train", -1): {"step": "train"},
             ("inference.report", -1): {"step": "report", "limits": [1.0]}, ("to_training", -1): True}
    api = trigger_run.AirflowApi("http://airflow", "t")
    api.session = FakeApi(PIPELINE, _instances(states, mapped=3), xcoms)
    assert trigger_run.last_summaries(api, "d", "r") == {"inference.report": {"step": "report", "limits": [1.0]}}
    states.update({"publish_events": "skipped", "inference.report": "failed"})
    api.session = FakeApi(PIPELINE, _instances(states, mapped=3), xcoms)
    assert trigger_run.last_summaries(api, "d", "r") == {"inference.report": {"step": "report", "limits": [1.0]}}
    del xcoms[("inference.report", -1)]
    assert trigger_run.last_summaries(api, "d", "r") == {"inference.report": None}
