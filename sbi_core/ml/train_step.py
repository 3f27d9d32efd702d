"""`sbi-core train --run RUN --network ID [--network ID ...]`: train a batch of networks, one after another.

Order of work: check every network id against the run's training plan and every sample file it needs
(bad input: exit 2 before anything is trained); then per network: skip it when its result.json says ok
for the same data and settings and its model.pt has the size and sha256 result.json records (a retried
batch does not retrain finished networks, and repairs a truncated model), else train it,
resuming its checkpoint when one matches; write model.pt, export.npz, history.json, then result.json
last (its presence means "finished"). A network that fails (a loss going NaN or inf, any error) gets a
result.json with status failed and the error, and the batch goes on; at the end the step fails (exit 1)
naming every failed network.

Per network, under `RunLayout.network(id)`: checkpoint.pt, model.pt, export.npz, history.json, result.json.

Warm start (`training.warm_start: RUN`): each network starts from the weights of the network with the same id in
RUN (its model.pt, input standardisation included, so it continues from the function it had learned) instead of
seeded initial weights; the same hidden widths and activation are required (InputError otherwise). The source
model's digest is part of the fingerprint, so a finished network is not reused across warm-start sources.

Which estimator a network trains: its method's (`training.methods`), configured from `training` (alpha);
per-variation networks (variation != nominal) learn log p(x|nu_k = +-1) / p(x|nu = 0) at the reference with
x as the only input, so they are benchmark_ratio-type classifiers whatever the method (the method's own loss
needs theta0 to vary and, for ALICE/ALICES/ROLR/RASCAL, a joint ratio or score that a variation moving the
observables does not have). benchmark_ratio and per-variation classifiers train on ALICE's soft labels
1 / (1 + r_xz) where the set has a joint ratio (same minimiser as CARL's labels, much lower variance: on 6000
benchmark events the morphed log r RMS went from 0.06-0.11 with labels to 0.02-0.04), plain labels otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from dataclasses import asdict
from typing import Any

import numpy as np

from sbi_core import storage
from sbi_core.config import AnalysisConfig
from sbi_core.data.training_sets import NetworkSpec, TrainingSet, parse_network_id, read_training_set
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout
from sbi_core.ml.errors import NetworkFailed, TrainingFailed
from sbi_core.ml.plan import training_plan

log = logging.getLogger(__name__)

NETWORK_FILES = ("checkpoint.pt", "model.pt", "export.npz", "history.json", "result.json")


def estimator_for(spec: NetworkSpec, cfg: AnalysisConfig, *, has_joint_ratio: bool = True) -> Any:
    """The estimator a network trains (see the module docstring for per-variation networks)."""
    from sbi_core.ml.estimators import get_estimator
    from sbi_core.ml.estimators.benchmark_ratio import BenchmarkRatio, BenchmarkRatioConfig

    if spec.is_variation or spec.method == "benchmark_ratio":
        return BenchmarkRatio(BenchmarkRatioConfig(labels="joint" if has_joint_ratio else "y"))
    return get_estimator(spec.method).from_training(cfg.training)


def warm_start_state(cfg: AnalysisConfig, network_id: str) -> tuple[dict[str, Any], str, str] | None:
    """(state dict, digest, model URI) of the network that `training.warm_start` names for this id; None when
    the setting is off. InputError naming the file when it is missing or has another architecture."""
    from sbi_core.ml.model_io import load_model

    source = cfg.training.warm_start
    if source is None:
        return None
    uri = RunLayout(source).network_file(network_id, "model.pt")
    if not storage.exists(uri):
        raise InputError(f"network {network_id}: training.warm_start run {source} has no {uri}: train that network "
                         "there first, or unset training.warm_start")
    model, info = load_model(uri)
    want = {"hidden": list(cfg.training.network.hidden), "activation": cfg.training.network.activation}
    got = {k: info.architecture[k] for k in want}
    if got != want:
        raise InputError(f"network {network_id}: training.warm_start model {uri} has {got}, this run trains {want} "
                         "(training.network): a warm start needs the same architecture")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].numpy().tobytes())
    return state, h.hexdigest(), uri


def _digest(ts: TrainingSet, keys: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for k in keys:
        h.update(np.ascontiguousarray(getattr(ts, k)).tobytes())
    return h.hexdigest()


def _check_set(ts: TrainingSet, spec: NetworkSpec, est: Any, uri: str) -> None:
    """Inputs the estimator relies on: present (not NaN) and, for a parametrised one, a fixed theta1."""
    for key, flag in (("log_r_xz", ts.has_joint_ratio), ("t_xz", ts.has_joint_score)):
        if key in est.uses and not flag:
            raise InputError(f"{uri}: method {spec.method} needs {key}, which this sample set does not have")
    if est.parametrised and len(ts) and not np.all(ts.theta1 == ts.theta1[0]):
        raise InputError(f"{uri}: theta1 varies; a parametrised estimator learns r(x|theta0, theta1) against "
                         "one reference theta1")


def _load_sets(layout: RunLayout, cfg: AnalysisConfig, specs: list[NetworkSpec]) -> dict[tuple, dict[str, Any]]:
    """Train and validation sets of every (method, head, variation) in the batch, read once each."""
    out: dict[tuple, dict[str, Any]] = {}
    for spec in specs:
        key = (spec.method, spec.head, spec.variation)
        if key in out:
            continue
        sets = {}
        for split in ("train", "val"):
            uri = layout.training_set(*key, split)
            if not storage.exists(uri):
                raise InputError(f"network {spec.id}: sample file {uri} is missing: run `sbi-core sample --run "
                                 f"{layout.root} --method {spec.method}` first")
            with storage.local_copy(uri) as path:
                sets[split] = read_training_set(path, where=uri)
        est = estimator_for(spec, cfg, has_joint_ratio=sets["train"].has_joint_ratio)
        for split, ts in sets.items():
            _check_set(ts, spec, est, layout.training_set(*key, split))
        out[key] = sets
    return out


def _tensors(ts: TrainingSet, keys: tuple[str, ...]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(getattr(ts, k))) for k in keys}


def _previous_ok(layout: RunLayout, network_id: str, fingerprint: str) -> dict[str, Any] | None:
    """The finished result of this network for the same data and settings, if its model file is the one the
    result records (a truncated or replaced model.pt is retrained, not skipped)."""
    from sbi_core.ml.model_io import model_file_problem

    uri = layout.network_file(network_id, "result.json")
    if not storage.exists(uri):
        return None
    try:
        result = storage.read_json(uri)
    except ValueError:
        log.warning("%s: %s is not valid JSON: retraining", network_id, uri)
        return None
    if not isinstance(result, dict) or result.get("status") != "ok" or result.get("fingerprint") != fingerprint:
        return None
    problem = model_file_problem(layout.network_file(network_id, "model.pt"), result)
    if problem:
        log.warning("%s: %s: retraining", network_id, problem)
        return None
    return result


def _log_tracking(layout: RunLayout, cfg: AnalysisConfig, network_id: str, params: dict[str, Any],
                  history: list[dict[str, Any]], artifacts: list[str], status: str) -> None:
    """MLflow through sbi_core.tracking when that module exists. Tracking never fails a network: the files in
    storage are the record, so an error here is logged and training goes on."""
    try:
        from sbi_core import tracking  # type: ignore[attr-defined]
    except ImportError:
        return
    log_network = getattr(tracking, "log_network", None)
    if log_network is None:
        return
    try:
        log_network(layout, cfg, network_id, params=params, history=history, artifacts=artifacts, status=status)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("%s: tracking failed (%s: %s); the files under %s are the record", network_id,
                    type(exc).__name__, exc, layout.network(network_id))


def train_one(layout: RunLayout, cfg: AnalysisConfig, spec: NetworkSpec, sets: dict[str, TrainingSet],
              device: Any, *, track: bool = True) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one network; write its files; return its result dict.
    track=False: no MLflow run (a study's trial networks are tracked by the study)."""
    from sbi_core.ml.export import export_network, save_export
    from sbi_core.ml.model_io import save_model
    from sbi_core.ml.trainer import TrainOptions, network_seed, train_network, training_fingerprint

    t0 = time.perf_counter()
    nid = spec.id
    train, val = sets["train"], sets["val"]
    est = estimator_for(spec, cfg, has_joint_ratio=train.has_joint_ratio)
    tr = cfg.training
    options = TrainOptions.from_config(tr.optimizer)
    uses = tuple(est.uses)
    keys = tuple(dict.fromkeys((*uses, "theta0", "t_xz")))  # shapes for n_params; standardisation of theta0
    extra = {"train": _digest(train, uses), "val": _digest(val, uses), "config_hash": train.config_hash}
    warm = warm_start_state(cfg, nid)
    if warm is not None:
        extra["warm_start"] = warm[1]
    seed = network_seed(tr.seed, nid)
    base = {"network_id": nid, "method": spec.method, "head": spec.head, "variation": spec.variation,
            "member": spec.member, "estimator": est.name, "estimator_config": asdict(est.config),
            "n_train": len(train), "n_val": len(val), "seed": seed, "bootstrap": tr.bootstrap,
            "warm_start": warm[2] if warm is not None else None}
    fp = training_fingerprint(est, network_id=nid, options=options, hidden=list(tr.network.hidden),
                              activation=tr.network.activation, seed=seed, n_train=len(train), n_val=len(val),
                              bootstrap=tr.bootstrap, device=device, extra=extra)
    previous = _previous_ok(layout, nid, fp)
    if previous is not None:
        log.info("%s: already trained (result.json ok for the same data and settings): skipped", nid)
        return {**previous, "skipped": True}
    try:
        result = train_network(
            est, _tensors(train, keys), _tensors(val, keys), network_id=nid, options=options,
            hidden=list(tr.network.hidden), activation=tr.network.activation, seed=seed, device=device,
            checkpoint_uri=layout.network_file(nid, "checkpoint.pt"), bootstrap=tr.bootstrap,
            fingerprint_extra=extra, init_state=warm[0] if warm is not None else None,
        )
    except NetworkFailed as exc:
        return _write_failure(layout, cfg, nid, base, str(exc), exc.history, t0, device, track)
    except Exception as exc:  # noqa: BLE001 - one network's crash must not stop the batch
        log.error("network %s failed:\n%s", nid, traceback.format_exc())
        return _write_failure(layout, cfg, nid, base, f"network {nid} failed: {type(exc).__name__}: {exc}", [],
                              t0, device, track)
    model = result.model
    saved = save_model(layout.network_file(nid, "model.pt"), model, network_id=nid, method=spec.method,
               parametrised=est.parametrised, output=est.output,
               meta={"head": spec.head, "variation": spec.variation, "member": spec.member, "estimator": est.name,
                     "observables": ",".join(train.observables), "parameters": ",".join(train.parameters)})
    save_export(layout.network_file(nid, "export.npz"),
                export_network(model, network_id=nid, method=spec.method, output=est.output))
    storage.write_json(layout.network_file(nid, "history.json"), result.history)
    out = {**base, "status": "ok", "error": None, "epochs": result.epochs, "best_epoch": result.best_epoch,
           "best_val_loss": result.best_val_loss, "stopped_early": result.stopped_early,
           "resumed_from": result.resumed_from, "n_parameters": model.n_parameters(), "device": result.device,
           "seconds": round(time.perf_counter() - t0, 3), "fingerprint": result.fingerprint,
           "parametrised": est.parametrised, "output": est.output, **saved}
    storage.write_json(layout.network_file(nid, "result.json"), out)  # last: "finished"
    if track:
        _log_tracking(layout, cfg, nid, params={k: v for k, v in out.items() if k != "error"},
                      history=result.history,
                      artifacts=[layout.network_file(nid, n) for n in ("model.pt", "export.npz", "history.json")],
                      status="ok")
    return {**out, "skipped": False}


