"""The work of a disagreement cycle of the `active_learning` kind (`sbi_core.studies.active_learning`): D(theta)
of the current networks at a point (with the closure RMS against the exact log r), the simulation at the chosen
point (events, their samples, samples drawn from the source's events, the merged sets of the next training run),
and the retraining of one network. The kind plans and aggregates; these are what its work items run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from sbi_core.config import flow_mapping
from sbi_core.errors import InputError
from sbi_core.studies.kinds import PointFailed
from sbi_core.studies.study import Study

__all__ = ["cycle_seed", "disagreement_at", "full_point", "simulate", "train_network"]


def full_point(study: Study, point: dict[str, float]) -> dict[str, float]:
    """Every parameter of interest: the searched ones from the point, the others at the reference benchmark."""
    cfg = study.analysis
    ref = cfg.benchmark_matrix()[cfg.benchmark_names.index(cfg.sampling_benchmark)]
    out = {p: float(v) for p, v in zip(cfg.parameter_names, ref, strict=True)}
    out.update({k: float(v) for k, v in cfg.inference.fix.items() if k in out})
    out.update({k: float(v) for k, v in point.items()})
    return out


# per process, by source run: the events D(theta) is averaged over and the exact targets, loaded once
_samples: dict[str, Any] = {}
_exact: dict[str, Any] = {}


def disagreement_at(study: Study, run: str, point: dict[str, float]) -> dict[str, Any]:
    """D(theta) of the run's ensemble at the point (`value`), over the source's test events, and the closure RMS
    there."""
    import numpy as np

    from sbi_core import runs
    from sbi_core.ml.disagreement import DisagreementSample, disagreement_and_mean

    o = study.options
    layout, cfg, plan = runs.load_run(run)
    src = str(study.config.run)
    if src not in _samples:
        _samples[src] = DisagreementSample.from_run(*runs.load_run(src), n=o.sample_events)
    sample = _samples[src]
    full = full_point(study, point)
    theta = np.array([full[p] for p in cfg.parameter_names])
    results, mean = disagreement_and_mean(layout, cfg, o.method, theta[None, :], sample, o.weighting)
    result = results[0]
    result["value"] = result["disagreement"]
    result["closure_rms"] = _closure(study, mean[0], theta, sample)
    return result


def _closure(study: Study, learned: Any, theta: Any, sample: Any) -> float | None:
    """RMS of the ensemble's log r (`learned`, over the sample's events) against the exact one (None without an
    exact likelihood): what the disagreement is a proxy for."""
    from sbi_core import runs
    from sbi_core.ml.closure import ExactTargets, FiducialSums, rms
    from sbi_core.physics.registry import make_simulator

    src = str(study.config.run)
    if src not in _exact:
        s_layout, s_cfg, s_plan = runs.load_run(src)
        sim = make_simulator(s_cfg)
        _exact[src] = (ExactTargets(s_cfg, sim, FiducialSums.from_events(s_cfg, sim, runs.run_events(s_layout, s_plan)))
                       if ExactTargets.available_for(s_cfg, sim) else None)
    targets = _exact[src]
    if targets is None:
        return None
    return rms(learned, targets.log_ratio(sample.x, theta, targets.reference))


def _sbi_core(*args: str) -> dict[str, Any]:
    """A whole-run step (`derive`, `resample`) through the `sbi-core` command, as a DAG task runs it: the study
    room does not reach up into `sbi_core.steps`. InputError on exit 2, RuntimeError on any other failure."""
    proc = subprocess.run([sys.executable, "-m", "sbi_core.cli", *args], capture_output=True, text=True,
                          env=os.environ.copy(), check=False)
    if proc.returncode == 2:
        raise InputError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"sbi-core {args[0]} failed")
    if proc.returncode != 0:
        raise RuntimeError(f"sbi-core {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def simulate(study: Study, inputs: dict[str, Any]) -> dict[str, Any]:
    """Events at the point, their samples, and the next training run whose sets add them to the current ones."""
    from sbi_core.data.steps import combine, generate
    from sbi_core.ml.merge import merge_samples
    from sbi_core.ml.samples import sample

    o = study.options
    point = full_point(study, inputs["point"])
    new, nxt = inputs["sample_run"], inputs["next_run"]
    args = ["resample", "--from", str(study.config.run), "--run", new, "--events", str(o.events_per_point),
            "--seed", str(inputs["seed"]), "--set", f"training.samples.train={o.samples_per_point}",
            "--set", f"training.methods=[{o.method}]", "--set", "training.variations=false"]
    args += [a for k, v in point.items() for a in ("--at", f"{k}={v!r}")]
    if o.shards_per_point:
        args += ["--shards", str(o.shards_per_point)]
    summary = _sbi_core(*args)
    generate(new, summary["shards"])
    for g in range(summary["n_groups"]):
        combine(new, g)
    combine(new, None)
    sampled = sample(new, o.method)
    parts, added = [inputs["base"], new], sampled["n_train"] + sampled["n_val"]
    for i, at in enumerate(inputs.get("source_points", [inputs["point"]]) if o.source_samples_per_point else []):
        parts.append(f"{new.rstrip('/')}-source-{i:02d}")  # runs/sample-cNN-source-II
        _sbi_core("derive", "--from", str(study.config.run), "--run", parts[-1],
                  "--set", f"training.samples.train={o.source_samples_per_point}", "--set", "training.samples.theta0=fixed",
                  "--set", f"training.samples.theta_fixed={flow_mapping(full_point(study, at))}", "--set", f"training.seed={inputs['seed'] + i}",
                  "--set", f"training.methods=[{o.method}]", "--set", "training.variations=false")
        from_source = sample(parts[-1], o.method)
        added += from_source["n_train"] + from_source["n_val"]
    epochs = ["--set", f"training.optimizer.epochs={o.retrain_epochs}"] if o.retrain_epochs else []
    _sbi_core("derive", "--from", str(study.config.run), "--run", nxt, "--set", f"training.warm_start={inputs['base']}",
              "--set", f"training.methods=[{o.method}]", "--set", "training.variations=false", *epochs)
    merged = merge_samples(nxt, o.method, parts)
    return {"point": point, "sample_run": new, "next_run": nxt, "events": summary["events"],
            "added_samples": added, "train_rows": merged["n_train"], "networks": merged["networks"]}


def train_network(inputs: dict[str, Any]) -> dict[str, Any]:
    """Retrain one network of the cycle's run (warm-started); a failed training is a failed point, not a crash."""
    from sbi_core.ml.errors import TrainingFailed
    from sbi_core.ml.train_step import train

    try:
        summary = train(inputs["run"], [inputs["network"]])
    except TrainingFailed as exc:
        raise PointFailed(str(exc)) from None
    r = summary["results"][inputs["network"]]
    return {"network": inputs["network"], "value": r["best_val_loss"], "best_val_loss": r["best_val_loss"],
            "epochs": r["epochs"], "seconds": r["seconds"]}


def cycle_seed(study: Study, cycle: int) -> int:
    """The cycle's simulation and sampling seed: from the study's seed, name and cycle, so a rerun repeats it."""
    import hashlib

    key = f"{study.config.seed}:{study.name}:cycle-{cycle}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "little")
