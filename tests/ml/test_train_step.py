"""`sbi-core train` and `sbi-core ensemble` on a configured run with synthetic sample files: the files each
network gets, kill-and-retry through the real subprocess (bitwise), a NaN member that fails by name while
the batch and the ensemble go on, the Ensemble API, and bad input (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout
from sbi_core.ml import trainer
from sbi_core.ml.ensemble import build_ensembles, evaluate_batch_slice, list_ensembles, load_ensemble
from sbi_core.ml.errors import EnsembleFailed, TrainingFailed
from sbi_core.ml.export import forward, load_export
from sbi_core.ml.train_step import NETWORK_FILES, train
from tests.conftest import REPO
from tests.ml.synthetic_run import synthetic_run

M0, M1 = "alices-theta-nominal-m00", "alices-theta-nominal-m01"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run whose member m01 is poisoned (NaN in its data): m00 trains, m01 fails, the batch goes on."""
    run = synthetic_run(tmp_path_factory.mktemp("nan") / "run")
    real = trainer.train_network

    def poison_m01(estimator, train_data, val_data, **kw):
        if kw["network_id"] == M1:
            train_data = {**train_data, "log_r_xz": train_data["log_r_xz"].clone()}
            train_data["log_r_xz"][::10] = float("nan")  # every 10th row: any bootstrap resample draws some
        return real(estimator, train_data, val_data, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "train_network", poison_m01)
        with pytest.raises(TrainingFailed) as info:
            train(run, [M1, M0])  # the failing member first: the batch must go on to m00
    return run, info.value


def test_nan_member_fails_named_and_the_batch_goes_on(trained):
    run, err = trained
    layout = RunLayout(run)
    assert list(err.failed) == [M1] and "loss is not finite" in err.failed[M1] and M1 in str(err)
    ok = storage.read_json(layout.network_file(M0, "result.json"))
    bad = storage.read_json(layout.network_file(M1, "result.json"))
    assert ok["status"] == "ok" and ok["epochs"] == 3 and ok["n_parameters"] > 0 and ok["device"] == "cpu"
    assert bad["status"] == "failed" and f"network {M1} failed at epoch 0" in bad["error"]
    for name in NETWORK_FILES:
        assert storage.exists(layout.network_file(M0, name)), name
    history = storage.read_json(layout.network_file(M0, "history.json"))
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert set(history[0]) == {"epoch", "train_loss", "val_loss", "learning_rate", "seconds"}


def test_ensemble_goes_on_with_min_members_and_names_the_failed(trained, tmp_path):
    run, _ = trained
    summary = build_ensembles(run)
    assert summary["ensembles"] == ["alices/theta/nominal"] and summary["failed_networks"] == [M1]
    assert summary["evaluate_batches"] == ["0"]
    record = storage.read_json(RunLayout(run).ensemble("alices", "theta", "nominal"))
    assert record["members"] == [M0] and M1 in record["failed"]
    # the same results under min_members = 2: the ensemble fails, naming the group
    strict = synthetic_run(tmp_path / "strict", ["training.min_members=2"])
    shutil.copytree(Path(run) / "networks", Path(strict) / "networks")
    with pytest.raises(EnsembleFailed, match=r"alices/theta/nominal: 1 of 2 members trained, min_members is 2"):
        build_ensembles(strict)


def test_ensemble_api(trained):
    run, _ = trained
    build_ensembles(run)
    layout = RunLayout(run)
    assert list_ensembles(layout) == [("alices", "theta", "nominal")]
    ens = load_ensemble(layout, "alices", "theta")
    assert ens.members == [M0]
    rng = np.random.default_rng(0)
    x, theta = rng.standard_normal((70, 5)), rng.uniform(-1, 1, (70, 2))
    mean, std = ens.log_ratio(x, theta)
    assert mean.shape == (70,) and mean.dtype == np.float64 and np.all(std == 0)  # one member: no spread
    exported = load_export(layout.network_file(M0, "export.npz"))
    np.testing.assert_allclose(mean, forward(exported, x, theta)[:, 0], atol=1e-5)
    same, _ = ens.log_ratio(x, np.array([0.2, -0.3]))
    np.testing.assert_array_equal(same, ens.log_ratio(x, np.tile([0.2, -0.3], (70, 1)))[0])
    score, score_std = ens.score(x, theta)
    assert score.shape == (70, 2) and score_std.shape == (70, 2)
    eps = 1e-3  # the autograd score against central differences of the ensemble's own log r
    fd = (ens.log_ratio(x, theta + [eps, 0])[0] - ens.log_ratio(x, theta - [eps, 0])[0]) / (2 * eps)
    np.testing.assert_allclose(score[:, 0], fd, atol=2e-3)
    with pytest.raises(ValueError, match="parametrised: pass theta0"):
        ens.log_ratio(x)
    with pytest.raises(ValueError, match=r"theta0 must have shape \(70, 2\)"):
        ens.log_ratio(x, theta[:5])
    with pytest.raises(ValueError, match=r"x must have shape \(n, 5\)"):
        ens.log_ratio(x[:, :3], theta)


