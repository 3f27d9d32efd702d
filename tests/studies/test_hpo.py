"""The `hpo` study kind on tiny inputs: two segments searched side by side, plan / evaluate / aggregate, the
best of each written as a training section the pipeline takes, and bad configs refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sbi_core import steps as run_steps
from sbi_core import storage
from sbi_core.ml.samples import sample
from sbi_core.studies import steps
from sbi_core.studies.study import StudyConfigError
from tests.conftest import run_cli

SEGMENTS = ["alices-theta-nominal-m00", "alices-theta-nominal-m01"]
SPACE = {"layers": {"type": "integer", "low": 1, "high": 2},
         "width": {"type": "integer", "low": 4, "high": 16, "log": True},
         "learning_rate": {"type": "real", "low": 1e-3, "high": 1e-1, "log": True},
         "activation": {"type": "categorical", "choices": ["tanh", "relu"]}}


@pytest.fixture(scope="module")
def sampled(small_run, tmp_path_factory) -> str:
    run = str(tmp_path_factory.mktemp("hpo") / "run")
    run_steps.derive(str(small_run), run, [
        "training.methods=[alices]", "training.members=2", "training.variations=false", "training.device=cpu",
        "training.samples.train=1000", "training.samples.test=200", "training.samples.n_thetas=8",
        "training.optimizer.epochs=2", "training.optimizer.patience=0"])
    sample(run, "alices")
    return run


def _config(run: str, **extra) -> dict:
    return {"kind": "hpo", "run": run, "budget": 8, "points_per_round": 2, "max_rounds": 2, "tolerance": 1e-9,
            "seed": 4, "options": {"networks": SEGMENTS, "space": SPACE, "initial_points": 2, **extra}}


def _create(tmp_path: Path, data: dict, name: str = "study") -> str:
    uri = str(tmp_path / name)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(data))
    steps.create(uri, str(cfg))
    return uri


@pytest.fixture(scope="module")
def driven(sampled, tmp_path_factory) -> tuple[str, dict]:
    """The two-segment study, round 1 planned twice, then driven to its end."""
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("hpo-study")
    uri = _create(tmp, _config(sampled, alias="chosen"))
    plans = [steps.plan(uri), steps.plan(uri)]
    steps.drive(uri)
    return uri, {"plans": plans}


def test_two_segments_side_by_side_to_a_training_section(sampled, driven, tmp_path):
    uri, info = driven
    plan = info["plans"][0]
    assert plan["items"] == ["r001-s00-p00", "r001-s00-p01", "r001-s01-p00", "r001-s01-p01"]
    assert info["plans"][1] == plan  # a replanned round keeps its plan
    record = json.loads(Path(uri, "rounds", "round-0001", "plan.json").read_text())
    segs = [i["inputs"]["segment"] for i in record["items"]]
    assert segs == [SEGMENTS[0]] * 2 + [SEGMENTS[1]] * 2
    assert record["items"][0]["inputs"]["params"] != record["items"][2]["inputs"]["params"]  # own seeds
    res = json.loads(Path(uri, "results.json").read_text())
    assert res["status"] == "finished" and "max_rounds" in res["reason"]
    assert res["budget_used"] == 8 and res["points"] == 8
    history = json.loads(Path(uri, "history.json").read_text())
    for seg in SEGMENTS:
        mine = [e for e in history if e["inputs"]["segment"] == seg]
        best = res["segments"][seg]
        assert best["value"] == min(e["result"]["value"] for e in mine if e["ok"])
        assert best["value"] == best["val_loss"]  # objective val_loss
        trial = json.loads(Path(mine[0]["inputs"]["out"], "trial.json").read_text())
        assert trial["params"] == mine[0]["inputs"]["params"] and trial["closure_rms"] is not None
        section = yaml.safe_load(Path(best["training_yaml"]).read_text())
        params = best["params"]
        assert section["training"]["network"] == {"hidden": [params["width"]] * params["layers"],
                                                  "activation": params["activation"]}
        assert section["training"]["optimizer"]["learning_rate"] == pytest.approx(params["learning_rate"])
        derived = str(tmp_path / f"derived-{seg}")
        run_steps.derive(sampled, derived, best["overrides"])  # the pipeline takes the best as overrides
        cfg = run_steps.load_run(derived)[1]
        assert cfg.training.network.hidden == [params["width"]] * params["layers"]
    assert Path(res["plots"]["best"]).exists()
    shown = run_cli("study", "--show", uri)
    assert shown.returncode == 0 and SEGMENTS[1] in shown.stderr


@pytest.mark.parametrize(("options", "field"), [
    ({"space": {"depth": {"type": "integer", "low": 1, "high": 3}}}, "options.space"),
    ({"space": {}}, "options.space"),
    ({"space": {"learning_rate": {"type": "real", "low": 0.0, "high": 0.1, "log": True}}}, "options.space"),
    ({"networks": ["alices-theta-nominal-m07"]}, "options.networks[0]"),
    ({"networks": ["alices_theta"]}, "options.networks[0]"),
])
def test_bad_hpo_configs_are_refused_naming_the_field(sampled, tmp_path, options, field):
    data = _config(sampled)
    data["options"].update(options)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(StudyConfigError) as info:
        steps.create(str(tmp_path / "bad"), str(cfg))
    assert any(p.startswith(field) for p, _ in info.value.issues), info.value.issues
    assert not storage.exists(str(tmp_path / "bad" / "study.yaml"))
    res = run_cli("study", "--create", "--study", str(tmp_path / "bad"), "--config", str(cfg))
    assert res.returncode == 2 and field in res.stderr


def test_a_budget_below_one_round_is_refused(sampled, tmp_path):
    data = {**_config(sampled), "budget": 3}
    with pytest.raises(StudyConfigError, match="budget"):
        _create(tmp_path, data)


@pytest.mark.slow
def test_the_best_network_is_registered_with_its_alias(sampled, driven, monkeypatch):
    """With tracking on (the embedded store): each segment's best network is a registered model version carrying
    the study's alias, logged from the trial's model.pt; a second finish reuses the version."""
    from mlflow.tracking import MlflowClient

    from sbi_core import tracking

    uri, _ = driven
    for var in ("MLFLOW_TRACKING_URI", "SBI_ARTIFACT_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SBI_TRACKING", "on")
    tracking.reset()
    try:
        steps.finish(uri)
        steps.finish(uri)
        store = tracking.tracking_uri(tracking.RunLayout(uri))
        client = MlflowClient(tracking_uri=store, registry_uri=store)
        res = json.loads(Path(uri, "results.json").read_text())
        for seg in SEGMENTS:
            name = f"{run_steps.load_run(sampled)[1].name}.hpo.{seg}".replace(" ", "_")
            version = client.get_model_version_by_alias(name, "chosen")
            assert len(client.search_model_versions(f"name = '{name}'")) == 1
            run = client.get_run(version.run_id)
            assert run.data.metrics["value"] == pytest.approx(res["segments"][seg]["value"])
            files = [f.path for f in client.list_artifacts(version.run_id, "model")]
            assert "model/model.pt" in files
    finally:
        tracking.reset()
