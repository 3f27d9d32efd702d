"""Airflow-side building blocks of the pipeline; DAG files import these, never sbi_core itself.

What to use when:
- `operators.steps.sbi_step`: a task running one `sbi-core` step on the configured backend
  (`SBI_BACKEND=local` subprocess, or `kubernetes` pod); works with `.expand()` / `.expand_kwargs()`.
- `operators.plans`: small tasks that turn trigger params and step summaries into argument lists.
- `operators.params.trigger_params`: the trigger form, built from the analysis config schema.
- `operators.settings`: every deployment setting (environment variables) in one place.
- `operators/profiles.yaml`: pod resources per profile (`cpu`, `gpu`, `highmem`).
"""
