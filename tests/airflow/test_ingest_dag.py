"""sbi_ingest: wiring on both backends, its form and plan task, cheap parsing, and two LHE files ingested end to end
with `dag.test()` and the real sbi-core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from operators.ingest import ingest_arguments, ingest_params
from tests.conftest import REPO
from tests.physics.lhe_files import write_lhe

UPSTREAM = {
    "prepare": set(),
    "configure": {"prepare"},
    "plan_ingest": {"configure"},
    "ingest": {"plan_ingest"},
    "plan_combine": {"configure"},
    "combine": {"ingest", "plan_combine"},
    "combine_all": {"combine", "prepare"},
    "publish_events": {"combine_all", "prepare"},
}


@pytest.mark.parametrize("backend, operator", [("local", "SbiLocalOperator"), ("kubernetes", "SbiPodOperator")])
def test_wiring_is_the_same_on_both_backends(dag_of, backend, operator):
    dag = dag_of("sbi_ingest", backend)
    assert {t.task_id: set(t.upstream_task_ids) for t in dag.tasks} == UPSTREAM
    ingest = dag.get_task("ingest")
    assert ingest.is_mapped and ingest.operator_class.__name__ == operator
    assert ingest.partial_kwargs["profile"] == "cpu"
    assert dag.doc_md and "truncated" in dag.doc_md


def test_form_defaults_to_the_lhe_example_and_has_no_shard_override():
    params = ingest_params(["benchmark", "lhe_example"])
    assert params["config"].value == "lhe_example"
    assert params["config"].schema["enum"] == ["benchmark", "lhe_example"]
    assert "shards" not in params and {"events", "seed", "set", "config_uri"} <= set(params)


def test_one_ingest_task_per_file_batched_past_the_fan_out_limit():
    summary = {"step": "configure", "run": "/r", "shards": [0, 1, 2]}
    assert ingest_arguments(summary, 256) == [["ingest-lhe", "--run", "/r", "--file", str(i)] for i in range(3)]
    batches = ingest_arguments({**summary, "shards": list(range(10))}, 4)
    assert len(batches) <= 4 and [int(a) for b in batches for a in b[4::2]] == list(range(10))


def test_importing_the_dag_loads_no_heavy_module():
    code = ("import importlib.util, json, sys; spec = importlib.util.spec_from_file_location('d', sys.argv[1]); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "dags" / "sbi_ingest.py")], capture_output=True,
                         text=True, check=True, env={**os.environ, "SBI_BACKEND": "local"})
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if m.split(".")[0] in {"torch", "jax", "h5py", "mlflow", "sbi_core", "pylhe"}]


RUN_DAG = """
import json, sys
import demo
demo.DAG_ID = "sbi_ingest"  # demo.run_pipeline runs the DAG named here and returns combine_all's summary
from airflow_local import embedded_env, migrate
from pathlib import Path
import os
os.environ.update(embedded_env(Path(sys.argv[1])))
migrate(dict(os.environ))
print(json.dumps(demo.run_pipeline(json.loads(sys.argv[2]))))
"""


@pytest.mark.slow
def test_dag_ingests_two_files_end_to_end(tmp_path):
    data = tmp_path / "inputs"
    data.mkdir()
    toys = [write_lhe(data / "a.lhe.gz", 120, seed=1), write_lhe(data / "b.lhe", 80, seed=2, weights="weights")]
    config = yaml.safe_load((REPO / "configs" / "lhe_example.yaml").read_text())
    # relative to the config; two pieces (120 + 80 events) of one sample: each weighs its share
    config["simulator"]["options"]["files"] = [{"uri": "inputs/a.lhe.gz", "scale": 0.6},
                                               {"uri": "inputs/b.lhe", "scale": 0.4}]
    config["simulator"]["options"]["part_events"] = 50
    cfg = tmp_path / "lhe.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {**os.environ, "SBI_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")])}
    env.pop("SBI_BACKEND", None)
    conf = {"config": "lhe_example", "config_uri": str(cfg), "events": None, "seed": 5, "set": []}
    done = subprocess.run([sys.executable, "-c", RUN_DAG, str(tmp_path / "home"), json.dumps(conf)], env=env,
                          capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "success"
    summary = result["summary"]
    with h5py.File(summary["output"]) as f:
        n = f.attrs["n_events"]
        assert f.attrs["n_generated"] == 200  # every event of both files was read
        assert list(f.attrs["shards"]) == [0, 1]
        w = f["samples/weights"][:, 0]
        x = f["samples/observations"][()]
    assert 0 < n == summary["n_events"] < 200 and np.isfinite(x).all()
    kept = []
    for i in (0, 1):
        with h5py.File(Path(summary["run"], "shards", f"shard-{i:05d}.h5")) as f:
            kept.append(int(f.attrs["n_events"]))
    assert sum(kept) == n
    # each piece's sm weights sum to its share of the <init> cross section times its acceptance
    xsec = toys[0].cross_section
    assert w.sum() == pytest.approx(xsec * (0.6 * kept[0] / 120 + 0.4 * kept[1] / 80), rel=1e-9)
    resolved = yaml.safe_load(Path(summary["run"], "config.yaml").read_text())
    assert resolved["simulator"]["options"]["files"][1]["uri"] == str(data / "b.lhe")
