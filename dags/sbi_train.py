"""sbi_train: train (again) on the events of an existing run, with other training settings.

Wiring only: `derive` makes a new run that reads the source run's events, then the training group of
`operators.groups` runs on it, exactly as inside sbi_pipeline.
"""

from __future__ import annotations

from airflow.sdk import dag

from operators.assets import EVENTS, NETWORKS, publish, run_limits, stage_schedule
from operators.groups import training_group
from operators.params import derive_params
from operators.plans import prepare_derive
from operators.steps import sbi_step, task_defaults

DOC_MD = """
# SBI training on an existing run

Retrain without simulating again: pick a run that has events (a `sbi_pipeline` run, even one
triggered with *Run up to: events*), change the training settings, and this DAG trains, ensembles and
evaluates the networks in a new run of its own that reads the source run's events.

| task | what it does |
|---|---|
| `prepare_derive` | this run's prefix `$SBI_ARTIFACT_ROOT/sbi_train/<run id>` and the derive command |
| `derive` | `sbi-core derive --from SRC --run NEW --set ...`: a new run on the source's events (only `training.*` and `inference.*` may change) |
| `training.sample` | training sets per estimator method (mapped per method) |
| `training.train` | trains the networks, a batch per task (pool `sbi_gpu`, a GPU pod on Kubernetes) |
| `training.ensemble` | groups members into ensembles; runs even when some networks failed, and names them |
| `training.evaluate`, `evaluate_report` | per-event predictions in batches, then plots and `metrics.json` |
| `publish_networks` | the `sbi_networks` asset event naming this run (sbi_infer starts on it when the stages are chained) |

**Trigger form.** The source run: its URI (the `run` in the XCom of its `prepare` task), or its DAG
id and run id. Then the training settings to change; empty fields keep the source's values, and
*More overrides* takes any other `training.PATH=VALUE`.

**Started by data or the clock.** With `SBI_CHAIN_STAGES=true` a run starts on every `sbi_events` asset event
(sbi_ingest, or sbi_pipeline asked to publish) and trains on the run it names, with the form's defaults;
`SBI_SCHEDULE_SBI_TRAIN` (a cron, UTC) also starts one on the newest events. One run at a time.
"""


#: None (manual runs), the input asset, a cron, or both: deployment settings (operators.assets).
SCHEDULE = stage_schedule("sbi_train", EVENTS)


@dag(
    dag_id="sbi_train",
    schedule=SCHEDULE,
    **run_limits(SCHEDULE),
    params=derive_params("training"),
    default_args=task_defaults(),
    doc_md=DOC_MD,
    tags=["sbi", "training"],
)
def sbi_train() -> None:
    """derive -> training group."""
    run = prepare_derive.override(inlets=[EVENTS])("training")
    derive = sbi_step("derive", arguments=run["derive"], retries=1)
    training = training_group(run["run"], derive.output)
    derive >> training >> publish.override(task_id="publish_networks", outlets=[NETWORKS])(run["run"])


sbi_train()
