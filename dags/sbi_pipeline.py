"""sbi_pipeline: simulate events in parallel shards and combine them; later stages append to the same chain.

Wiring only: every step is an `sbi-core` command built by `operators.steps.sbi_step`.
"""

from __future__ import annotations

from airflow.sdk import dag

from operators.params import trigger_params
from operators.plans import COMBINE_LABEL, GENERATE_LABEL, plan_combine, plan_generate, prepare
from operators.steps import sbi_step

DOC_MD = """
# SBI pipeline

Simulation-based inference for a particle-physics analysis. So far: simulate the events of an
analysis config in parallel shards and combine them. Every heavy task runs one `sbi-core` step;
its small JSON summary (file URIs, event counts) is the task's XCom, so open **XCom** on any task
to see what it wrote.

| task | what it does |
|---|---|
| `prepare` | picks this run's artifact prefix and builds the configure command from the form |
| `configure` | validates the analysis config, writes `config.yaml`, `setup.h5` and the shard plan |
| `plan_generate`, `generate` | simulates the events: a mapped task per shard (per batch past a few hundred) |
| `plan_combine`, `combine` | merges the shards of each group into one file |
| `combine_all` | merges the groups into `events.h5`: every event of the run, shards in order |

**Trigger form.** Pick a shipped analysis config (or give any config URI), and optionally override
the number of events, shards and the seed; empty or 0 keeps the config's value. *More overrides*
takes any `PATH=VALUE` the config understands (`sbi-core configure --set`).

**Where results go.** Each run writes under its own prefix
`$SBI_ARTIFACT_ROOT/sbi_pipeline/<run id>` (see the `prepare` task's XCom `run`), so runs never
overwrite each other; the same config and seed give identical events.

**Where steps run.** `SBI_BACKEND=local` (default) runs each step as a subprocess of the worker;
`SBI_BACKEND=kubernetes` runs it as a pod of the core image, sized by the step's profile
(`operators/profiles.yaml`: `cpu`, `gpu`, `highmem`). The DAG is the same for both.

**From CI.** `python scripts/trigger_run.py --dag-id sbi_pipeline --conf '{"events": 4000}'`
triggers a run through the REST API, waits for it and prints the last step's summary.
"""


@dag(
    dag_id="sbi_pipeline",
    schedule=None,
    params=trigger_params(),
    doc_md=DOC_MD,
    tags=["sbi", "simulation"],
)
def sbi_pipeline() -> None:
    """configure -> generate[shard batch] -> combine[group] -> combine_all."""
    run = prepare()
    configure = sbi_step("configure", arguments=run["configure"], retries=1)
    generate = sbi_step("generate", retries=3, map_index_template=GENERATE_LABEL).expand(
        arguments=plan_generate(configure.output)
    )
    combine = sbi_step("combine", map_index_template=COMBINE_LABEL).expand(arguments=plan_combine(configure.output))
    combine_all = sbi_step("combine_all", arguments=["combine", "--run", run["run"], "--all"])
    generate >> combine >> combine_all


sbi_pipeline()
