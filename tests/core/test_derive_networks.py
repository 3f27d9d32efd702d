"""A run derived from a trained run reads the source's ensembles for its learned likelihood (sbi_infer on a
sbi_train run), through the chain of derived runs, unless it trains its own."""

from __future__ import annotations

from sbi_core import steps, storage
from sbi_core.layout import RunLayout
from sbi_core.runs import load_run, networks_layout


def test_derived_runs_point_at_the_run_that_trained_the_ensembles(small_run, tmp_path):
    trained, infer, again = (str(tmp_path / name) for name in ("trained", "infer", "again"))
    steps.derive(str(small_run), trained, ["training.members=1"])
    layout, _, plan = load_run(trained)
    assert plan.networks_uri is None and networks_layout(layout, plan).root == layout.root  # nothing trained

    storage.write_json(RunLayout(trained).ensembles_index, {"ensembles": [], "evaluate_batches": 0})
    steps.derive(trained, infer, ["inference.luminosity=100"])
    layout, _, plan = load_run(infer)
    assert plan.networks_uri == RunLayout(trained).root
    assert networks_layout(layout, plan).root == RunLayout(trained).root
    assert plan.events_uri == RunLayout(str(small_run)).events  # and the events stay the first run's

    steps.derive(infer, again, ["inference.luminosity=200"])  # a refit of a refit: still the trained run
    layout, _, plan = load_run(again)
    assert networks_layout(layout, plan).root == RunLayout(trained).root
    storage.write_json(layout.ensembles_index, {"ensembles": [], "evaluate_batches": 0})
    assert networks_layout(layout, plan).root == layout.root  # it trained ensembles of its own
