"""sbi_toy_limits: a frequentist CLs upper limit from toys, located by grid refinement, one DAG run per round.

Wiring only: the loop (plan -> work[item] -> aggregate -> finish or the next round) is `operators.loop`;
the physics is `sbi-core study` (`sbi_core/studies/toy_limits.py`).
"""

from __future__ import annotations

from airflow.sdk import dag

from operators.loop import study_loop, study_params

DOC_MD = """
# Toy CLs upper limits, in rounds

A frequentist upper limit on one parameter of interest with the CLs method and the q~ test statistic,
its distributions from **toys** instead of the asymptotic formulae: round 1 tests a coarse grid of values
with toys of both hypotheses at each (mapped over values x toy batches); each round's aggregate computes
CLs and its Monte Carlo error per value, locates where CLs crosses 1 - CL, and plans the next round: new
values around the crossing, more toys where a value's error straddles 1 - CL, none where a value is
clearly excluded. The study ends when the limit is located to the tolerance (twice its error within it),
when the budget of toys is spent, after the most rounds, or when someone sets its stop flag.
Results: the limit and its error, every tested value's CLs, a plot, and the asymptotic limit beside them.

| task | what it does |
|---|---|
| `prepare_study` | this run's study (new from the form, or the one named in *Continue study*) and its commands |
| `create` | `sbi-core study --create`: validates the settings against the source run (exit 2 names a bad field) |
| `plan`, `plan_work` | `study --plan`: this round's work items, as mapped tasks |
| `work` | `study --work`: toys at one value, a batch per task (pool `sbi_cpu`) |
| `aggregate` | `study --aggregate`: CLs per value, the limit so far, continue or finish, and why |
| `decide` | branch: `next_round` or `finish` |
| `next_round` | triggers this DAG again for the next round (run id `study-<name>-round-NNNN`, a note names it) |
| `finish` | `study --finish`: `results.json` and `plots/cls.png` in the study |

**Trigger form.** The source run (a run with its dataset and likelihood arrays, e.g. an `sbi_infer` run), the
parameter of interest, and the bounds: most rounds, budget (toys), tolerance (in the parameter). A counting
experiment needs no run: *Model* `counting` and, in *More settings*,
`options.counting={observed: 12, signal: 5.0, background: 10.0}` and `options.upper=4`.

**Watch it** with `sbi-core study --show <study URI>` (the `study` in `prepare_study`'s XCom): where it
stands, each round's decision, each value's CLs. **Stop it** with `sbi-core study --stop <URI>`: it ends
at the next aggregate, and still writes its results. A failed round: clear it once the cause is fixed
(every step is idempotent). To continue a study whose chain of runs broke, trigger this DAG with its URI
in *Continue study*.
"""


@dag(
    dag_id="sbi_toy_limits",
    schedule=None,
    params=study_params("toy_limits"),
    doc_md=DOC_MD,
    tags=["sbi", "study", "limits"],
)
def sbi_toy_limits() -> None:
    """One round of a toy-limit study."""
    study_loop("toy_limits")


sbi_toy_limits()
