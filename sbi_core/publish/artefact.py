"""`sbi-core export-likelihood`: a run's likelihood as one self-contained, versioned artefact.

The artefact (format `nsbi-likelihood`, docs/likelihood-format.md) is what a physicist outside the project
needs to reinterpret the measurement: the per-event arrays of the fitted dataset and of the normalisation
sample, the morphing, the nuisance model (interpolation, constraints, auxiliary data), the fiducial cross
sections, the observables with their units and the cuts, the networks (for a learned likelihood, each
ensemble member's weights as plain arrays), the pipeline's best fit and the provenance. `nsbi_likelihood`
(a package of its own, numpy alone) reads it.

Order of work (nothing half-written is ever visible):
1. check everything the artefact needs (dataset, likelihood arrays, fit, networks) and build the
   description; validate it against the schema shipped in the package (`sbi_core/schema/nsbi-likelihood-v1.json`);
2. write the files into a local temporary directory, `likelihood.json` last;
3. publish: the archive `<to>.tar.gz` through `storage.atomic_write`, then the directory's files, its
   `likelihood.json` last (a reader treats a directory without it as no artefact).

Learned likelihoods: each column's log ratio is `offset + mean over members of the member's log r(x)`
(`sbi_core.ml.evaluate.learned_arrays`); the offsets (log sigma_b / sigma_ref and the variation networks'
training normalisations) are recovered from the pipeline's own arrays of the dataset and checked to be one
number over all events (to `OFFSET_TOLERANCE`, the float32 rounding of the networks), so the reader
reproduces exactly what the pipeline fitted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tarfile
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError

__all__ = ["ARCHIVE_SUFFIX", "DESCRIPTION", "FORMAT_NAME", "FORMAT_VERSION", "export_likelihood", "schema"]

FORMAT_NAME = "nsbi-likelihood"
FORMAT_VERSION = 1
DESCRIPTION = "likelihood.json"
ARCHIVE_SUFFIX = ".tar.gz"
SCHEMA_FILE = "nsbi-likelihood-v1.json"
OFFSET_TOLERANCE = 1e-4
NOMINAL, BENCHMARK_RATIO = "nominal", "benchmark_ratio"


def schema() -> dict[str, Any]:
    """The JSON schema of `likelihood.json` shipped in the package."""
    return json.loads(resources.files("sbi_core.schema").joinpath(SCHEMA_FILE).read_text())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _per_sample(arrays: Any) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(samples, owner (B,) sample index, log_ratio_var (n, K, 2, S), modifier mask (K, S), aux (K,)) of arrays
    of the contract: version 1 arrays are one sample, every nuisance on it, aux 0."""
    samples = getattr(arrays, "samples", None)
    if samples:
        return (list(samples), np.asarray(arrays.benchmark_sample), np.asarray(arrays.log_ratio_var),
                np.asarray(arrays.modifier_mask, dtype=bool), np.asarray(arrays.aux, dtype=np.float64))
    k = len(arrays.nuisance)
    return (["total"], np.zeros(len(arrays.benchmarks), dtype=np.int64), np.asarray(arrays.log_ratio_var)[..., None],
            np.ones((k, 1), dtype=bool), np.zeros(k))


def _save_arrays(path: Path, arrays: Any) -> int:
    _, _, lrv, _, _ = _per_sample(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, log_ratio=np.asarray(arrays.log_ratio, dtype=np.float64),
                 log_ratio_var=np.asarray(lrv, dtype=np.float64), weight=np.asarray(arrays.weight, dtype=np.float64))
    return int(arrays.n_events)


def _schemes(cfg: Any, names: list[str]) -> list[str]:
    """The interpolation of every nuisance of the arrays (the config's scheme, or its per-nuisance override; the
    arrays may hold more nuisances than the config, e.g. the sally source's per-bin staterrors)."""
    from sbi_core.inference.interpolation import schemes_for

    return list(schemes_for(names, cfg.inference.interpolation, cfg.inference.nuisance_interpolation))


