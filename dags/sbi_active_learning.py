"""sbi_active_learning: Bayesian optimisation over the parameters of interest where each evaluation is expensive,
one DAG run per round: the largest excess of the data, or simulation where the networks disagree most.

Wiring only: the loop is `operators.loop`; the objectives are `sbi-core study` (`sbi_core/studies/active_learning.py`).
"""

from __future__ import annotations

from airflow.sdk import dag

from operators.loop import study_loop, study_params

DOC_MD = """
# Active learning, in rounds

Bayesian optimisation (scikit-optimize's Gaussian process, rebuilt each round from the study's history) over
the free parameters of interest of a source run, with one of two objectives (*Objective*):

- **excess**: where do the observed and expected results differ most? Each asked point is evaluated on the
  run's fitted dataset: its local significance against the reference benchmark (nuisances profiled), or the
  CLs excess of the signal hypothesis at the point (observed against median expected). The study ends when a
  round no longer moves the best point by more than the tolerance nor raises its value by more than the
  minimum gain. The source run needs `dataset`, `likelihood` and `fit` (an `sbi_infer` run).
- **disagreement**: where is the learned likelihood least certain? Rounds of asked points (the spread of the
  ensemble's log r over the run's events), then a round that simulates events at the point of largest
  disagreement, adds their training samples to the current ones and derives a training run, then a round that
  retrains the networks there (warm start), then the next search. It ends when the largest disagreement is
  below the tolerance, or when the budget of simulated events is spent. The source run needs trained networks
  of the method (an `sbi_train` or `sbi_pipeline` run).

| task | what it does |
|---|---|
| `prepare_study` | this run's study (new from the form, or the one named in *Continue study*) and its commands |
| `create` | `sbi-core study --create`: validates the settings against the source run (exit 2 names a bad field) |
| `plan`, `plan_work` | `study --plan`: this round's points (or its simulation, or its networks) as mapped tasks |
| `work` | `study --work`: one point's excess or disagreement, the simulation, or one network's retraining |
| `aggregate` | `study --aggregate`: tells the searcher, decides what the next round does, or ends and why |
| `decide` | branch: `next_round` or `finish` |
| `next_round` | triggers this DAG again for the next round (run id `study-<name>-round-NNNN`, a note names it) |
| `finish` | `study --finish`: `results.json` and `plots/points.png` in the study |

**Budget**: evaluations (excess) or simulated events (disagreement). **Tolerance**: the location tolerance in
the parameters (excess) or the disagreement threshold in log r (disagreement).

**Watch it** with `sbi-core study --show <study URI>`; **stop it** with `sbi-core study --stop <URI>`: it
ends at the next aggregate and still writes its results. Work runs on the `cpu` profile (the retraining
rounds train on the CPU there; the `sbi_hpo` DAG trains on the `gpu` pool).
"""


@dag(
    dag_id="sbi_active_learning",
    schedule=None,
    params=study_params("active_learning"),
    doc_md=DOC_MD,
    tags=["sbi", "study", "active-learning"],
)
def sbi_active_learning() -> None:
    """One round of an active-learning study."""
    study_loop("active_learning")


sbi_active_learning()
