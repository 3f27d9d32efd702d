"""Likelihood files at ATLAS scale (10^7 events, 100 nuisance parameters) for `python -m bench fit --full`.

The model is `sbi_core.inference.synthetic`'s (2 POIs, 6 benchmarks, per-event shape nuisances), written
chunk by chunk so no (n, K, 2) array is ever held whole: an Asimov dataset at theta = (0.3, -0.2)
(`data.h5`) and the same events at their MC weights (`mc.h5`), the normalisation sample of the `mc`
normalisation. The per-event arrays are stored in float32 (what the fit reads); the MC file holds only its
weights and reaches the data file's log ratios through HDF5 external links, so the 8 GB of variations are
on disk once. Files are kept in `SBI_BENCH_DATA` (default `~/.cache/sbi-core/bench`) and made once per
(n, K, seed); a `.done` marker is written last, so an interrupted run is made again.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

TRUTH = (0.3, -0.2)
LUMINOSITY = 200.0
SIGMA_REF = 5.0
SIZE = 0.05
ROWS = 1 << 17


def data_dir() -> Path:
    return Path(os.environ.get("SBI_BENCH_DATA") or Path.home() / ".cache" / "sbi-core" / "bench")


def _header(f: h5py.File, n: int, k: int, basis: np.ndarray, powers: np.ndarray, matrix: np.ndarray) -> None:
    from sbi_core.data.likelihood_arrays import CONSTRAINTS, FORMAT_NAME, FORMAT_VERSION, V1_SAMPLE

    def ascii_names(names: list[str]) -> np.ndarray:
        return np.array([s.encode() for s in names], dtype="S256")

    a = f.attrs
    a["format"], a["format_version"], a["source"], a["reference"] = FORMAT_NAME, FORMAT_VERSION, "exact", "b0"
    a["config_hash"], a["n_events"] = "bench-scale", n
    f["parameters/names"] = ascii_names(["theta0", "theta1"])
    f["benchmarks/names"] = ascii_names([f"b{b}" for b in range(basis.shape[0])])
    f["benchmarks/values"] = basis
    f["morphing/components"] = powers.astype(np.int64)
    f["morphing/morphing_matrix"] = matrix
    f["nuisance/names"] = ascii_names([f"nu{j}" for j in range(k)])
    f["nuisance/kinds"] = ascii_names(["shape_weight"] * k)
    f["nuisance/sizes"] = np.full(k, SIZE)
    # version 2: one sample ("total") that every benchmark belongs to and every nuisance acts on
    f["samples/names"] = ascii_names([V1_SAMPLE])
    f["benchmarks/sample"] = np.zeros(basis.shape[0], dtype=np.int64)
    f["nuisance/samples"] = np.ones((k, 1), dtype=np.uint8)
    f["nuisance/aux"] = np.zeros(k)
    f["nuisance/constraint"] = ascii_names([CONSTRAINTS[0]] * k)


def write_scale_files(n: int, k: int, seed: int = 0, directory: Path | None = None) -> tuple[Path, Path]:
    """(data.h5, mc.h5) for n events and k nuisances, made unless already there."""
    from sbi_core.inference.synthetic import _basis
    from sbi_core.physics.morphing import Morphing, quadratic_powers

    out = (directory or data_dir()) / f"scale-n{n}-k{k}-s{seed}"
    data, mc, done = out / "data.h5", out / "mc.h5", out / ".done"
    if done.exists():
        return data, mc
    out.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    basis = _basis(2, rng)
    powers = quadratic_powers(2)
    matrix = Morphing(powers, basis).matrix
    asym = rng.uniform(-0.2, 0.2, k)
    t = np.asarray(TRUTH)
    n_b = basis.shape[0]
    xsec, xsec_var = np.zeros(n_b), np.zeros((k, 2, n_b))
    with h5py.File(data, "w") as fd, h5py.File(mc, "w") as fm:
        for f in (fd, fm):
            _header(f, n, k, basis, powers, matrix)
        rows = min(ROWS, n)  # h5py refuses a chunk longer than its dataset
        lr_ds = fd.create_dataset("events/log_ratio", (n, n_b), dtype=np.float32, chunks=(rows, n_b))
        var_ds = fd.create_dataset("events/log_ratio_var", (n, k, 2, 1), dtype=np.float32,
                                   chunks=(max(rows // 8, 1), k, 2, 1))
        w_ds = fd.create_dataset("events/weight", (n,), dtype=np.float64, chunks=(rows,))
        fm["events/weight"] = np.full(n, SIGMA_REF / n)
        for start in range(0, n, ROWS):
            m = min(ROWS, n - start)
            c = rng.normal(0.0, 0.4, (m, 2))
            amp2 = (1.0 + c @ basis.T) ** 2
            u = rng.standard_normal((m, k), dtype=np.float32) * np.float32(SIZE)
            lrv = np.stack([u, -u * (1.0 + asym.astype(np.float32))], axis=2)
            lr_ds[start : start + m] = np.log(amp2)
            var_ds[start : start + m] = lrv[..., None]
            w_ds[start : start + m] = LUMINOSITY * SIGMA_REF / n * (1.0 + c @ t) ** 2
            xsec += amp2.sum(axis=0)
            xsec_var += np.einsum("ib,ikj->kjb", amp2, np.exp(lrv.astype(np.float64)))
        for f in (fd, fm):
            f["xsec/benchmarks"] = SIGMA_REF * xsec / n
            f["xsec/variations"] = SIGMA_REF * xsec_var / n
        for name in ("log_ratio", "log_ratio_var"):
            fm[f"events/{name}"] = h5py.ExternalLink(str(data.resolve()), f"/events/{name}")
    done.write_text("ok\n")
    return data, mc
