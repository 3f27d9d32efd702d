"""sbi_infer: fit (again) the events of an existing run, with other inference settings.

Wiring only: `derive` makes a new run that reads the source run's events, then the inference group of
`operators.groups` runs on it, exactly as inside sbi_pipeline.
"""

from __future__ import annotations

from airflow.sdk import dag

from operators.assets import NETWORKS, RESULTS, publish, run_limits, stage_schedule
from operators.groups import inference_group
from operators.params import derive_params
from operators.plans import prepare_derive
from operators.steps import sbi_step, task_defaults

DOC_MD = """
# SBI inference on an existing run

Refit without simulating or training again: pick a run that has events (and, for the learned
likelihood, trained networks), change the inference settings (luminosity, dataset, scans, toys...),
and this DAG fits, scans and sets limits in a new run of its own that reads the source run's events.

| task | what it does |
|---|---|
| `prepare_derive` | this run's prefix `$SBI_ARTIFACT_ROOT/sbi_infer/<run id>` and the derive command |
| `derive` | `sbi-core derive --from SRC --run NEW --set ...`: a new run on the source's events (only `training.*` and `inference.*` may change) |
| `inference.dataset` | the dataset the fit runs on (pseudo-data, Asimov, or a file) |
| `inference.likelihood`, `likelihood_join` | per-event likelihood arrays in batches, joined |
| `inference.fit` | the profile-likelihood fit (JAX gradient, iminuit) |
| `inference.hessian`, `assemble` | the Hessian in row blocks (pool `sbi_highmem`), covariance and impacts |
| `inference.scan`, `limits` | profile-likelihood scans in blocks of points, intervals and CLs limits |
| `inference.toys`, `report` | toy fits in batches (none when the config asks for none), then `results.json` and plots |
| `publish_results` | the `sbi_results` asset event naming this run |

**Trigger form.** The source run: its URI (the `run` in the XCom of its `prepare` task), or its DAG
id and run id. Then the inference settings to change; empty fields keep the source's values, and
*More overrides* takes any other `inference.PATH=VALUE`.

**Started by data or the clock.** With `SBI_CHAIN_STAGES=true` a run starts on every `sbi_networks` asset
event (a sbi_train run that finished) and fits the run it names, with the form's defaults;
`SBI_SCHEDULE_SBI_INFER` (a cron, UTC, e.g. `0 3 * * *`) refits the newest networks nightly, e.g. when
`inference.dataset` points at observed data that grows. One run at a time.
"""


#: None (manual runs), the input asset, a cron, or both: deployment settings (operators.assets).
SCHEDULE = stage_schedule("sbi_infer", NETWORKS)


@dag(
    dag_id="sbi_infer",
    schedule=SCHEDULE,
    **run_limits(SCHEDULE),
    params=derive_params("inference"),
    default_args=task_defaults(),
    doc_md=DOC_MD,
    tags=["sbi", "inference"],
)
def sbi_infer() -> None:
    """derive -> inference group."""
    run = prepare_derive.override(inlets=[NETWORKS])("inference")
    derive = sbi_step("derive", arguments=run["derive"], retries=1)
    inference = inference_group(run["run"])
    derive >> inference >> publish.override(task_id="publish_results", outlets=[RESULTS])(run["run"])


sbi_infer()
