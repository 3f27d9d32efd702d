"""Iterative studies: loops of rounds over a source run, one Airflow DAG run per round, state in storage.

A *study* is a storage prefix (a local directory or s3://) that holds everything about it
(`layout.StudyLayout`): its validated config (`study.yaml`), its state (`state.json`), its history
(`history.json`), each round's plan, work results and aggregate, a stop flag, and the final results.
Nothing but these files travels between rounds, so a study survives a scheduler restart and any round can
be run again: every step is idempotent.

What to use when:
- `options.StudyConfig`: the study section (kind, source run, bounds: max_rounds, budget, tolerance; seed,
  points per round) and the kind's own `options`, validated by the kind (`study.validate_study`).
- `kinds.StudyKind`: what a kind implements (plan_round, evaluate, aggregate, finish); `kinds.get_kind(name)`
  finds one in the registry (`kinds.KINDS`; more through `SBI_STUDY_PLUGINS`).
- `steps`: the `sbi-core study ...` steps as functions (create, plan, work, aggregate, finish, show, stop);
  `commands` registers them on the CLI.
- `toy_limits`: the toy CLs upper-limit kind (grid refinement), on `sbi_core.inference.calculators`.

The protocol, the files and how to watch or stop a study: docs/studies.md.
"""
