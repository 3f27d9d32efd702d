"""sbi_ingest: read Les Houches event files (MadGraph, POWHEG, ...) into a run's event file, one task per file.

Wiring only: every step is an `sbi-core` command built by `operators.steps.sbi_step`.
"""

from __future__ import annotations

from airflow.sdk import dag

from operators.assets import EVENTS, LHE_FILES, publish, run_limits, stage_schedule
from operators.ingest import INGEST_LABEL, ingest_params, plan_ingest
from operators.plans import COMBINE_LABEL, plan_combine, prepare
from operators.steps import sbi_step, task_defaults

DOC_MD = """
# SBI ingest: LHE files

Turns event files from a matrix-element generator into the project's event format, so the rest of the
analysis (training, fits) runs on them exactly as on simulated events. The analysis config names the
`lhe` simulator: its input files, which reweighting weight id is which benchmark, the detector response
and the observables (see `configs/lhe_example.yaml`).

| task | what it does |
|---|---|
| `prepare` | picks this run's artifact prefix and builds the configure command from the form |
| `configure` | validates the config, resolves the input files, writes `config.yaml`, `setup.h5` and the plan (one shard per file) |
| `plan_ingest`, `ingest` | a mapped task per input file: streams it, applies the detector, computes the observables and cuts, writes its shard |
| `plan_combine`, `combine` | merges the shards of each group |
| `combine_all` | merges the groups into `events.h5` |
| `publish_events` | the `sbi_events` asset event naming this run (sbi_train starts on it when the stages are chained) |

**Failures.** A malformed or truncated file fails its task with the file and the event number (no retry:
it is bad input). What was read before that event stays under `ingest/`; once the file is fixed, clear
the task: it resumes after its last complete part.

**Trigger form.** Pick a shipped config (or give any config URI). *Events* caps the events kept (split
evenly over the files; empty reads them whole), *seed* drives the detector's randomness, *More overrides*
takes any `PATH=VALUE` (`sbi-core configure --set`). Each run writes under
`$SBI_ARTIFACT_ROOT/sbi_ingest/<run id>`.

**When files land.** With `SBI_LHE_INBOX=s3://bucket/prefix`, the `sbi_lhe_inbox` DAG waits for LHE files
there (the triggerer polls S3), claims them, and its `sbi_lhe_files` asset event starts a run of this DAG
on exactly those files (the form's defaults otherwise, or the config `SBI_LHE_CONFIG` names).
"""


#: None (manual runs), the input asset, a cron, or both: deployment settings (operators.assets).
SCHEDULE = stage_schedule("sbi_ingest", LHE_FILES)


@dag(
    dag_id="sbi_ingest",
    schedule=SCHEDULE,
    **run_limits(SCHEDULE),
    params=ingest_params(),
    default_args=task_defaults(),
    doc_md=DOC_MD,
    tags=["sbi", "lhe"],
)
def sbi_ingest() -> None:
    """configure -> ingest[file] -> combine[group] -> combine_all."""
    run = prepare()
    configure = sbi_step("configure", arguments=run["configure"], retries=1)
    ingest = sbi_step("ingest", retries=2, map_index_template=INGEST_LABEL).expand(
        arguments=plan_ingest(configure.output)
    )
    combine = sbi_step("combine", map_index_template=COMBINE_LABEL).expand(arguments=plan_combine(configure.output))
    combine_all = sbi_step("combine_all", arguments=["combine", "--run", run["run"], "--all"])
    ingest >> combine >> combine_all
    publish.override(task_id="publish_events", outlets=[EVENTS])(run["run"], combine_all.output)


sbi_ingest()
