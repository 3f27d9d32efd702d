"""Warm-start training (`training.warm_start`) and one network trained with overridden hyperparameters and
scored (`sbi_core.ml.trial`): what the active-learning and HPO studies build on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbi_core import steps, storage
from sbi_core.errors import ConfigError, InputError
from sbi_core.layout import RunLayout
from sbi_core.ml import trainer
from sbi_core.ml.closure import ExactRatio
from sbi_core.ml.model_io import load_model
from sbi_core.ml.samples import sample
from sbi_core.ml.train_step import train
from sbi_core.ml.trial import train_trial
from tests.ml.synthetic_run import synthetic_run

M0 = "alices-theta-nominal-m00"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    torch.set_num_threads(1)
    run = synthetic_run(tmp_path_factory.mktemp("warm") / "source")
    train(run, [M0])
    return run


def test_warm_start_continues_from_the_source_weights(source, tmp_path, monkeypatch):
    """The network starts from the source's final state (standardisation included), so its first epoch is
    already at the source's level; the result names the source model and its fingerprint differs."""
    warm = synthetic_run(tmp_path / "warm", [f"training.warm_start={source}"])
    seen = {}
    real = trainer.train_network

    def spy(*args, **kw):
        seen.update(kw["init_state"])
        return real(*args, **kw)

    monkeypatch.setattr(trainer, "train_network", spy)
    train(warm, [M0])
    src_model, _ = load_model(RunLayout(source).network_file(M0, "model.pt"))
    for k, v in src_model.state_dict().items():
        assert torch.equal(seen[k], v), k
    src = storage.read_json(RunLayout(source).network_file(M0, "result.json"))
    res = storage.read_json(RunLayout(warm).network_file(M0, "result.json"))
    assert res["warm_start"] == RunLayout(source).network_file(M0, "model.pt") and src["warm_start"] is None
    assert res["fingerprint"] != src["fingerprint"]
    src_hist = storage.read_json(RunLayout(source).network_file(M0, "history.json"))
    warm_hist = storage.read_json(RunLayout(warm).network_file(M0, "history.json"))
    assert warm_hist[0]["val_loss"] < src_hist[0]["val_loss"]
    assert warm_hist[0]["val_loss"] < 1.05 * src["best_val_loss"]


def test_warm_start_refuses_a_missing_or_foreign_model_before_training(source, tmp_path):
    other = synthetic_run(tmp_path / "other", [f"training.warm_start={source}", "training.network.hidden=[8]"])
    with pytest.raises(InputError, match=r"warm_start model .*model\.pt has .*'hidden': \[16\]"):
        train(other, [M0])
    missing = synthetic_run(tmp_path / "missing", [f"training.warm_start={tmp_path / 'nowhere'}"])
    with pytest.raises(InputError, match="training.warm_start run .* has no"):
        train(missing, [M0])
    assert not storage.exists(RunLayout(other).network_file(M0, "result.json"))


@pytest.fixture(scope="module")
def sampled(small_run, tmp_path_factory) -> str:
    """The small benchmark run, derived with a small ALICES training and sampled (exact likelihood known)."""
    run = str(tmp_path_factory.mktemp("trial") / "run")
    steps.derive(str(small_run), run, [
        "training.methods=[alices]", "training.members=1", "training.variations=false", "training.device=cpu",
        "training.samples.train=2000", "training.samples.test=400", "training.samples.n_thetas=8",
        "training.network.hidden=[16]", "training.optimizer.epochs=2", "training.optimizer.patience=0"])
    sample(run, "alices")
    return run


def test_trial_overrides_hyperparameters_and_scores_the_network(sampled, tmp_path):
    """val_loss is the trained network's best validation loss; closure_rms equals RMS(learned - exact log r)
    computed independently (ExactRatio from the run's event weights) on the same test rows."""
    import h5py

    from sbi_core.data.format import WEIGHTS
    from sbi_core.data.training_sets import read_training_set

    params = {"layers": 2, "width": 8, "activation": "relu", "learning_rate": 0.01, "batch_size": 64, "epochs": 3}
    out = str(tmp_path / "trial")
    record = train_trial(sampled, M0, params, out)
    assert record["status"] == "ok" and record["params"] == params
    assert record["training"]["network"] == {"hidden": [8, 8], "activation": "relu"}
    assert record["training"]["optimizer"]["batch_size"] == 64 and record["epochs"] == 3
    assert record["training"]["optimizer"]["learning_rate_final"] == pytest.approx(0.001)  # the run's 1/10 kept
    result = storage.read_json(RunLayout(out).network_file(M0, "result.json"))
    assert record["val_loss"] == result["best_val_loss"]

    layout = RunLayout(sampled)
    cfg = steps.load_run(sampled)[1]
    with h5py.File(steps.run_events(layout, steps.load_run(sampled)[2]), "r") as f:
        exact = ExactRatio.from_events(cfg, f[WEIGHTS][:, : len(cfg.benchmarks)])
    test = read_training_set(layout.training_set("alices", "theta", "nominal", "test"))
    model, _ = load_model(RunLayout(out).network_file(M0, "model.pt"))
    x, theta0 = test.x.astype(np.float64), test.theta0.astype(np.float64)
    with torch.no_grad():
        learned = model(torch.from_numpy(test.x), torch.from_numpy(test.theta0))[:, 0].double().numpy()
    truth = np.empty(len(x))
    for t in np.unique(theta0, axis=0):
        rows = np.all(theta0 == t, axis=1)
        truth[rows] = exact.log_ratio(x[rows], t)
    assert record["closure_rms"] == pytest.approx(float(np.sqrt(np.mean((learned - truth) ** 2))), rel=1e-4)

    again = train_trial(sampled, M0, params, out)  # finished: read back, not trained again
    assert again == record


@pytest.mark.parametrize(("params", "field"), [
    ({"depth": 3}, "params.depth"),
    ({"width": 0}, "params -> training.network.hidden"),
    ({"learning_rate": -1.0}, "params -> training.optimizer.learning_rate"),
    ({"activation": "sigmoid"}, "params -> training.network.activation"),
    ({"hidden": [8], "layers": 2}, "params.hidden"),
])
def test_bad_hyperparameters_are_refused_naming_the_field(sampled, tmp_path, params, field):
    with pytest.raises(ConfigError) as info:
        train_trial(sampled, M0, params, str(tmp_path / "bad"))
    assert any(p.startswith(field) for p, _ in info.value.issues), info.value.issues
    assert not storage.exists(str(tmp_path / "bad"))
