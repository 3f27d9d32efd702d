"""Inference: from per-event likelihood arrays to a best fit, errors, a Hessian, scans, intervals, limits and toys.

What to use when:
- `options`: the `inference` config section. `datasets`: the events a fit runs on (`sbi-core dataset`).
- `exact`: the contract's arrays from a simulator's exact densities (`sbi-core likelihood`).
- `nll.NLLModel`: the extended unbinned NLL in JAX (value, gradient, HVP; per-sample modifiers, auxiliary
  data); `interpolation`: the schemes of the variations (HistFactory codes 0 and 1, polyexp);
  `objective.Objective`: what any NLL must offer to be fitted; `fit.minimize`: Migrad on an Objective, then
  Newton steps with the exact Hessian; `hessian`: rows by HVP blocks.
- `steps` / `commands`: the pipeline steps and their `sbi-core` subcommands. `synthetic`: test arrays.
- Statistics (docs/statistics.md): `profile.Profiler` (profile fits, scans, root-found intervals), `scan`
  (the configured grid), `intervals` (Wilks intervals and 2D contours from scans), `asymptotics` (Wilks
  thresholds, q~ tail probabilities), `limits` (asymptotic CLs upper limits for any Objective), `toys`
  (resampled pseudo-experiments with their auxiliary data, coverage, Neyman sets), `batched` (many toys of one
  pool fitted at once), `pool` (the run's events the toys resample),
  `report` (results.json and plots); `stats_steps` / `stats_commands`: scan, limits, toys, report.
Modules that need JAX import it themselves; importing this package does not.
"""
