"""hessian: peak memory of the Hessian by HVP row blocks vs `jax.hessian`, each in its own process.

Synthetic contract arrays (2 POIs, N events, K shape nuisances, MC normalisation over the same N events),
written to a likelihood file first; each measuring process builds the float64 `NLLModel` from the file,
resets its peak RSS (`/proc/self/clear_refs` = 5), computes the Hessian at the same point and reports
VmHWM. `peak` is the process's peak during the Hessian (model arrays included); `increment` is that peak
minus the RSS just before (the Hessian's own working memory: compilation, tangents, outputs).
Baselines: `jax.hessian` of the same chunked NLL, and of a plain JAX NLL over whole arrays (no chunks:
what a direct implementation of the formula does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import emit

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = r"""
import json, sys, time
import numpy as np

def rss_kib(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(field + ":"))

path, mc_path, method, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
from sbi_core.inference.nll import NLLModel
model = NLLModel.from_file(path, luminosity=200.0, normalization=mc_path)
k = model.n_params - model.n_pois
p = np.r_[0.3, -0.2, np.full(k, 0.05)]
model.value_and_grad(p)
if method == "plain":
    import jax, jax.numpy as jnp
    from sbi_core.data.likelihood_arrays import read_arrays
    from sbi_core.inference.interpolation import basis_functions
    d, m = read_arrays(path), read_arrays(mc_path)
    E, W, LV = jnp.asarray(np.exp(d.log_ratio)), jnp.asarray(d.weight), jnp.asarray(d.log_ratio_var.reshape(d.n_events, -1))
    ME, MW, MV = jnp.asarray(np.exp(m.log_ratio)), jnp.asarray(m.weight), jnp.asarray(m.log_ratio_var.reshape(m.n_events, -1))
    M, powers = jnp.asarray(d.morphing_matrix), [tuple(int(x) for x in r) for r in d.morphing_components]
    fns = basis_functions("polyexp")
    del d, m
    def nll(q):
        th, nu = q[:2], q[2:]
        mono = jnp.stack([jnp.prod(jnp.stack([th[j] ** e for j, e in enumerate(r)])) for r in powers])
        a = mono @ M
        fu, fd = fns(nu)
        f = jnp.stack([fu, fd], 1).reshape(-1)
        sigma = jnp.sum(MW * (ME @ a) * jnp.exp(MV @ f))
        return 200.0 * sigma - jnp.sum(W * (jnp.log(E @ a) + LV @ f)) + 0.5 * nu @ nu
    hess = jax.jit(jax.hessian(nll))
    fn = lambda: np.asarray(hess(jnp.asarray(p)))
elif method == "autodiff":
    fn = lambda: model.hessian_autodiff(p)
else:
    fn = lambda: model.hessian(p, rows)
before = rss_kib("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
t0 = time.perf_counter()
h = fn()
seconds = time.perf_counter() - t0
peak = rss_kib("VmHWM")
np.save(sys.argv[5], h)
print(json.dumps({"seconds": seconds, "rss_before_kib": before, "peak_kib": peak}))
"""


def _measure(path: Path, mc_path: Path, method: str, rows: int, out: Path) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-c", _SCRIPT, str(path), str(mc_path), method, str(rows), str(out)],
                         capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    info = json.loads(res.stdout.splitlines()[-1])
    info["hessian"] = np.load(out)
    return info


def run(quick: bool) -> list[dict[str, Any]]:
    from sbi_core.data.likelihood_arrays import write_arrays
    from sbi_core.inference.synthetic import synthetic_arrays

    n, k, rows = (100_000, 20, 4) if quick else (1_000_000, 100, 8)
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-hessian-") as tmp:
        root = Path(tmp)
        data = synthetic_arrays(n, k, truth=(0.3, -0.2), seed=0)
        write_arrays(root / "data.h5", data)
        write_arrays(root / "mc.h5", replace(data, weight=np.full(n, 5.0 / n)))
        del data
        got = {m: _measure(root / "data.h5", root / "mc.h5", m, rows, root / f"{m}.npy")
               for m in ("rows", "autodiff", "plain")}
    ours = got["rows"]
    for base in ("autodiff", "plain"):
        b = got[base]
        rec: dict[str, Any] = {"name": f"hessian_memory_vs_{base}", "sizes": {"events": n, "nuisances": k,
                                                                           "block_rows": rows, "dtype": "float64"},
                               "target": "<= 0.25"}
        if "error" in b or "error" in ours:
            rec["error"] = b.get("error") or ours.get("error")
        else:
            inc_ours = ours["peak_kib"] - ours["rss_before_kib"]
            inc_base = b["peak_kib"] - b["rss_before_kib"]
            scale = float(np.abs(b["hessian"]).max())
            rec.update({
                "ratio": round(ours["peak_kib"] / b["peak_kib"], 3),
                "increment_ratio": round(inc_ours / max(inc_base, 1), 3),
                "ours_peak_MiB": round(ours["peak_kib"] / 1024, 1), "base_peak_MiB": round(b["peak_kib"] / 1024, 1),
                "ours_increment_MiB": round(inc_ours / 1024, 1), "base_increment_MiB": round(inc_base / 1024, 1),
                "ours_s": round(ours["seconds"], 2), "base_s": round(b["seconds"], 2),
                "max_rel_difference": float(np.abs(ours["hessian"] - b["hessian"]).max() / scale),
            })
        records.append(rec)
        emit(rec)
    return records
