"""`make airflow`'s set-up: SQLite and the LocalExecutor by default; SBI_AIRFLOW_DB and SBI_EXECUTOR switch to
the production set-up (tests/airflow/test_production.py starts it); impossible combinations name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow_local import COMPONENTS, WORKER, LocalAirflow, SetupError, embedded_env

HOME = Path("/srv/airflow-home")


def test_the_embedded_default_is_sqlite_and_the_local_executor():
    env = embedded_env(HOME, base={"PATH": "/usr/bin"})
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{HOME / 'airflow.db'}"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor" and "AIRFLOW__CELERY__BROKER_URL" not in env


def test_the_settings_switch_to_postgresql_and_celery():
    base = {"SBI_AIRFLOW_DB": "postgresql://airflow@db.internal:5432/airflow", "SBI_EXECUTOR": "celery",
            "SBI_CELERY_BROKER": "redis://broker:6379/1"}
    env = embedded_env(HOME, base=base)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://airflow@db.internal:5432/airflow"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://broker:6379/1"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg2://airflow@db.internal:5432/airflow"
    airflow = LocalAirflow(home=HOME, extra_env=base)
    assert airflow.celery and WORKER not in COMPONENTS  # start() adds the worker to the four components


@pytest.mark.parametrize("base, name", [
    ({"SBI_EXECUTOR": "celery"}, "SBI_AIRFLOW_DB"),  # Celery on SQLite: Airflow refuses it
    ({"SBI_EXECUTOR": "kubernetes"}, "SBI_EXECUTOR"),
    ({"SBI_AIRFLOW_DB": "mysql://root@db/airflow"}, "SBI_AIRFLOW_DB"),
])
def test_a_setting_that_cannot_work_names_itself(base, name):
    with pytest.raises(SetupError, match=name):
        embedded_env(HOME, base=base)
