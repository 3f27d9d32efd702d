"""`sbi-core evaluate --batch I` and `--report` with stand-in ensembles of known quality (the exact after-cut
targets plus Gaussian noise of a chosen size) on test sets drawn from the benchmark run: the report's closure RMS
is the noise we put in, the ROC and calibration of the exact ratio are what the closed forms say."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbi_core import steps, storage, tracking
from sbi_core.config import load_config
from sbi_core.data.format import read_samples
from sbi_core.data.training_sets import TrainingSet, write_training_set
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout
from sbi_core.ml import evaluate
from sbi_core.ml.closure import ExactTargets, FiducialSums
from sbi_core.physics.cuts import cut_mask
from sbi_core.physics.registry import make_simulator

from .fake_ensembles import fake_api

NOISE = 0.05
N_TEST = 1200  # per set: half y = 0, half y = 1
KEYS = [("alices", "theta", "nominal"), *[("benchmark_ratio", b, "nominal") for b in ("p1", "p2", "p3", "p4", "p5")],
        ("benchmark_ratio", "sm", "energy_scale_up"), ("benchmark_ratio", "sm", "energy_scale_down")]


def _test_set(cfg, sim, events, key, rng) -> TrainingSet:
    """y = 0: events resampled by their weight at theta0 (or moved to nu = +-1); y = 1: the reference sample."""
    method, head, variation = key
    x_all, w_all, z_all = events["samples/observations"], events["samples/weights"], events["samples/latent"]
    thetas = np.asarray(cfg.benchmark_matrix())
    ref = thetas[0]
    half = N_TEST // 2
    if variation != "nominal":
        nu = np.zeros(len(cfg.nuisance))
        nu[1] = 1.0 if variation.endswith("up") else -1.0
        moved = sim.observations_at(x_all, z_all, nu)
        ok = np.flatnonzero(cut_mask(cfg, moved))
        x0 = moved[rng.choice(ok, half)]
        t0 = np.tile(ref, (half, 1))
    elif method == "alices":
        t0 = thetas[rng.integers(1, 6, half)]
        x0 = np.empty((half, x_all.shape[1]))
        for b in range(1, 6):
            sel = np.flatnonzero((t0 == thetas[b]).all(axis=1))
            p = w_all[:, b] / w_all[:, b].sum()
            x0[sel] = x_all[rng.choice(len(p), sel.size, p=np.clip(p, 0, None) / np.clip(p, 0, None).sum())]
    else:
        b = cfg.benchmark_names.index(head)
        p = np.clip(w_all[:, b], 0, None)
        x0 = x_all[rng.choice(len(p), half, p=p / p.sum())]
        t0 = np.tile(thetas[b], (half, 1))
    x1 = x_all[rng.choice(len(x_all), N_TEST - half)]
    f32 = np.float32
    n = N_TEST
    return TrainingSet(  # theta0 is the hypothesis of the pair for both classes (MadMiner's convention)
        x=np.concatenate([x0, x1]).astype(f32), theta0=np.concatenate([t0, t0[rng.permutation(half)]]).astype(f32),
        theta1=np.tile(ref, (n, 1)).astype(f32), y=np.repeat([0, 1], [half, n - half]).astype(f32),
        log_r_xz=np.full(n, np.nan, f32), t_xz=np.full((n, 2), np.nan, f32), event=np.zeros(n, np.int64),
        method=method, head=head, variation=variation, split="test", seed=0, config_hash="x",
        observables=tuple(cfg.observable_names), parameters=tuple(cfg.parameter_names),
        has_joint_ratio=False, has_joint_score=False)


@pytest.fixture
def trained_run(small_run, tmp_path, monkeypatch):
    """A derived run of small_run with test sets, an ensembles index (2 batches), network histories, and the
    ensemble module replaced by exact-plus-noise stand-ins."""
    run = tmp_path / "run"
    steps.derive(str(small_run), str(run), ["training.members=2"])
    layout = RunLayout(str(run))
    cfg = load_config(layout.config)
    sim = make_simulator(cfg)
    events = read_samples(small_run / "events.h5")
    rng = np.random.default_rng(5)
    for key in KEYS:
        with storage.atomic_write(layout.training_set(*key, "test")) as tmp:
            write_training_set(tmp, _test_set(cfg, sim, events, key, rng))
    storage.write_json(layout.ensembles_index, {"ensembles": [dict(zip(("method", "head", "variation"), k,
                                                                       strict=True)) for k in KEYS],
                                                "evaluate_batches": 2})
    for m, h, v in KEYS:
        ids = [f"{m}-{h}-{v}-m{i:02d}" for i in range(2)]
        storage.write_json(layout.ensemble(m, h, v), {"status": "ok", "members": ids})
        for i, nid in enumerate(ids):
            hist = [{"epoch": e, "train_loss": 0.7 - 0.05 * e, "val_loss": 0.72 - 0.04 * e + 0.01 * i} for e in range(4)]
            storage.write_json(layout.network_file(nid, "history.json"), hist)
            storage.write_json(layout.network_file(nid, "result.json"), {"status": "ok", "best_val_loss": hist[-1]["val_loss"],
                                                                         "best_epoch": 3, "epochs": 4})
    exact = ExactTargets(cfg, sim, FiducialSums.from_events(cfg, sim, str(small_run / "events.h5")))
    api = fake_api(exact, KEYS, noise=NOISE)
    monkeypatch.setattr(evaluate, "_ensemble_api", lambda: api)
    evaluate._load_cached.cache_clear()
    for var in ("MLFLOW_TRACKING_URI", "SBI_ARTIFACT_ROOT", "SBI_TRACKING"):
        monkeypatch.delenv(var, raising=False)
    tracking.reset()
    yield layout, cfg
    evaluate._load_cached.cache_clear()
    tracking.reset()


@pytest.mark.slow
def test_batches_then_report(trained_run):
    layout, cfg = trained_run
    summaries = [evaluate.evaluate_batch(layout.root, 0)]
    with pytest.raises(InputError, match="batch 1 is missing"):
        evaluate.evaluate_report(layout.root)
    summaries.append(evaluate.evaluate_batch(layout.root, 1))
    assert [s["rows"] for s in summaries] == [len(KEYS) * N_TEST // 2] * 2
    assert summaries[0]["closure_families"] == ["alices", "benchmark_ratio"] and summaries[0]["exact"]
    with pytest.raises(InputError, match="out of range"):
        evaluate.evaluate_batch(layout.root, 2)
    report = evaluate.evaluate_report(layout.root)
    metrics = json.loads(storage.read_text(layout.evaluation_metrics))
    assert report["metrics"] == layout.evaluation_metrics and report["plots"] == layout.evaluation_plots
    assert {p.rsplit("/", 1)[-1] for p in report["plot_files"]} == {
        "training-curves.png", "calibration.png", "roc.png", "closure-alices.png", "closure-benchmark_ratio.png"}
    for uri in report["plot_files"]:
        assert storage.read_bytes(uri)[:4] == b"\x89PNG"

    # Closure: the stand-ins are exact + N(0, NOISE); every theta's RMS is NOISE within its sampling error
    # (~NOISE/sqrt(2n) ~ 0.6% here) plus the morphing's amplification of noise for benchmark_ratio off the basis.
    alices = metrics["closure"]["alices"]["thetas"]
    assert set(alices) == {"p1", "p2", "p3", "p4", "p5", "true"}
    for label, entry in alices.items():
        assert abs(entry["rms"] / NOISE - 1) < 0.1, (label, entry)
        assert entry["rms_trivial"] > 3 * NOISE
    br = metrics["closure"]["benchmark_ratio"]["thetas"]
    for label in ("p1", "p2", "p3", "p4", "p5"):
        assert abs(br[label]["rms"] / NOISE - 1) < 0.1, (label, br[label])
    assert 0.2 * NOISE < br["true"]["rms"] < 2 * NOISE  # a morphed mix of five noisy heads
    assert report["closure_max_rms"]["alices"] == pytest.approx(max(e["rms"] for e in alices.values()))

    # Per ensemble on its own test set: the noisy ratio's AUC is the exact ratio's within noise; calibration of
    # the (nearly) exact ratio is good; variation networks closed within the noise too.
    for name, e in metrics["ensembles"].items():
        assert e["n_test"] == N_TEST and e["members"] == [f"{name.replace('/', '-')}-m0{i}" for i in range(2)]
        assert abs(e["rms_exact"] / NOISE - 1) < 0.1, (name, e["rms_exact"])
        assert -0.03 < e["auc"] - e["auc_exact"] < 0.01, name  # noise lowers the AUC a little (measured <= 0.011)
        assert e["calibration_error"] < 0.08, (name, e["calibration_error"])  # 1200 samples, 10 bins
    assert metrics["ensembles"]["benchmark_ratio/p3/nominal"]["auc"] > 0.6  # p3 differs clearly from the SM
    assert metrics["networks"]["alices-theta-nominal-m01"] == {"status": "ok", "best_val_loss": pytest.approx(0.61),
                                                               "best_epoch": 3, "epochs": 4}
    assert report["n_networks_ok"] == 16 and report["n_networks_failed"] == 0
    assert report["n_networks_missing"] == 4  # the alices variations are planned but not trained here

    # MLflow (embedded store next to the run): the report and every ensemble as a registered model with the alias.
    from mlflow.tracking import MlflowClient

    assert tracking._off_reason is None, tracking._off_reason
    client = MlflowClient(tracking_uri=tracking.tracking_uri(layout), registry_uri=tracking.tracking_uri(layout))
    name = tracking.registered_model_name(cfg, "benchmark_ratio", "p3", "nominal")
    version = client.get_model_version_by_alias(name, tracking.ENSEMBLE_ALIAS)
    assert client.get_run(version.run_id).data.metrics["auc"] == pytest.approx(
        metrics["ensembles"]["benchmark_ratio/p3/nominal"]["auc"])


def test_evaluate_command_line_errors(small_run, tmp_path, cli):
    """Bad input exits 2 with a message naming what is missing; --batch and --report exclude each other."""
    missing = cli("evaluate", "--run", str(tmp_path / "nowhere"), "--batch", "0")
    assert missing.returncode == 2 and "not configured" in missing.stderr
    steps.derive(str(small_run), str(tmp_path / "run"), [])
    untrained = cli("evaluate", "--run", str(tmp_path / "run"), "--report")
    assert untrained.returncode == 2 and "sbi-core ensemble" in untrained.stderr, untrained.stderr
    both = cli("evaluate", "--run", str(tmp_path / "run"), "--batch", "0", "--report")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_without_an_exact_likelihood_every_metric_but_closure(trained_run, monkeypatch):
    """A simulator with no exact likelihood: no closure, no exact targets, no fiducial pass; AUC and
    calibration as before."""
    layout, cfg = trained_run
    monkeypatch.setenv("SBI_TRACKING", "off")
    monkeypatch.setattr(ExactTargets, "available_for", staticmethod(lambda cfg, sim: False))
    for i in range(2):
        assert evaluate.evaluate_batch(layout.root, i)["closure_families"] == []
    report = evaluate.evaluate_report(layout.root)
    metrics = json.loads(storage.read_text(layout.evaluation_metrics))
    assert metrics["closure"] == {} and report["closure_max_rms"] == {} and not metrics["exact"]
    assert all("rms_exact" not in e and 0.45 < e["auc"] < 0.8 for e in metrics["ensembles"].values())
    assert not storage.exists(layout.evaluation_fiducial)
    assert {p.rsplit("/", 1)[-1] for p in report["plot_files"]} == {"training-curves.png", "calibration.png", "roc.png"}
