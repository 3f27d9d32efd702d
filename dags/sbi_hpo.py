"""sbi_hpo: Bayesian optimisation of network hyperparameters, segmented (several networks side by side), one DAG
run per round, one training per mapped task on the gpu pool.

Wiring only: the loop is `operators.loop`; the search and the trials are `sbi-core study`
(`sbi_core/studies/hpo.py`, `sbi_core/ml/trial.py`).
"""

from __future__ import annotations

from airflow.sdk import dag

from operators.loop import study_loop, study_params

DOC_MD = """
# Hyperparameter optimisation, in rounds

Each round asks a Gaussian-process Bayesian optimiser (scikit-optimize, rebuilt from the study's history), one
per **segment** (a network of the source run: each head and variation of a method, searched side by side),
for *Points per round* hyperparameter points (layers, width, activation, learning rate, batch size, epochs...),
trains one network per point as a mapped task on the `gpu` profile and pool, and tells the searchers the
validation loss (or, with an exact likelihood, the closure RMS of log r). A segment has converged when its best
has not improved by more than the tolerance (relative) for *Patience* rounds; the study ends when all have, or
at its bounds. The source run must be sampled (`sbi-core sample`), e.g. an `sbi_train` run.

| task | what it does |
|---|---|
| `prepare_study` | this run's study (new from the form, or the one named in *Continue study*) and its commands |
| `create` | `sbi-core study --create`: validates the search space and the networks (exit 2 names a bad field) |
| `plan`, `plan_work` | `study --plan`: segments x points, as mapped tasks |
| `work` | `study --work`: one network trained with one point's hyperparameters and scored (pool `sbi_gpu`) |
| `aggregate` | `study --aggregate`: tells each segment's searcher; continue or finish, and why |
| `decide` | branch: `next_round` or `finish` |
| `next_round` | triggers this DAG again for the next round (run id `study-<name>-round-NNNN`) |
| `finish` | `study --finish`: per segment the best point, `best/<segment>.yaml` (a `training:` section), the network registered in MLflow with the alias, `plots/best.png` |

The search space goes in *More settings*, one dimension per line, e.g.
`options.space={layers: {type: integer, low: 1, high: 3}, width: {type: integer, low: 16, high: 256, log: true}, learning_rate: {type: real, low: 1.0e-4, high: 1.0e-2, log: true}}`.
**Watch it** with `sbi-core study --show <study URI>`; **stop it** with `sbi-core study --stop <URI>`.
"""


@dag(
    dag_id="sbi_hpo",
    schedule=None,
    params=study_params("hpo"),
    doc_md=DOC_MD,
    tags=["sbi", "study", "hpo"],
)
def sbi_hpo() -> None:
    """One round of a hyperparameter search."""
    study_loop("hpo", work_profile="gpu")


sbi_hpo()