def test_two_members_spread(tmp_path):
    run = synthetic_run(tmp_path / "run", n_train=800, n_val=200)
    summary = train(run, [M0, M1])
    assert summary["networks"] == [M0, M1] and all(r["status"] == "ok" for r in summary["results"].values())
    again = train(run, [M0])  # finished networks are not trained again
    assert again["results"][M0]["skipped"] is True
    build_ensembles(run)
    ens = load_ensemble(RunLayout(run), "alices", "theta")
    x, theta = np.random.default_rng(1).standard_normal((40, 5)), np.zeros(2)
    mean, std = ens.log_ratio(x, theta)
    members = np.stack([ens._per_member(x, theta, "log_ratio")[m] for m in range(2)])
    np.testing.assert_allclose(mean, members.mean(0))
    np.testing.assert_allclose(std, members.std(0, ddof=1))
    assert np.all(std > 0)  # different seeds and bootstrap resamples


def test_evaluate_batches_cover_the_rows_once():
    rows = [np.arange(1001)[evaluate_batch_slice(1001, 7, i)] for i in range(7)]
    np.testing.assert_array_equal(np.concatenate(rows), np.arange(1001))
    with pytest.raises(Exception, match="out of range"):
        evaluate_batch_slice(10, 2, 2)


def test_bad_input_exits_2(tmp_path, cli):
    run = synthetic_run(tmp_path / "run")
    res = cli("train", "--run", run, "--network", "carl-theta")
    assert res.returncode == 2 and "malformed" in res.stderr
    with pytest.raises(InputError, match="not in this run's training plan"):
        train(run, ["alices-theta-nominal-m07"])
    os.remove(RunLayout(run).training_set("alices", "theta", "nominal", "val"))
    with pytest.raises(InputError, match=r"val.h5 is missing: run `sbi-core sample --run .* --method alices`"):
        train(run, [M0])
    assert not storage.exists(RunLayout(run).network_file(M0, "result.json"))
    with pytest.raises(InputError, match="run `sbi-core ensemble` first"):
        list_ensembles(RunLayout(run))


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - absent or being replaced
        return -1


@pytest.mark.slow
def test_kill_train_subprocess_and_retry_gives_identical_weights(tmp_path):
    """SIGKILL `sbi-core train` after its second epoch's checkpoint, rerun the same command: it resumes and
    ends with exactly (bitwise) the weights of an uninterrupted run of the same network."""
    more = ["training.optimizer.epochs=10", "training.bootstrap=true"]
    killed, clean = (synthetic_run(tmp_path / name, more, n_train=4000, n_val=1000) for name in ("killed", "clean"))
    cmd = [sys.executable, "-m", "sbi_core.cli", "train", "--network", M0, "--run"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): the same kernels, the same rounding
    try:
        train(clean, [M0])  # the uninterrupted reference, in-process (one interpreter start less)
    finally:
        torch.set_num_threads(threads)
    ckpt = Path(RunLayout(killed).network_file(M0, "checkpoint.pt"))
    proc = subprocess.Popen([*cmd, killed], env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _checkpoint_epoch(ckpt) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = _checkpoint_epoch(ckpt)
    assert 2 <= at_kill < 10, f"the kill came too late (checkpoint at epoch {at_kill})"
    assert not Path(RunLayout(killed).network_file(M0, "result.json")).exists()
    rerun = subprocess.run([*cmd, killed], env=ENV, cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["results"][M0]["resumed_from"] >= at_kill
    a = torch.load(RunLayout(killed).network_file(M0, "model.pt"), weights_only=True)["state_dict"]
    b = torch.load(RunLayout(clean).network_file(M0, "model.pt"), weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = storage.read_json(RunLayout(killed).network_file(M0, "history.json"))
    hb = storage.read_json(RunLayout(clean).network_file(M0, "history.json"))
    assert [h["val_loss"] for h in ha] == [h["val_loss"] for h in hb]


def test_tracking_gets_each_network_and_never_fails_it(tmp_path, monkeypatch):
    import types

    import sbi_core

    calls = []

    def log_network(layout, cfg, network_id, *, params, history, artifacts, status):
        calls.append((network_id, status, len(history), [Path(a).name for a in artifacts]))
        raise ConnectionError("tracking server unreachable")

    fake = types.ModuleType("sbi_core.tracking")
    fake.log_network = log_network
    monkeypatch.setitem(sys.modules, "sbi_core.tracking", fake)
    monkeypatch.setattr(sbi_core, "tracking", fake, raising=False)
    run = synthetic_run(tmp_path / "run", ["training.members=1"], n_train=400, n_val=100)
    summary = train(run, [M0])
    assert summary["results"][M0]["status"] == "ok"
    assert calls == [(M0, "ok", 3, ["model.pt", "export.npz", "history.json"])]


def test_truncated_model_is_not_a_member_and_a_retry_repairs_it(trained, tmp_path):
    """A model.pt cut short beside a result.json that says ok: `ensemble` refuses the member naming the file,
    `train` does not skip it but trains it again (from its finished checkpoint), after which it is a member."""
    run = str(tmp_path / "run")
    shutil.copytree(trained[0], run)
    layout = RunLayout(run)
    model = Path(layout.network_file(M0, "model.pt"))
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2])
    with pytest.raises(EnsembleFailed, match="0 of 2 members trained"):
        build_ensembles(run)
    record = storage.read_json(layout.ensemble("alices", "theta", "nominal"))
    assert "model.pt holds" in record["failed"][M0] and "truncated" in record["failed"][M0]
    summary = train(run, [M0])
    assert summary["results"][M0]["skipped"] is False
    assert model.read_bytes() == good, "the retry must restore the same model"
    assert train(run, [M0])["results"][M0]["skipped"] is True
    assert build_ensembles(run)["ensembles"] == ["alices/theta/nominal"]