def _model_fields(cfg: Any, arrays: Any) -> dict[str, Any]:
    """parameters, samples, columns, morphing, nuisance, xsec: the model part of the description."""
    samples, owner, _, mask, aux = _per_sample(arrays)
    ranges = {p.name: list(p.range) if getattr(p, "range", None) is not None else None for p in cfg.parameters}
    values = np.asarray(arrays.benchmark_values, dtype=np.float64)
    return {
        "parameters": [{"name": n, "range": ranges.get(n)} for n in arrays.parameters],
        "samples": samples,
        "columns": [{"name": b, "sample": samples[int(owner[i])],
                     "values": None if np.any(np.isnan(values[i])) else values[i].tolist()}
                    for i, b in enumerate(arrays.benchmarks)],
        "reference": arrays.reference,
        "morphing": {"components": np.asarray(arrays.morphing_components).astype(int).tolist(),
                     "matrix": np.asarray(arrays.morphing_matrix, dtype=np.float64).tolist()},
        "nuisance": [{"name": n, "kind": str(kind), "size": float(size), "constraint": "gaussian",
                      "aux": float(aux[k]), "interpolation": scheme,
                      "samples": [s for s, on in zip(samples, mask[k], strict=True) if on]}
                     for k, (n, kind, size, scheme) in enumerate(zip(arrays.nuisance, arrays.nuisance_kinds,
                                                                     arrays.nuisance_sizes,
                                                                     _schemes(cfg, list(arrays.nuisance)),
                                                                     strict=True))],
        "xsec": {"columns": np.asarray(arrays.xsec, dtype=np.float64).tolist(),
                 "variations": np.asarray(arrays.xsec_var, dtype=np.float64).tolist(), "unit": "pb"},
    }


def _fit_fields(layout: Any, cfg: Any, names: list[str]) -> dict[str, Any]:
    """The pipeline's best fit and where it started (the reader's refit starts there too)."""
    if not storage.exists(layout.fit):
        raise InputError(f"export-likelihood: no fit result {layout.fit}: run `sbi-core fit` first (the artefact "
                         "records the pipeline's best fit)")
    fit = storage.read_json(layout.fit)
    if fit.get("names") != names:
        raise InputError(f"{layout.fit} fits parameters {fit.get('names')}, the likelihood arrays have {names}: refit")
    from sbi_core.inference.steps import fit_start

    start = fit_start(cfg)
    return {"values": fit["values"], "errors": {k: v for k, v in fit["errors"].items() if v == v},
            "nll": fit["nll"], "valid": fit["valid"], "start": [float(start.get(n, 0.0)) for n in names]}


def _networks(layout: Any, cfg: Any, info: Any, arrays: Any, out: Path) -> tuple[dict[str, Any] | None, dict]:
    """The networks part (and their ids by role) of a learned likelihood; None for the exact source."""
    if cfg.inference.source != "learned":
        return None, {}
    from sbi_core.inference.datasets import read_events
    from sbi_core.ml.ensemble import list_ensembles
    from sbi_core.ml.export import forward as ref_forward
    from sbi_core.ml.export import load_export

    n = min(arrays.n_events, 2000)
    x = read_events(info, 0, n)["observations"]
    available = set(list_ensembles(layout))
    samples, owner, lrv, mask, _ = _per_sample(arrays)
    (out / "networks").mkdir(exist_ok=True)
    ids: dict[str, list[str]] = {}
    spread = 0.0

    def entry(key: tuple[str, str, str] | None, target: np.ndarray, role: str) -> dict[str, Any]:
        nonlocal spread
        members: list[str] = []
        mean = np.zeros(n)
        if key is not None:
            record = storage.read_json(layout.ensemble(*key))
            ids[role] = list(record["members"])
            outs = []
            for nid in record["members"]:
                exported = load_export(layout.network_file(nid, "export.npz"))
                rel = f"networks/{nid}.npz"
                np.savez(out / rel, **{k: v for k, v in exported.items()})
                outs.append(ref_forward(exported, x)[:, 0])
                members.append(rel)
            mean = np.mean(outs, axis=0)
        diff = target[:n] - mean
        offset = float(np.median(diff))
        spread = max(spread, float(np.abs(diff - offset).max()) if n else 0.0)
        return {"offset": offset, "members": members}

    log_ratio = []
    for b, name in enumerate(arrays.benchmarks):
        key = (BENCHMARK_RATIO, name, NOMINAL) if (BENCHMARK_RATIO, name, NOMINAL) in available else None
        log_ratio.append({"column": name, **entry(key, np.asarray(arrays.log_ratio)[:, b], f"column/{name}")})
    log_ratio_var = []
    ref = cfg.sampling_benchmark
    for k, nuisance in enumerate(arrays.nuisance):
        for j, direction in enumerate(("up", "down")):
            variation = f"{nuisance}_{direction}"
            method = next((m for m in (BENCHMARK_RATIO, *cfg.training.methods) if (m, ref, variation) in available),
                          None)
            for s, sample in enumerate(samples):
                if not mask[k, s]:
                    continue
                key = (method, ref, variation) if method else None
                log_ratio_var.append({"nuisance": nuisance, "direction": direction, "sample": sample,
                                      **entry(key, lrv[:, k, j, s], f"variation/{variation}/{sample}")})
    if spread > OFFSET_TOLERANCE:
        raise InputError(f"export-likelihood: the learned arrays are not offset + the mean of the ensemble members' "
                         f"outputs (spread {spread:.3g} > {OFFSET_TOLERANCE}): the arrays and networks of run "
                         f"{layout.root} do not belong together; rerun `sbi-core likelihood`")
    return {"observables": list(cfg.observable_names), "log_ratio": log_ratio, "log_ratio_var": log_ratio_var,
            "offset_spread": spread}, ids