def _write_failure(layout: RunLayout, cfg: AnalysisConfig, nid: str, base: dict[str, Any], error: str,
                   history: list[dict], t0: float, device: Any, track: bool = True) -> dict[str, Any]:
    log.error("%s", error)
    storage.write_json(layout.network_file(nid, "history.json"), history)
    out = {**base, "status": "failed", "error": error, "epochs": len(history), "best_epoch": None,
           "best_val_loss": None, "n_parameters": None, "device": str(device),
           "seconds": round(time.perf_counter() - t0, 3), "fingerprint": None}
    storage.write_json(layout.network_file(nid, "result.json"), out)
    if track:
        _log_tracking(layout, cfg, nid, params=out, history=history,
                      artifacts=[layout.network_file(nid, "result.json")], status="failed")
    return {**out, "skipped": False}


def train(run_uri: str, network_ids: list[str]) -> dict[str, Any]:
    """Train the given networks of a run one after another; TrainingFailed (exit 1) at the end if any failed."""
    from sbi_core import runs
    from sbi_core.ml.trainer import resolve_device

    t0 = time.perf_counter()
    layout, cfg, _ = runs.load_run(run_uri)
    planned = {nid for ids in training_plan(cfg)["networks"].values() for nid in ids}
    specs = []
    for nid in dict.fromkeys(network_ids):
        spec = parse_network_id(nid)
        if nid not in planned:
            raise InputError(f"network {nid} is not in this run's training plan (training.methods "
                             f"{list(cfg.training.methods)}, members {cfg.training.members}, variations "
                             f"{cfg.training.variations})")
        specs.append(spec)
    sets = _load_sets(layout, cfg, specs)
    for spec in specs:  # a missing or foreign warm-start model is bad input, found before anything trains
        warm_start_state(cfg, spec.id)
    device = resolve_device(cfg.training.device)
    results = {s.id: train_one(layout, cfg, s, sets[(s.method, s.head, s.variation)], device) for s in specs}
    failed = {nid: r["error"] for nid, r in results.items() if r["status"] != "ok"}
    if failed:
        raise TrainingFailed(failed, len(results))
    return {
        "step": "train",
        "run": layout.root,
        "networks": list(results),
        "device": str(device),
        "results": {nid: {k: r.get(k) for k in ("status", "epochs", "best_epoch", "best_val_loss", "resumed_from",
                                                 "skipped", "seconds")} for nid, r in results.items()},
        "seconds": round(time.perf_counter() - t0, 3),
    }
