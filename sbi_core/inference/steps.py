"""The inference steps as plain functions: a run URI in, a small JSON-able summary out.

Order (each is one `sbi-core` subcommand, see `sbi_core.inference.commands`):
    dataset -> likelihood --batch I (mapped) -> likelihood --join -> fit -> hessian --rows A:B (mapped)
    -> assemble  (then scan / limits / toys / report: `sbi_core.inference` statistics modules)

Every output is written atomically (`storage.atomic_write`): a retried task overwrites a whole file or
nothing. A step reads only what earlier steps published and refuses (InputError naming the file) when it
is missing or belongs to another best fit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError

log = logging.getLogger(__name__)

_JOIN_ROWS = 1 << 16


def _load(run_uri: str) -> tuple[Any, Any, Any]:
    from sbi_core.runs import load_run

    return load_run(run_uri)


def _info(layout: Any, cfg: Any) -> Any:
    from sbi_core.inference.datasets import DatasetInfo

    info = DatasetInfo.load(layout, cfg.inference.dataset.kind)
    return info


# ---------------------------------------------------------------------------------------------- dataset
def dataset(run_uri: str) -> dict[str, Any]:
    """Build the configured dataset and record it; `likelihood_batches` are the mapped likelihood tasks."""
    from sbi_core.inference.datasets import build_dataset

    t0 = time.perf_counter()
    layout, cfg, plan = _load(run_uri)
    info = build_dataset(layout, cfg, plan)
    if cfg.inference.source == "sally":  # the score's binning, from the run's events, for every batch to share
        from sbi_core.inference.sally import SALLY, run_binning

        info = replace(info, extra={**info.extra, SALLY: run_binning(layout, cfg, plan).to_json()})
    storage.write_json(layout.dataset_info(info.name), info.to_json())
    return {
        "step": "dataset",
        "run": layout.root,
        "dataset": info.name,
        "kind": info.kind,
        "events": info.events,
        "n_events": info.n_events,
        "expected_events": info.extra.get("expected_events"),
        "info": layout.dataset_info(info.name),
        "likelihood_batches": info.batches,
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ---------------------------------------------------------------------------------------------- likelihood
def likelihood(run_uri: str, batches: list[int]) -> dict[str, Any]:
    """The contract's arrays of the given batches of the dataset (one part file each)."""
    from sbi_core.data.likelihood_arrays import write_arrays
    from sbi_core.inference.exact import likelihood_batch

    t0 = time.perf_counter()
    layout, cfg, _ = _load(run_uri)
    info = _info(layout, cfg)
    source = cfg.inference.source
    parts = []
    for b in batches:
        info.batch(b)  # InputError naming the batch before any work
    for b in batches:
        part, index, _, _ = info.batch(b)
        if source == "sally":  # a partial histogram of the score; `--join` sums them (sbi_core/inference/sally.py)
            from sbi_core.inference.sally import partial_histogram

            uri = layout.likelihood_part(part, source, index)
            partial_histogram(layout, cfg, info, b).write(uri)
            start, stop = info.batch(b)[2:]
            parts.append({"batch": b, "part": part, "uri": uri, "n_events": stop - start})
            continue
        arrays = likelihood_batch(layout, cfg, info, b)
        uri = layout.likelihood_part(part, source, index)
        with storage.atomic_write(uri) as tmp:
            write_arrays(tmp, arrays)
        parts.append({"batch": b, "part": part, "uri": uri, "n_events": arrays.n_events})
    return {
        "step": "likelihood",
        "run": layout.root,
        "dataset": info.name,
        "source": source,
        "batches": parts,
        "n_events": sum(p["n_events"] for p in parts),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def likelihood_join(run_uri: str) -> dict[str, Any]:
    """Join every batch's part into the dataset's likelihood file (and the normalisation sample's), streaming
    one part at a time."""
    t0 = time.perf_counter()
    layout, cfg, _ = _load(run_uri)
    info = _info(layout, cfg)
    source = cfg.inference.source
    if source == "sally":
        from sbi_core.inference.sally import join

        outputs = join(layout, cfg, info)
        return {"step": "likelihood", "run": layout.root, "join": True, "dataset": info.name, "source": source,
                "likelihood": outputs[info.name], "normalization": outputs.get("mc"), "n_events": info.n_events,
                "parts": info.n_batches, "seconds": round(time.perf_counter() - t0, 3)}
    batches: dict[str, list[int]] = {}
    for b in range(info.n_batches):
        part, index, _, _ = info.batch(b)
        batches.setdefault(part, []).append(index)
    uris = {part: [layout.likelihood_part(part, source, i) for i in idx] for part, idx in batches.items()}
    missing = [u for us in uris.values() for u in us if not storage.exists(u)]
    if missing:
        raise InputError(f"likelihood --join: {len(missing)} of {info.n_batches} parts are missing "
                         f"(first: {missing[0]}): run `sbi-core likelihood --batch I` for them")
    outputs = {}
    for part, expected in info.parts().items():
        out = layout.likelihood(part, source)
        _join(uris[part], out, expected, {"dataset": part, "events": info.events if part == info.name
                                          else str(info.mc_events), "parts": len(uris[part])})
        outputs[part] = out
    return {
        "step": "likelihood",
        "run": layout.root,
        "join": True,
        "dataset": info.name,
        "source": source,
        "likelihood": outputs[info.name],
        "normalization": outputs.get("mc"),
        "n_events": info.n_events,
        "parts": info.n_batches,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _join(uris: list[str], out: str, expected: int, meta: dict[str, Any]) -> None:
    """Stream part files of one model into `out` (atomically): one part and _JOIN_ROWS rows at a time."""
    import h5py

    from sbi_core.data.likelihood_arrays import concatenate, read_arrays, write_arrays

    headers, counts, has_std = [], [], True
    for uri in uris:
        with storage.local_copy(uri) as path:
            headers.append(read_arrays(path, where=uri, rows=slice(0, 0)))
            with h5py.File(path, "r") as f:
                counts.append(int(f["events/weight"].shape[0]))
                has_std &= "events/log_ratio_std" in f
    concatenate(headers)  # refuses parts that describe different models
    total = sum(counts)
    if total != expected:
        raise InputError(f"likelihood --join: the parts of {meta['dataset']} hold {total} events, {expected} expected")
    names = ["log_ratio", "log_ratio_var", "weight"] + (["log_ratio_std"] if has_std else [])
    shapes = {"log_ratio": (len(headers[0].benchmarks),),
              "log_ratio_var": (len(headers[0].nuisance), 2, headers[0].n_samples),
              "weight": (), "log_ratio_std": (len(headers[0].benchmarks),)}
    with storage.atomic_write(out) as tmp:
        write_arrays(tmp, replace(headers[0], log_ratio_std=None, meta=meta))
        with h5py.File(tmp, "a") as f:
            for name in names:
                if f"events/{name}" in f:
                    del f[f"events/{name}"]
                f.create_dataset(f"events/{name}", shape=(total, *shapes[name]), dtype=np.float64,
                                 chunks=(max(1, min(_JOIN_ROWS, total)), *shapes[name]) if total else None)
            offset = 0
            for uri, n in zip(uris, counts, strict=True):
                with storage.local_copy(uri) as path, h5py.File(path, "r") as part:
                    for name in names:
                        for s in range(0, n, _JOIN_ROWS):
                            e = min(n, s + _JOIN_ROWS)
                            f[f"events/{name}"][offset + s : offset + e] = part[f"events/{name}"][s:e]
                offset += n
            f.attrs["n_events"] = total


# ---------------------------------------------------------------------------------------------- fit
def load_model(layout: Any, cfg: Any, info: Any = None) -> Any:
    """The NLL model of the run's joined likelihood arrays, with the config's inference settings."""
    import contextlib

    from sbi_core.inference.nll import NLLModel


    info = info or _info(layout, cfg)
    inf = cfg.inference
    if inf.source == "learned" and inf.estimator != "benchmark_ratio":
        return parametrised_model(layout, cfg, info, *load_arrays(layout, cfg, info))
    uris = [layout.likelihood(part, inf.source) for part in info.parts()]
    for uri in uris:
        if not storage.exists(uri):
            raise InputError(f"no likelihood arrays {uri}: run `sbi-core likelihood --batch I` and `--join` first")
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(storage.local_copy(uris[0]))
        norm = stack.enter_context(storage.local_copy(uris[1])) if info.normalization == "mc" else None
        return NLLModel.from_file(path, luminosity=info.luminosity, normalization=norm,
                                  interpolation=inf.interpolation, schemes=inf.nuisance_interpolation,
                                  dtype=inf.dtype, chunk_rows=inf.chunk_rows, where=uris[0])


def load_arrays(layout: Any, cfg: Any, info: Any = None) -> tuple[Any, Any]:
    """(the dataset's LikelihoodArrays, the normalisation sample's or None) in memory: for toys and scans that
    resample or reweight events and build their own models with `model_from_arrays`."""
    from sbi_core.data.likelihood_arrays import read_arrays

    info = info or _info(layout, cfg)
    out = []
    for part in info.parts():
        uri = layout.likelihood(part, cfg.inference.source)
        if not storage.exists(uri):
            raise InputError(f"no likelihood arrays {uri}: run `sbi-core likelihood --batch I` and `--join` first")
        with storage.local_copy(uri) as path:
            out.append(read_arrays(path, where=uri))
    return out[0], (out[1] if len(out) > 1 else None)


def model_from_arrays(cfg: Any, arrays: Any, normalization: Any = None, luminosity: float | None = None) -> Any:
    """An NLLModel of in-memory arrays with the config's inference settings (interpolation, dtype, chunks)."""
    from sbi_core.inference.nll import NLLModel

    inf = cfg.inference
    return NLLModel.from_arrays(arrays, luminosity=luminosity or inf.luminosity, normalization=normalization,
                                interpolation=inf.interpolation, schemes=inf.nuisance_interpolation,
                                dtype=inf.dtype, chunk_rows=inf.chunk_rows)


def parametrised_model(layout: Any, cfg: Any, info: Any, arrays: Any, normalization: Any = None,
                       estimator: str | None = None, observations: Any = None) -> Any:
    """The NLL of a theta-parametrised estimator (`inference.estimator`, or `estimator`): its exported ensemble
    evaluated on the events' observations inside the fit, the rate from `arrays` (the likelihood step's rate
    columns and variations, or any arrays of the same events: only their weights, variations, cross sections,
    morphing and aux data are read) and, normalisation mc, the run's events. `observations`: the events' x when
    they are not the dataset's (an Asimov dataset or a toy of the run's events)."""
    from sbi_core.inference.datasets import MC_PART, read_events
    from sbi_core.inference.parametrised import ParametrisedNLL, ensemble_function
    from sbi_core.runs import configured_plan, networks_layout

    method = estimator or cfg.inference.estimator
    networks = networks_layout(layout, configured_plan(layout.root)[1])  # a derived run reads its source's
    x = read_events(info, 0, info.n_events)["observations"] if observations is None else observations
    fn, params = ensemble_function(networks.root, method, x.shape[1], len(cfg.parameter_names))
    norm = None
    if normalization is not None:
        norm = (read_events(info, 0, info.n_mc, MC_PART)["observations"], normalization)
    inf = cfg.inference
    table = None
    if norm is not None and inf.normalization_table:
        table = _normalization_table(networks.root, method, cfg, str(info.mc_events), fn, params, *norm)
    return ParametrisedNLL(fn, params, x, arrays, luminosity=info.luminosity, normalization=norm,
                           interpolation=inf.interpolation, schemes=inf.nuisance_interpolation,
                           chunk_rows=inf.chunk_rows, table=table, where=f"{method} on {info.events}")


_TABLES: dict[tuple[Any, ...], Any] = {}


def _normalization_table(root: str, method: str, cfg: Any, mc_events: str, fn: Any, params: Any, x: Any,
                         mc: Any) -> Any:
    """The `inference.normalization_table` series of a network's log Z over the parameters' ranges, built once
    per process (the observed fit, every toy, scan point and limit of a task share it)."""
    from sbi_core.inference.normalization_table import build_table

    lo, hi = zip(*(p.range for p in cfg.parameters), strict=True)
    key = (root, method, mc_events, cfg.inference.normalization_table, lo, hi)
    if key not in _TABLES:
        _TABLES[key] = build_table(fn, params, x, mc.weight, lo, hi, degree=cfg.inference.normalization_table,
                                   chunk_rows=cfg.inference.chunk_rows,
                                   where=f"inference.normalization_table ({method})")
    return _TABLES[key]


def _table_record(model: Any) -> dict[str, Any]:
    """fit.json's record of a normalisation table (degree, box, largest log Z error), when the model has one."""
    table = getattr(model, "table", None)
    if table is None:
        return {}
    return {"normalization_table": {"degree": int(table.coefficients.shape[0] - 1), "low": table.lo.tolist(),
                                    "high": table.hi.tolist(), "max_log_z_error": table.max_error,
                                    "evaluations": table.evaluations}}


def fit_start(cfg: Any) -> dict[str, float]:
    """Where the global fit starts: the POIs at the reference (sampling) benchmark, nuisances at 0."""
    ref = cfg.benchmark_names.index(cfg.sampling_benchmark)
    return dict(zip(cfg.parameter_names, cfg.benchmark_matrix()[ref], strict=True))


def hessian_blocks(n_params: int, rows: int) -> list[str]:
    from sbi_core.inference.hessian import block_ranges

    return [f"{a}:{b}" for a, b in block_ranges(n_params, rows)]


def fit(run_uri: str) -> dict[str, Any]:
    """The global fit of the dataset: writes RUN/inference/fit.json; `hessian_blocks` are the mapped rows."""
    from sbi_core.inference.compare import learned_vs_exact
    from sbi_core.inference.fit import minimize

    t0 = time.perf_counter()
    layout, cfg, _ = _load(run_uri)
    info = _info(layout, cfg)
    inf = cfg.inference
    model = load_model(layout, cfg, info)
    t_load = time.perf_counter() - t0
    res = minimize(model, start=fit_start(cfg), fixed=inf.fix, bounds=inf.bounds)
    if not res.valid:
        log.warning("fit is not valid: %s", res.message)
    blocks = hessian_blocks(model.n_params, inf.hessian_block_rows)
    t_fit = time.perf_counter() - t0 - t_load
    compared = learned_vs_exact(layout, cfg, info, res)
    record = {
        **res.to_json(),
        "n_pois": model.n_pois,
        "dataset": info.name,
        "source": inf.source,
        "n_events": model.n_events,
        "luminosity": info.luminosity,
        "interpolation": inf.interpolation,
        "normalization": info.normalization,
        "n_normalization_events": model.n_normalization,
        "dtype": inf.dtype,
        "truth": None if info.theta is None else dict(zip(cfg.parameter_names, info.theta, strict=True)),
        "expected_events_at_fit": model.expected_events(res.x),
        "floored_events_at_fit": model.n_floored(res.x),
        **_table_record(model),
        "hessian_blocks": blocks,
        "seconds": {"load": round(t_load, 3), "fit": round(t_fit, 3),
                    "compare": round(time.perf_counter() - t0 - t_load - t_fit, 3)},
    }
    if compared is not None:
        record["learned_vs_exact"] = compared
    boot = None
    if inf.bootstrap:  # every member's likelihood fitted alone: the method uncertainty (bootstrap.py)
        from sbi_core.inference.bootstrap import fit_members

        boot = fit_members(run_uri)
        record["bootstrap_members"] = boot["n_members"]
        record["seconds"]["bootstrap"] = boot["seconds"]
    storage.write_json(layout.fit, record)
    return {
        "step": "fit",
        "run": layout.root,
        "fit": layout.fit,
        "valid": res.valid,
        "message": res.message,
        "values": res.values,
        "errors": res.errors,
        "nll": res.nll,
        "edm": res.edm,
        "calls": res.calls,
        "hessian_blocks": blocks,
        **({"learned_vs_exact": compared} if compared is not None else {}),
        **({"bootstrap_members": boot["n_members"]} if boot else {}),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _best_fit(layout: Any) -> dict[str, Any]:
    if not storage.exists(layout.fit):
        raise InputError(f"no fit result {layout.fit}: run `sbi-core fit` first")
    return storage.read_json(layout.fit)


# ---------------------------------------------------------------------------------------------- Hessian
def hessian(run_uri: str, rows: str) -> dict[str, Any]:
    """Rows A:B of the NLL Hessian at the best fit (one vmapped block of HVPs), to RUN/inference/hessian/."""
    from sbi_core.inference.hessian import hessian_rows, parse_rows

    t0 = time.perf_counter()
    layout, cfg, _ = _load(run_uri)
    best = _best_fit(layout)
    names = best["names"]
    a, b = parse_rows(rows, len(names))
    model = load_model(layout, cfg)
    if model.names != names:
        raise InputError(f"{layout.fit} fits parameters {names}, the likelihood arrays have {model.names}: refit")
    x = np.array([best["values"][n] for n in names])
    block = hessian_rows(model, x, a, b, pad_to=min(cfg.inference.hessian_block_rows, len(names)))
    uri = layout.hessian_block(a, b)
    with storage.atomic_write(uri) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, rows=block, start=a, stop=b, x=x, names=np.array(names))
    return {"step": "hessian", "run": layout.root, "rows": f"{a}:{b}", "block": uri,
            "seconds": round(time.perf_counter() - t0, 3)}


def assemble(run_uri: str) -> dict[str, Any]:
    """Join the Hessian blocks: covariance, correlation, impacts (hessian.json/.npz); scan and toy blocks."""
    from sbi_core.inference.blocks import scan_blocks, toy_blocks
    from sbi_core.inference.hessian import block_ranges, summarize

    t0 = time.perf_counter()
    layout, cfg, _ = _load(run_uri)
    best = _best_fit(layout)
    names = best["names"]
    x = np.array([best["values"][n] for n in names])
    ranges = block_ranges(len(names), cfg.inference.hessian_block_rows)
    missing = [f"{a}:{b}" for a, b in ranges if not storage.exists(layout.hessian_block(a, b))]
    if missing:
        raise InputError(f"assemble: Hessian blocks {missing} are missing: run `sbi-core hessian --rows A:B` for them")
    rows = []
    for a, b in ranges:
        uri = layout.hessian_block(a, b)
        with storage.local_copy(uri) as path, np.load(path) as z:
            if not np.array_equal(z["x"], x) or [str(s) for s in z["names"]] != names:
                raise InputError(f"Hessian block {uri} was computed at another best fit: rerun `sbi-core hessian "
                                 f"--rows {a}:{b}`")
            rows.append(z["rows"])
    out = summarize(np.concatenate(rows), names, best["fixed"], int(best["n_pois"]))
    with storage.atomic_write(layout.hessian_arrays) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, hessian=out["hessian"], covariance=out["covariance"], correlation=out["correlation"],
                     names=np.array(names), x=x)
    record = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}
    record["values"] = best["values"]
    record["arrays"] = layout.hessian_arrays
    storage.write_json(layout.hessian, record)
    return {
        "step": "assemble",
        "run": layout.root,
        "hessian": layout.hessian,
        "errors": out["errors"],
        "asymmetry": out["asymmetry"],
        "min_eigenvalue": out["min_eigenvalue"],
        "scan_blocks": scan_blocks(cfg),
        "toy_blocks": toy_blocks(cfg),
        "seconds": round(time.perf_counter() - t0, 3),
    }
