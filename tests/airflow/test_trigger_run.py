"""scripts/trigger_run.py refuses bad input before calling anything, and fails cleanly when the API is down."""

from __future__ import annotations

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
