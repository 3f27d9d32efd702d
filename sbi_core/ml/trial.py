"""One network trained with overridden hyperparameters, scored: what a hyperparameter search evaluates.

`train_trial(run, network_id, params, out)` trains the network `network_id` of a sampled run on the run's own
training sets, with the run's `training` section changed by `params`, under the trial directory `out` (a
`RunLayout`: `out/networks/<id>/...`, checkpoint and resume included, so a retried trial resumes or is skipped
when finished), then writes `out/trial.json` (last: its presence means "scored"):
- `val_loss`: the best validation loss (the estimator's own loss on the run's validation set: every trial of
  one network is scored on the same rows with the same loss, whatever its hyperparameters);
- `closure_rms`: where the simulator has an exact likelihood, RMS(learned - exact log r) over the network's
  test rows (at most `test_rows`): the nominal ratio at each row's (theta0, theta1), or a variation's ratio
  (`sbi_core.ml.closure.ExactTargets`); None for a score network (SALLY) or without an exact likelihood.

`TRIAL_PARAMETERS` are the names a search space may use, mapped onto the `training` section by
`trial_training`: layers and width (hidden = [width] * layers), or hidden (a list), activation, learning_rate
(the final learning rate keeps the run's final/initial ratio), batch_size, epochs, patience, weight_decay, alpha.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core import storage
from sbi_core.config_base import validation_issues
from sbi_core.errors import ConfigError, InputError
from sbi_core.layout import RunLayout

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.data.training_sets import NetworkSpec, TrainingSet

__all__ = ["TRIAL_PARAMETERS", "closure_rms", "train_trial", "trial_training"]

log = logging.getLogger(__name__)
TRIAL_PARAMETERS = ("layers", "width", "hidden", "activation", "learning_rate", "batch_size", "epochs", "patience",
                    "weight_decay", "alpha")
#: Test rows the closure RMS is computed on (the first ones: the sets are shuffled when written).
TEST_ROWS = 20_000
TRIAL_FORMAT = "sbi-trial"
#: Fiducial sums per run root, per process: a mapped task scores several trials of one run with one events pass.
_SUMS: dict[str, Any] = {}


def trial_training(cfg: AnalysisConfig, params: Mapping[str, Any], where: str = "params") -> AnalysisConfig:
    """The run's config with its `training` section changed by the trial's parameters; ConfigError (exit 2)
    naming `where.<name>` for an unknown parameter or a value the section refuses."""
    from sbi_core.ml.options import TrainingConfig

    unknown = sorted(set(params) - set(TRIAL_PARAMETERS))
    if unknown:
        raise ConfigError(where, [(f"{where}.{k}", f"unknown hyperparameter (known: {list(TRIAL_PARAMETERS)})")
                                  for k in unknown])
    if "hidden" in params and ({"layers", "width"} & set(params)):
        raise ConfigError(where, [(f"{where}.hidden", "give hidden, or layers and width, not both")])
    tr = cfg.training.model_dump(mode="json")
    net, opt = tr["network"], tr["optimizer"]
    if "hidden" in params:
        net["hidden"] = params["hidden"]
    if "layers" in params or "width" in params:
        layers = params.get("layers", len(net["hidden"]))
        width = params.get("width", net["hidden"][0])
        net["hidden"] = [width] * layers if isinstance(layers, int) and not isinstance(layers, bool) else layers
    if "activation" in params:
        net["activation"] = params["activation"]
    if "learning_rate" in params:
        ratio = opt["learning_rate_final"] / opt["learning_rate"]
        opt["learning_rate"] = params["learning_rate"]
        if isinstance(params["learning_rate"], int | float) and not isinstance(params["learning_rate"], bool):
            opt["learning_rate_final"] = params["learning_rate"] * ratio
    for key in ("batch_size", "epochs", "patience", "weight_decay"):
        if key in params:
            opt[key] = params[key]
    if "alpha" in params:
        tr["alpha"] = params["alpha"]
    from pydantic import ValidationError

    try:
        training = TrainingConfig.model_validate(tr)
    except ValidationError as exc:
        raise ConfigError(where, [(f"{where} -> training.{p}", m) for p, m in validation_issues(exc)]) from None
    return cfg.model_copy(update={"training": training})


def closure_rms(layout: RunLayout, cfg: AnalysisConfig, spec: NetworkSpec, model: Any, info: Any,
                test: TrainingSet, rows: int = TEST_ROWS) -> float | None:
    """RMS(learned - exact log r) of one network on its test rows; None without an exact likelihood or for a
    score network."""
    from sbi_core import runs
    from sbi_core.ml.closure import ExactTargets, FiducialSums, rms
    from sbi_core.ml.ensemble import Ensemble
    from sbi_core.physics.registry import make_simulator

    if info.output != "log_ratio":
        return None
    sim = make_simulator(cfg)
    if not ExactTargets.available_for(cfg, sim):
        return None
    if layout.root not in _SUMS:
        if storage.exists(layout.evaluation_fiducial):
            _SUMS[layout.root] = FiducialSums.from_json(storage.read_json(layout.evaluation_fiducial))
        else:
            _, _, plan = runs.load_run(layout.root)
            _SUMS[layout.root] = FiducialSums.from_events(cfg, sim, runs.run_events(layout, plan))
    targets = ExactTargets(cfg, sim, _SUMS[layout.root])
    n = min(rows, len(test))
    x = test.x[:n].astype(np.float64)
    one = Ensemble(spec.method, spec.head, spec.variation, [spec.id], [model], [info])
    if spec.is_variation:
        exact = targets.log_ratio_variation(x, spec.variation)
        learned, _ = one.log_ratio(x)
    else:
        theta0, theta1 = test.theta0[:n].astype(np.float64), test.theta1[:n].astype(np.float64)
        exact = targets.log_ratio(x, theta0, theta1)
        learned, _ = one.log_ratio(x, theta0 if info.parametrised else None)
    finite = np.isfinite(exact)
    return rms(learned[finite], exact[finite]) if finite.any() else None


def _read_sets(layout: RunLayout, spec: NetworkSpec) -> dict[str, TrainingSet]:
    from sbi_core.data.training_sets import read_training_set

    sets = {}
    for split in ("train", "val", "test"):
        uri = layout.training_set(spec.method, spec.head, spec.variation, split)
        if not storage.exists(uri):
            raise InputError(f"network {spec.id}: sample file {uri} is missing: run `sbi-core sample --run "
                             f"{layout.root} --method {spec.method}` first")
        with storage.local_copy(uri) as path:
            sets[split] = read_training_set(path, where=uri)
    return sets


def train_trial(run_uri: str, network_id: str, params: Mapping[str, Any], out_uri: str, *,
                closure: bool = True, test_rows: int = TEST_ROWS) -> dict[str, Any]:
    """Train one network of a sampled run with hyperparameters `params` under `out_uri`; score it (see the
    module docstring). Returns trial.json's content; a finished trial is read back, not trained again."""
    from sbi_core import runs
    from sbi_core.data.training_sets import parse_network_id
    from sbi_core.ml.model_io import load_model
    from sbi_core.ml.plan import training_plan
    from sbi_core.ml.train_step import train_one
    from sbi_core.ml.trainer import resolve_device

    t0 = time.perf_counter()
    layout, cfg, _ = runs.load_run(run_uri)
    spec = parse_network_id(network_id)
    planned = {nid for ids in training_plan(cfg)["networks"].values() for nid in ids}
    if network_id not in planned:
        raise InputError(f"network {network_id} is not in the training plan of run {layout.root}")
    trial_cfg = trial_training(cfg, params)
    out = RunLayout(out_uri)
    record_uri = storage.join(out.root, "trial.json")
    sets = _read_sets(layout, spec)
    result = train_one(out, trial_cfg, spec, {k: sets[k] for k in ("train", "val")},
                       resolve_device(trial_cfg.training.device), track=False)
    if storage.exists(record_uri):
        previous = storage.read_json(record_uri)
        if previous.get("fingerprint") == result.get("fingerprint") and result.get("skipped"):
            return previous
    rms_value = None
    if result["status"] == "ok" and closure:
        model, info = load_model(out.network_file(network_id, "model.pt"))
        rms_value = closure_rms(layout, cfg, spec, model, info, sets["test"], test_rows)
    val = result.get("best_val_loss")
    record = {
        "format": TRIAL_FORMAT, "run": layout.root, "network": network_id, "params": dict(params),
        "status": result["status"], "error": result.get("error"),
        "val_loss": float(val) if val is not None and math.isfinite(val) else None,
        "closure_rms": rms_value, "epochs": result.get("epochs"), "best_epoch": result.get("best_epoch"),
        "n_parameters": result.get("n_parameters"), "fingerprint": result.get("fingerprint"),
        "training": trial_cfg.training.model_dump(mode="json", include={"network", "optimizer", "alpha"}),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    storage.write_json(record_uri, record)  # last: "scored"
    return record
