"""sbi_ingest: read Les Houches event files (MadGraph, POWHEG, ...) into a run's event file, one task per file.

Wiring only: every step is an `sbi-core` command built by `operators.steps.sbi_step`.
"""

from __future__ import annotations

from airflow.sdk import dag

from operators.ingest import INGEST_LABEL, ingest_params, plan_ingest
from operators.plans import COMBINE_LABEL, plan_combine, prepare
from operators.steps import sbi_step

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

**Failures.** A malformed or truncated file fails its task with the file and the event number (no retry:
it is bad input). What was read before that event stays under `ingest/`; once the file is fixed, clear
the task: it resumes after its last complete part.

**Trigger form.** Pick a shipped config (or give any config URI). *Events* caps the events kept (split
evenly over the files; empty reads them whole), *seed* drives the detector's randomness, *More overrides*
takes any `PATH=VALUE` (`sbi-core configure --set`). Each run writes under
`$SBI_ARTIFACT_ROOT/sbi_ingest/<run id>`.
"""


@dag(
    dag_id="sbi_ingest",
    schedule=None,
    params=ingest_params(),
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


sbi_ingest()
