"""The `active_learning` study kind on tiny inputs: the excess objective's rounds on a fitted run, a disagreement
cycle that simulates at the chosen point, adds the samples and retrains warm, and bad configs refused."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from sbi_core import steps as run_steps
from sbi_core import storage
from sbi_core.data.training_sets import read_training_set
from sbi_core.layout import RunLayout
from sbi_core.ml.samples import sample
from sbi_core.ml.train_step import train
from sbi_core.studies import steps
from sbi_core.studies.study import StudyConfigError
from tests.conftest import run_cli


def _create(tmp_path: Path, data: dict, name: str = "study") -> str:
    uri = str(tmp_path / name)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(data))
    steps.create(uri, str(cfg))
    return uri


# ---------------------------------------------------------------------------------------------- excess
@pytest.fixture(scope="module")
def fitted(small_run, tmp_path_factory) -> str:
    from sbi_core.inference import steps as inf

    run = str(tmp_path_factory.mktemp("al-excess") / "run")
    run_steps.derive(str(small_run), run, ["inference.toys.n=0"])
    ds = inf.dataset(run)
    inf.likelihood(run, [int(b) for b in ds["likelihood_batches"]])
    inf.likelihood_join(run)
    inf.fit(run)
    return run


def test_the_excess_of_a_fitted_run_peaks_at_its_best_fit(fitted):
    """q(theta) = 2 (NLL(null) - NLL(theta)) on the run's data (pseudo-data at (0.3, -0.2), ~1250 events): at the
    global fit it is larger than around it (it is the fit's 2 Delta NLL against the SM); the null's Asimov
    dataset disfavours every point (Z < 0); the CLs excess is positive there (less excluded than expected)."""
    from sbi_core.inference.excess import evaluate_points

    best = storage.read_json(RunLayout(fitted).fit)["values"]
    at = {"cW": best["cW"], "cHW": best["cHW"]}
    around = [{"cW": at["cW"] + dx, "cHW": at["cHW"] + dy} for dx, dy in ((0.15, 0), (-0.15, 0), (0, 0.15))]
    res = evaluate_points(fitted, [at, *around])
    assert all(r["valid"] for r in res), res
    assert res[0]["value"] > max(r["value"] for r in res[1:]) and res[0]["value"] > 2.0
    assert all(r["expected"]["z"] < 0 for r in res)
    cls = evaluate_points(fitted, [at], statistic="cls")[0]
    assert cls["valid"] and cls["value"] > 0 and cls["observed"]["cls"] > cls["expected"]["cls"]


def test_excess_rounds_search_the_largest_local_significance(fitted, tmp_path):
    """Two rounds of 3 points (3 design points, then the Gaussian process): every point's excess is the local
    significance on the run's data, the best is the largest seen, the plan is deterministic, and the report
    gives the grid a search of the same resolution needs."""
    from sbi_core.inference.excess import evaluate_points

    uri = _create(tmp_path, {"kind": "active_learning", "run": fitted, "points_per_round": 3, "max_rounds": 2,
                             "budget": 100, "tolerance": 0.1, "seed": 2,
                             "options": {"objective": "excess", "initial_points": 3}})
    first = steps.plan(uri)
    assert steps.plan(uri) == first and first["cost"] == 3
    steps.drive(uri)
    res = json.loads(Path(uri, "results.json").read_text())
    assert res["unit"] == "evaluations" and res["budget_used"] == 6 and res["evaluations"] == 6
    history = json.loads(Path(uri, "history.json").read_text())
    values = [e["result"]["value"] for e in history if e["ok"]]
    assert res["best"]["value"] == max(values)
    direct = evaluate_points(fitted, [history[0]["inputs"]["point"]])[0]
    assert history[0]["result"]["value"] == pytest.approx(direct["value"], abs=1e-6)
    assert res["grid_points"] == 21 * 21  # [-1, 1]^2 at resolution 0.1
    assert Path(res["plots"]["points"]).exists()


def test_the_excess_study_polishes_its_best_point_to_the_fit(fitted, tmp_path):
    """A search that stops on its own rule, then polishes with quadratic peaks: the best point it reports is the
    run's best fit (the maximum of the local significance) within the tolerance, in far fewer evaluations than
    a grid of that resolution."""
    uri = _create(tmp_path, {"kind": "active_learning", "run": fitted, "points_per_round": 3, "max_rounds": 20,
                             "budget": 60, "tolerance": 0.05, "seed": 2,
                             "options": {"objective": "excess", "initial_points": 6, "min_gain": 0.05}})
    steps.drive(uri)
    res = json.loads(Path(uri, "results.json").read_text())
    best = storage.read_json(RunLayout(fitted).fit)["values"]
    found = res["best"]["point"]
    error = max(abs(found[k] - best[k]) for k in found)
    assert res["status"] == "finished", res["reason"]
    assert error <= 0.05, (found, best, res["reason"])
    assert res["evaluations"] < res["grid_points"] / 10


# ---------------------------------------------------------------------------------------------- disagreement
TRAINING = ["training.methods=[alices]", "training.members=2", "training.variations=false", "training.device=cpu",
            "training.samples.train=1200", "training.samples.test=200", "training.samples.n_thetas=8",
            "training.network.hidden=[16]", "training.optimizer.epochs=2", "training.optimizer.patience=0"]


@pytest.fixture(scope="module")
def trained(small_run, tmp_path_factory) -> str:
    import torch

    torch.set_num_threads(1)
    run = str(tmp_path_factory.mktemp("al-source") / "run")
    run_steps.derive(str(small_run), run, TRAINING)
    sample(run, "alices")
    train(run, ["alices-theta-nominal-m00", "alices-theta-nominal-m01"])
    return run


def test_a_disagreement_cycle_adds_events_and_retrains(trained, tmp_path):
    """search (2 points) -> simulate 1500 events at the point of largest disagreement, merge their samples and
    samples at the point from the source's own events into a run derived from the source -> retrain both members
    warm -> search again on the new networks. Only the simulated events count in the budget."""
    uri = _create(tmp_path, {
        "kind": "active_learning", "run": trained, "points_per_round": 2, "max_rounds": 4, "budget": 1500,
        "tolerance": 1e-9, "seed": 5,
        "options": {"objective": "disagreement", "method": "alices", "initial_points": 2, "search_rounds": 1,
                    "events_per_point": 1500, "samples_per_point": 600, "source_samples_per_point": 400,
                    "source_points": 2, "sample_events": 300}})
    steps.drive(uri)
    res = json.loads(Path(uri, "results.json").read_text())
    history = json.loads(Path(uri, "history.json").read_text())
    phases = [(e["round"], e["inputs"]["phase"]) for e in history]
    assert [p for _, p in phases] == ["search", "search", "simulate", "train", "train", "search", "search"]
    assert res["unit"] == "events" and res["budget_used"] == 1500 and res["events"] == 1500
    chosen = max((e for e in history if e["round"] == 1), key=lambda e: e["result"]["value"])["inputs"]["point"]
    sim = next(e for e in history if e["inputs"]["phase"] == "simulate")
    assert sim["inputs"]["point"] == chosen
    new, nxt = sim["result"]["sample_run"], sim["result"]["next_run"]
    with h5py.File(RunLayout(new).events, "r") as f:
        assert f.attrs["sampling_point"].tolist() == pytest.approx([chosen["cW"], chosen["cHW"]])
    merged = read_training_set(RunLayout(nxt).training_set("alices", "theta", "nominal", "train"))
    base = read_training_set(RunLayout(trained).training_set("alices", "theta", "nominal", "train"))
    added = read_training_set(RunLayout(new).training_set("alices", "theta", "nominal", "train"))
    other = next(e for e in history if e["round"] == 1 and e["inputs"]["point"] != chosen)["inputs"]["point"]
    parts = [read_training_set(RunLayout(f"{new}-source-{i:02d}").training_set("alices", "theta", "nominal", "train"))
             for i in range(2)]  # the chosen point first, then the next of largest disagreement
    assert len(merged) == len(base) + len(added) + sum(len(p) for p in parts)
    assert np.allclose(added.theta0, [chosen["cW"], chosen["cHW"]])
    assert np.allclose(parts[0].theta0, [chosen["cW"], chosen["cHW"]]) and len(parts[0]) == 320  # 400 - 20% val
    assert np.allclose(parts[1].theta0, [other["cW"], other["cHW"]]) and len(parts[1]) == 320
    (part, _, part_plan), (src, _, src_plan) = run_steps.load_run(f"{new}-source-00"), run_steps.load_run(trained)
    assert run_steps.run_events(part, part_plan) == run_steps.run_events(src, src_plan)  # the source's events, reused
    base_rows = {tuple(r) for r in base.x[base.y == 1].round(6).tolist()}  # the reference half: other draws
    assert len(base_rows & {tuple(r) for r in parts[0].x[parts[0].y == 1].round(6).tolist()}) < len(parts[0]) / 4
    for m in ("m00", "m01"):
        result = storage.read_json(RunLayout(nxt).network_file(f"alices-theta-nominal-{m}", "result.json"))
        assert result["status"] == "ok" and result["warm_start"] == RunLayout(trained).network_file(
            f"alices-theta-nominal-{m}", "model.pt")
        assert result["n_train"] == len(merged)
    after = [e for e in history if e["round"] == 4]
    assert all(e["inputs"]["run"] == nxt and e["ok"] for e in after)
    assert res["final_run"] == nxt and res["cycles"][0]["point"] == chosen
    assert all(e["result"]["closure_rms"] > 0 for e in history if e["inputs"]["phase"] == "search")
    shown = run_cli("study", "--show", uri)
    assert shown.returncode == 0 and "disagreement" in shown.stdout + shown.stderr


@pytest.mark.parametrize(("options", "field"), [
    ({"objective": "disagreement", "method": "carl"}, "options.method"),
    ({"objective": "disagreement", "parameters": ["cZ"]}, "options.parameters"),
    ({"objective": "disagreement", "ranges": {"cW": [0.5, 2.0]}}, "options.ranges.cW"),
    ({"objective": "excess"}, "run"),
    ({"objective": "magic"}, "options.objective"),
])
def test_bad_active_learning_configs_are_refused_naming_the_field(trained, tmp_path, options, field):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"kind": "active_learning", "run": trained, "budget": 5000, "options": options}))
    with pytest.raises(StudyConfigError) as info:
        steps.create(str(tmp_path / "bad"), str(cfg))
    assert any(p.startswith(field) for p, _ in info.value.issues), info.value.issues
    res = run_cli("study", "--create", "--study", str(tmp_path / "bad"), "--config", str(cfg))
    assert res.returncode == 2 and field in res.stderr
