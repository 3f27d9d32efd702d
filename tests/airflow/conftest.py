"""Fixtures of the Airflow-side tests: an isolated AIRFLOW_HOME, per-test settings, a fake sbi-core.

AIRFLOW_HOME must be set before anything imports airflow, so it is set when this file is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import REPO

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="sbi-airflow-tests-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    }
)
sys.path.insert(0, str(REPO / "scripts"))

METACHARACTERS = 'name=a; rm -rf $HOME "q" '

FAKE_SBI_CORE = Path(__file__).with_name("fake_sbi_core.py")


@pytest.fixture(scope="session", autouse=True)
def _remove_airflow_home() -> Iterator[None]:
    yield
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def sbi_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Default backend and a per-test artifact root, whatever the caller's environment says."""
    for name in ("SBI_BACKEND", "SBI_PROFILES", "SBI_CORE", "SBI_CONFIGS_URI", "SBI_MAX_FAN_OUT", "SBI_POOL_SLOTS",
                 "SBI_CHAIN_STAGES", "SBI_LHE_INBOX", "SBI_LHE_CONFIG", "SBI_AWS_CONN_ID", "SBI_RETRY_DELAY",
                 "SBI_AIRFLOW_DB", "SBI_EXECUTOR", "SBI_COST_RATES", "SBI_TRAIN_SLOTS",
                 *(n for n in os.environ if n.startswith("SBI_SCHEDULE_"))):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SBI_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    # Batches by count, as the DAG-run tests count them (a task per item up to SBI_MAX_FAN_OUT): the sizing by
    # work is tested on the plans themselves (test_fanout.py), and the fake sbi-core's summaries carry no sizes.
    monkeypatch.setenv("SBI_TASK_TARGET_S", "0")
    return tmp_path / "artifacts"


@pytest.fixture
def fake_sbi_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A fake `sbi-core` (tests/airflow/fake_sbi_core.py) selected through SBI_CORE.

    `argv()` is the last call's argument list, `calls()` every call (argv and AIRFLOW_CTX_* it saw)."""
    script = tmp_path / "bin" / "sbi-core"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\n{FAKE_SBI_CORE.read_text()}")
    script.chmod(0o755)
    record, log = tmp_path / "argv.json", tmp_path / "calls.jsonl"
    monkeypatch.setenv("SBI_CORE", str(script))
    monkeypatch.setenv("FAKE_SBI_RECORD", str(record))
    monkeypatch.setenv("FAKE_SBI_LOG", str(log))
    for name in ("FAKE_SBI_EXIT", "FAKE_SBI_FAIL", "FAKE_SBI_FAIL_EXIT", "FAKE_SBI_PLAN", "FAKE_SBI_STDOUT", "FAKE_SBI_STDERR"):
        monkeypatch.delenv(name, raising=False)

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return SimpleNamespace(path=script, record=record, argv=lambda: json.loads(record.read_text()), calls=calls)


@pytest.fixture
def dag_of(monkeypatch: pytest.MonkeyPatch):
    """Parse a DAG file of the repo with a given backend: `dag_of("sbi_pipeline", "kubernetes")`."""

    def parse(dag_id: str, backend: str = "local") -> Any:
        from airflow.dag_processing.dagbag import DagBag

        monkeypatch.setenv("SBI_BACKEND", backend)
        bag = DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py"))
        assert not bag.import_errors, bag.import_errors
        return bag.dags[dag_id]

    return parse


def fake_context(dag: Any, xcoms: dict[tuple[str, str], Any], map_index: int = -1, conf: dict | None = None) -> dict:
    """A template context with no database: `xcoms[(task_id, key)]` answers the XCom pulls."""

    def xcom_pull(task_ids: str, key: str = "return_value", **_: Any) -> Any:
        return xcoms[(task_ids, key)]

    ti = SimpleNamespace(map_index=map_index, xcom_pull=xcom_pull, task=None, dag_id=dag.dag_id)
    return {"dag": dag, "ti": ti, "task_instance": ti, "dag_run": SimpleNamespace(conf=conf or {}), "params": {},
            "run_id": "manual__2026-01-01T00:00:00+00:00"}


@pytest.fixture(scope="session")
def migrated_airflow_home() -> Path:
    """The tests' AIRFLOW_HOME with its metadata database created (for CLI commands that need one)."""
    from airflow_local import migrate

    migrate(dict(os.environ))
    return AIRFLOW_HOME
