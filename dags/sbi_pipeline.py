"""sbi_pipeline: simulate events in parallel shards and combine them, train the networks, fit and set limits.

Wiring only: every step is an `sbi-core` command built by `operators.steps.sbi_step`; the training and
inference stages are the task groups of `operators.groups`, shared with sbi_train and sbi_infer.
"""

from __future__ import annotations

from airflow.sdk import dag

from operators.assets import EVENTS, publish, run_limits, stage_schedule
from operators.groups import NONE_FAILED, inference_group, mapped_step, training_group
from operators.params import pipeline_params
from operators.plans import prepare, stage_gate
from operators.steps import sbi_step, task_defaults

DOC_MD = """
# SBI pipeline

Simulation-based inference for a particle-physics analysis, from the analysis config to limits:
simulate the events in parallel shards and combine them, train the likelihood-ratio networks, and
fit the data with the profile likelihood. Every heavy task runs one `sbi-core` step; its small JSON
summary (file URIs, counts, figures) is the task's XCom, so open **XCom** on any task to see what
it wrote.

| task | what it does |
|---|---|
| `prepare` | picks this run's artifact prefix and builds the configure command from the form |
| `configure` | validates the analysis config, writes `config.yaml`, `setup.h5` and the shard plan |
| `plan_train_sampler`, `train_sampler` | trains the phase-space sampler once (pool `sbi_gpu`) when the config asks for one (`simulator.options.sampler: flow`); skipped otherwise |
| `plan_generate`, `generate` | simulates the events: a mapped task per shard (per batch past a few hundred) |
| `plan_combine`, `combine` | merges the shards of each group into one file |
| `combine_all` | merges the groups into `events.h5`: every event of the run, shards in order |
| `publish_events` | when the form's *Publish the events* is on: the `sbi_events` asset event naming this run |
| `to_training`, `to_inference` | stop here when the form's *Run up to* says so (later tasks are skipped) |
| `training.sample` | training sets per estimator method (mapped per method) |
| `training.train` | trains the networks, a batch per task (pool `sbi_gpu`, a GPU pod on Kubernetes) |
| `training.ensemble` | groups members into ensembles; runs even when some networks failed, and names them |
| `training.evaluate`, `evaluate_report` | per-event predictions in batches, then plots and `metrics.json` |
| `inference.dataset` | the dataset the fit runs on (pseudo-data, Asimov, or a file) |
| `inference.likelihood`, `likelihood_join` | per-event likelihood arrays in batches, joined |
| `inference.fit` | the profile-likelihood fit (JAX gradient, iminuit) |
| `inference.hessian`, `assemble` | the Hessian in row blocks (pool `sbi_highmem`), covariance and impacts |
| `inference.scan`, `limits` | profile-likelihood scans in blocks of points, intervals and CLs limits |
| `inference.toys`, `report` | toy fits in batches (none when the config asks for none), then `results.json` and plots |

**Trigger form.** Pick a shipped analysis config (or give any config URI) and how far to run, and
optionally override the headline settings of each stage (events, shards, seed; methods, members,
epochs; luminosity, toys...); an empty field keeps the config's value. *More overrides* takes any
`PATH=VALUE` the config understands (`sbi-core configure --set`). To retrain or refit a run's events
with other settings, trigger **sbi_train** or **sbi_infer** on it instead: nothing is simulated again.

**Where results go.** Each run writes under its own prefix
`$SBI_ARTIFACT_ROOT/sbi_pipeline/<run id>` (see the `prepare` task's XCom `run`), so runs never
overwrite each other; the same config and seed give identical events.

**Where steps run.** `SBI_BACKEND=local` (default) runs each step as a subprocess of the worker;
`SBI_BACKEND=kubernetes` runs it as a pod of the core image, sized by the step's profile
(`operators/profiles.yaml`: `cpu`, `gpu`, `highmem`). Each profile has an Airflow pool (`sbi_cpu`,
`sbi_gpu`, `sbi_highmem`) that caps how many of its steps run at once. The DAG is the same for both.

**On a schedule.** `SBI_SCHEDULE_SBI_PIPELINE` (a cron, UTC) runs it on the clock with the form's
defaults, one run at a time.

**From CI.** `python scripts/trigger_run.py --dag-id sbi_pipeline --conf '{"events": 4000}'`
triggers a run through the REST API, waits for it and prints the last step's summary.
"""


#: None (manual runs), the input asset, a cron, or both: deployment settings (operators.assets).
SCHEDULE = stage_schedule("sbi_pipeline")


@dag(
    dag_id="sbi_pipeline",
    schedule=SCHEDULE,
    **run_limits(SCHEDULE),
    params=pipeline_params(),
    default_args=task_defaults(),
    doc_md=DOC_MD,
    tags=["sbi", "simulation", "training", "inference"],
)
def sbi_pipeline() -> None:
    """configure -> train_sampler -> generate[shard batch] -> combine[group] -> combine_all -> training -> inference."""
    run = prepare()
    configure = sbi_step("configure", arguments=run["configure"], retries=1)
    # One task when the config's sampler is trained per run, none (skipped) otherwise: generate runs after it either way.
    _, train_sampler = mapped_step("train-sampler", run["run"], configure.output, task_id="train_sampler",
                                   profile="gpu")
    _, generate = mapped_step("generate", run["run"], configure.output, retries=3, trigger_rule=NONE_FAILED)
    train_sampler >> generate
    _, combine = mapped_step("combine", run["run"], configure.output)
    combine_all = sbi_step("combine_all", arguments=["combine", "--run", run["run"], "--all"])
    generate >> combine >> combine_all
    publish.override(task_id="publish_events", outlets=[EVENTS])(run["run"], combine_all.output, when="publish")
    training = training_group(run["run"], configure.output)
    combine_all >> stage_gate.override(task_id="to_training")("training") >> training
    training >> stage_gate.override(task_id="to_inference")("inference") >> inference_group(run["run"])


sbi_pipeline()