def _describe(layout: Any, cfg: Any, plan: Any, info: Any, arrays: Any, norm: Any, out: Path) -> dict[str, Any]:
    """Write the arrays and networks into `out` and return the description (files not yet listed)."""
    from sbi_core import __version__

    (out / "arrays").mkdir(parents=True, exist_ok=True)
    n_data = _save_arrays(out / "arrays" / "data.npz", arrays)
    datasets: dict[str, Any] = {"data": {"file": "arrays/data.npz", "n_events": n_data,
                                         "description": f"the fitted dataset ({info.kind}, {info.n_events} events)"},
                                "normalization": None}
    if norm is not None:
        datasets["normalization"] = {"file": "arrays/normalization.npz",
                                     "n_events": _save_arrays(out / "arrays" / "normalization.npz", norm),
                                     "description": "the run's events at their MC weights at the reference (pb): "
                                                    "sigma(theta, nu) = sum_j weight_j rate_j"}
    networks, ids = _networks(layout, cfg, info, arrays, out)
    names = list(arrays.parameters) + list(arrays.nuisance)
    observables = [{"name": o.name, "unit": o.unit, **({"description": o.description}
                                                        if getattr(o, "description", None) else {})}
                   for o in cfg.observables]
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "contract_version": int(getattr(arrays, "format_version", 0) or (2 if getattr(arrays, "samples", None) else 1)),
        "name": cfg.name, "description": cfg.description or "",
        **_model_fields(cfg, arrays),
        "luminosity": float(info.luminosity), "normalization": info.normalization,
        "observables": observables, "cuts": [c.model_dump(mode="json") for c in cfg.cuts],
        "datasets": datasets, "networks": networks, "fit": _fit_fields(layout, cfg, names),
        "provenance": {"generator": f"airflow-nsbi {__version__}",
                       "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                       "run": layout.root, "config_hash": plan.config_hash, "source": cfg.inference.source,
                       "dataset": {k: v for k, v in info.to_json().items() if k not in ("xsec", "xsec_var")},
                       "networks": ids, "config": json.loads(json.dumps(cfg.model_dump(mode="json")))},
        "files": {},
    }


def _validate(desc: dict[str, Any]) -> None:
    import jsonschema

    try:
        jsonschema.validate(desc, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ValueError(f"export-likelihood built an invalid description at {where}: {exc.message}") from None


def _publish(tmp: Path, to: str) -> None:
    """The archive, then the directory's files, its description last."""
    with storage.atomic_write(to + ARCHIVE_SUFFIX) as archive, tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp, arcname=Path(to.rstrip("/")).name)
    files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != DESCRIPTION)
    for path in [*files, tmp / DESCRIPTION]:
        with storage.atomic_write(storage.join(to, *path.relative_to(tmp).parts)) as dst:
            shutil.copyfile(path, dst)


def export_likelihood(run_uri: str, to: str | None = None) -> dict[str, Any]:
    """Write the run's likelihood artefact to `to` (default RUN/export/likelihood) and `to`.tar.gz."""
    import time

    from sbi_core.inference.datasets import DatasetInfo
    from sbi_core.inference.steps import load_arrays
    from sbi_core.runs import load_run

    t0 = time.perf_counter()
    layout, cfg, plan = load_run(run_uri)
    info = DatasetInfo.load(layout, cfg.inference.dataset.kind)
    arrays, norm = load_arrays(layout, cfg, info)
    to = storage.normalize(to) if to else storage.join(layout.root, "export", "likelihood")
    with tempfile.TemporaryDirectory(prefix="sbi-export-") as tmpdir:
        tmp = Path(tmpdir) / "likelihood"
        tmp.mkdir()
        desc = _describe(layout, cfg, plan, info, arrays, norm, tmp)
        (tmp / "schema.json").write_text(json.dumps(schema(), indent=1))
        desc["files"] = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        _validate(desc)
        (tmp / DESCRIPTION).write_text(json.dumps(desc, indent=1))
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        _publish(tmp, to)
    return {"step": "export-likelihood", "run": layout.root, "artefact": to, "archive": to + ARCHIVE_SUFFIX,
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "source": cfg.inference.source,
            "n_events": int(arrays.n_events), "n_normalization": 0 if norm is None else int(norm.n_events),
            "networks": sum(len(v) for v in desc["provenance"]["networks"].values()), "bytes": size,
            "seconds": round(time.perf_counter() - t0, 3)}
