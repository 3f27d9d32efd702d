"""DAG files stay cheap to parse: no heavy imports, and the dag-processor's own figure stays small."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from bench_dag import DAG_FILES, SHARED_IMPORTS, parse_seconds

from tests.conftest import REPO

HEAVY = {"torch", "jax", "h5py", "mlflow", "sbi_core"}
POD_OPERATOR = "airflow.providers.cncf.kubernetes.operators.pod"
MAX_PARSE_SECONDS = 0.2
IMPORT_DAG = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sbi_pipeline_dag", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(sys.modules)))
"""


def modules_after_import(backend: str, dag_file: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", IMPORT_DAG, str(REPO / "dags" / dag_file)],
                         env={**os.environ, "SBI_BACKEND": backend}, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("dag_file", DAG_FILES)
@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_importing_a_dag_loads_no_heavy_module(backend, dag_file):
    loaded = modules_after_import(backend, dag_file)
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    assert (POD_OPERATOR in loaded) is (backend == "kubernetes")  # the provider only when it is used


def test_dag_processor_parses_each_dag_fast(migrated_airflow_home, record_property):
    """`airflow dags report`: the per-file figure the dag-processor measures (not interpreter start-up; the
    imports all DAG files share are paid by a first file that does only those)."""
    seconds = parse_seconds("local", migrated_airflow_home)
    for name in (SHARED_IMPORTS, *DAG_FILES):
        record_property(f"{name}_parse_seconds", seconds[name])
        print(f"{name} parse duration (airflow dags report): {seconds[name]:.4f} s")
    assert {name: seconds[name] for name in DAG_FILES if seconds[name] >= MAX_PARSE_SECONDS} == {}
