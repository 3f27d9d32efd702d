"""`sbi-core merge-samples --run RUN --method M --part A --part B ...`: a run's training sets as the union of
other runs' sets (active learning adds the samples drawn from events simulated at a new point).

Order of work: read and check every part's train and val sets of every (head, variation) the method trains in
RUN (same method, head, variation, observables, parameters, reference theta1 and joint-ratio/score flags;
InputError naming the part's file otherwise); then write RUN's sets, the rows of the parts in the order given
(the trainer shuffles every epoch), then the manifest (last: its presence means "sampled"). Nothing is read from
an events file, so a round of active learning costs the new events' sampling only.

The test split is the FIRST part's, unchanged: the closure and the evaluation of every round are computed on
the same test rows. `event` keeps each row's index in its own part's events file (the manifest lists the parts
and their rows). The merged sets carry RUN's config hash; the parts may be runs of other events (a run resampled
at a point: `sbi-core resample`), but they must describe the same analysis (observables, parameters, basis).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from sbi_core import storage
from sbi_core.data.training_sets import MANIFEST_FORMAT, SampleSpec, TrainingSet, read_training_set, sample_specs
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig

__all__ = ["merge_samples"]

_ARRAYS = ("x", "theta0", "theta1", "y", "log_r_xz", "t_xz", "event")


def _read(layout: RunLayout, spec: SampleSpec, split: str) -> TrainingSet:
    uri = layout.training_set(spec.method, spec.head, spec.variation, split)
    if not storage.exists(uri):
        raise InputError(f"merge-samples: part {layout.root} has no {uri}: run `sbi-core sample --run {layout.root} "
                         f"--method {spec.method}` first")
    with storage.local_copy(uri) as path:
        return read_training_set(path, where=uri)


def _check_part(first: TrainingSet, ts: TrainingSet, where: str) -> None:
    for name in ("method", "head", "variation", "observables", "parameters", "has_joint_ratio", "has_joint_score"):
        if getattr(ts, name) != getattr(first, name):
            raise InputError(f"merge-samples: {where} has {name} {getattr(ts, name)!r}, the first part "
                             f"{getattr(first, name)!r}")
    if len(ts) and len(first) and not np.array_equal(ts.theta1[:1], first.theta1[:1]):
        raise InputError(f"merge-samples: {where} has the reference theta1 {ts.theta1[0].tolist()}, the first part "
                         f"{first.theta1[0].tolist()}: the parts must share the reference benchmark")


def _union(parts: list[TrainingSet], roots: list[str], config_hash: str) -> TrainingSet:
    first = parts[0]
    common = {k: v for k, v in first.attrs.items() if all(p.attrs.get(k) == v for p in parts[1:])}
    attrs = {**common, "parts": ",".join(roots), "rows_per_part": ",".join(str(len(p)) for p in parts)}
    arrays = {k: np.concatenate([getattr(p, k) for p in parts]) for k in _ARRAYS}
    return TrainingSet(**arrays, method=first.method, head=first.head, variation=first.variation, split=first.split,
                       seed=first.seed, config_hash=config_hash, observables=first.observables,
                       parameters=first.parameters, has_joint_ratio=first.has_joint_ratio,
                       has_joint_score=first.has_joint_score, attrs=attrs)


def _merged_sets(cfg: AnalysisConfig, method: str, parts: list[RunLayout], config_hash: str
                 ) -> dict[tuple[SampleSpec, str], TrainingSet]:
    out: dict[tuple[SampleSpec, str], TrainingSet] = {}
    roots = [p.root for p in parts]
    for spec in sample_specs(method, cfg):
        for split in ("train", "val"):
            sets = [_read(layout, spec, split) for layout in parts]
            for layout, ts in zip(parts[1:], sets[1:], strict=True):
                _check_part(sets[0], ts, layout.training_set(spec.method, spec.head, spec.variation, split))
            out[(spec, split)] = _union(sets, roots, config_hash)
        test = _read(parts[0], spec, "test")
        out[(spec, "test")] = _union([test], roots[:1], config_hash)
    return out


def merge_samples(run_uri: str, method: str, part_uris: list[str]) -> dict[str, Any]:
    """Write RUN's training sets of `method` as the union of the parts' (see the module docstring)."""
    from sbi_core import runs
    from sbi_core.data.training_sets import write_training_set
    from sbi_core.ml.plan import training_plan

    t0 = time.perf_counter()
    layout, cfg, plan = runs.load_run(run_uri)
    if method not in cfg.training.methods:
        raise InputError(f"merge-samples: --method {method!r} is not in training.methods {cfg.training.methods} of "
                         f"run {layout.root}")
    if not part_uris:
        raise InputError("merge-samples: give at least one --part")
    parts = [RunLayout(u) for u in part_uris]
    if layout.root in [p.root for p in parts]:
        raise InputError(f"merge-samples: --run {layout.root} cannot be one of its own parts")
    sets = _merged_sets(cfg, method, parts, plan.config_hash)
    files: dict[str, dict[str, str]] = {}
    for (spec, split), ts in sets.items():
        uri = layout.training_set(spec.method, spec.head, spec.variation, split)
        with storage.atomic_write(uri) as tmp:
            write_training_set(tmp, ts)
        files.setdefault(f"{spec.head}/{spec.variation}", {})[split] = uri
    rows = {split: max(len(ts) for (s, sp), ts in sets.items() if sp == split) for split in ("train", "val", "test")}
    manifest = {
        "format": MANIFEST_FORMAT, "format_version": 1, "method": method, "reference": cfg.sampling_benchmark,
        "config_hash": plan.config_hash, "seed": cfg.training.seed, "members": cfg.training.members,
        "heads": [s.head for s in sample_specs(method, cfg) if not s.is_variation],
        "variations": [s.variation for s in sample_specs(method, cfg) if s.is_variation],
        "sets": [{"head": s.head, "variation": s.variation, "networks": s.network_ids(cfg.training.members),
                  "files": files[f"{s.head}/{s.variation}"]} for s in sample_specs(method, cfg)],
        "networks": training_plan(cfg)["networks"][method], "rows": rows,
        "parts": [{"run": p.root, "train_rows": int(n)} for p, n in zip(
            parts, sets[(sample_specs(method, cfg)[0], "train")].attrs["rows_per_part"].split(","), strict=True)],
    }
    storage.write_json(layout.samples_manifest(method), manifest)  # last: "sampled"
    return {"step": "merge-samples", "run": layout.root, "method": method, "parts": [p.root for p in parts],
            "networks": manifest["networks"], "n_train": rows["train"], "n_val": rows["val"], "n_test": rows["test"],
            "epochs": cfg.training.optimizer.epochs, "seconds": round(time.perf_counter() - t0, 3)}
