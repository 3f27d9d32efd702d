"""Airflow-side building blocks of the pipeline; DAG files import these, never sbi_core itself.

What to use when:
- `operators.steps.sbi_step`: a task running one `sbi-core` step on the configured backend
  (`SBI_BACKEND=local` subprocess, or `kubernetes` pod), in its profile's pool; works with `.expand()`.
- `operators.groups`: the stages as task groups (`training_group`, `inference_group`) and `mapped_step`,
  a planning task plus the mapped step it plans; the DAG files only wire these together.
- `operators.plans`: small tasks that turn trigger params and step summaries into argument lists
  (`FANS`: how each mapped step takes its work items, batched past SBI_MAX_FAN_OUT).
- `operators.params`: the trigger forms, built from the analysis config schema.
- `operators.assets`: the assets that chain the stage DAGs, their schedules (`stage_schedule`, cron and
  chaining settings), the `publish` task and how a scheduled run finds its source run.
- `operators.inbox`: the LHE inbox (deferrable S3 sensor, `claim`); `operators.connections`: the AWS
  connection's credentials for local steps.
- `operators.settings`: every deployment setting (environment variables) in one place.
- `operators/profiles.yaml`: pod resources and the Airflow pool per profile (`cpu`, `gpu`, `highmem`);
  `python -m operators.pools --import` creates the pools.
"""
