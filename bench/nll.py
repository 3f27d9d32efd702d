"""nll: one NLL + gradient call (float32) vs the memory-bandwidth floor of reading the same arrays once.

Synthetic contract arrays (`sbi_core.inference.synthetic`: 2 POIs, 6 benchmarks) with N events and K shape
nuisances. Two normalisations of the expected rate:
- mc (the default): sigma(theta, nu) summed over an MC sample, here the same N events at their MC weights;
  the contract obliges one call to read the data's E (N, 6) and w, and the MC's E, w and V (N, 2K). The
  model folds a nuisance's two columns of V into one where the down log ratio is a fixed multiple of the up
  one (`sbi_core.inference.variation_pairs`; the synthetic variations are: d = -(1 + a_k) u), so a call
  reads V (N, K): the baseline stays the contract's bytes, `floor_read_s` is the floor of what it reads.
- mc_unfolded: the same with `fold_variations=False` (both columns of every pair read: what a call costs when
  the up and down variations are unrelated).
- xsec (the contract's interpolated cross sections): one call reads the data's E and w only (the per-event
  variations are summed once when the model is built).
- mc_block: the mc normalisation through `BlockNLL` (the fit at scale's model: event-major blocks, the
  normalisation sample's weights folded into one array per benchmark).
The floor is a plain reduction (`jnp.sum`, jitted, and `numpy.sum`; the faster counts) over the arrays the
contract obliges one call to read (above; float32, the model's chunk layout and padding);
`floor_all_arrays_s` also reads the contract's full float32 arrays (log_ratio, log_ratio_var (N, K, 2, 1),
weight) once, for reference. The call and its floors are timed in turn at every repeat (a shared machine's
load reaches both alike); `loadavg_1m` is the load when the row started.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from bench.common import Figure, emit, repeat


def _floor_calls(arrays: list[Any]) -> list[Callable[[], Any]]:
    """Two plain reductions over the arrays (jitted `jnp.sum`, `numpy.sum`), compiled and warmed."""
    import jax
    import jax.numpy as jnp

    total = jax.jit(lambda xs: sum(jnp.sum(x) for x in xs))
    total(arrays).block_until_ready()
    host = [np.asarray(a) for a in arrays]
    return [lambda: total(arrays).block_until_ready(), lambda: [h.sum() for h in host]]


def _floor(arrays: list[Any], repeats: int) -> float:
    """The faster reduction's median seconds."""
    return min(statistics.median(repeat(call, repeats)) for call in _floor_calls(arrays))


def _interleaved(calls: dict[str, list[Callable[[], Any]]], repeats: int) -> dict[str, list[float]]:
    """Seconds per repeat of each entry (the fastest of its calls), the entries taken in turn at every repeat, so
    a change of load on a shared machine reaches the call and its floor alike."""
    out: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fns in calls.items():
            out[name].append(min(repeat(fn, 1)[0] for fn in fns))
    return out


def _contract_arrays(read: dict[str, Any], n_common: int) -> list[Any]:
    """The arrays one call must read by the contract: those read, the sample's V unfolded to 2 columns per
    common nuisance (a float32 array of that size stands for it; values do not change a sum's speed)."""
    import jax

    out = []
    for name, a in read.items():
        if name.split(".")[0] == "mc_v":  # the model may hold the sample in parts (mc_v.0, mc_v.1, ...)
            chunks, _, rows = a.shape
            a = jax.device_put(np.ones((chunks, 2 * n_common, rows), dtype=a.dtype))  # on the device, as the model's
        out.append(a)
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    from sbi_core.inference.block_nll import BlockNLL
    from sbi_core.inference.nll import NLLModel
    from sbi_core.inference.synthetic import synthetic_arrays

    n, k = (100_000, 20) if quick else (1_000_000, 100)
    repeats = 5 if quick else 15
    data = synthetic_arrays(n, k, truth=(0.3, -0.2), seed=0)
    mc = replace(data, weight=np.full(n, 5.0 / n))
    contract = [data.log_ratio.astype(np.float32), data.log_ratio_var.astype(np.float32),
                data.weight.astype(np.float32)]
    floor_all = _floor(contract, repeats)
    del contract
    records = []
    rng = np.random.default_rng(1)
    for norm in ("mc", "mc_unfolded", "xsec", "mc_block"):
        kind = NLLModel if norm != "mc_block" else BlockNLL
        opts = {"fold_variations": False} if norm == "mc_unfolded" else {}
        model = kind.from_arrays(data, luminosity=200.0, normalization=mc if norm != "xsec" else None,
                                 dtype="float32", **opts)
        base = np.r_[0.3, -0.2, np.zeros(k)]
        points = iter(base + rng.normal(0, 1e-3, (10_000, base.size)))  # a new p every call: no cache hits
        model.value_and_grad(next(points))  # compile
        read = model.event_arrays
        contract = _contract_arrays(read, k) if norm in ("mc", "mc_unfolded") else list(read.values())
        nbytes = sum(int(a.size) * a.dtype.itemsize for a in contract)
        read_bytes = sum(int(a.size) * a.dtype.itemsize for a in read.values())
        calls = {"ours": [lambda m=model, pts=points: m.value_and_grad(next(pts))], "floor": _floor_calls(contract)}
        if read_bytes != nbytes:
            calls["floor_read"] = _floor_calls(list(read.values()))
        load = os.getloadavg()[0]
        times = _interleaved(calls, repeats)
        t_ours = times["ours"]
        floor_read = statistics.median(times.get("floor_read", times["floor"]))
        del contract, calls
        fig = Figure(name=f"nll_{norm}", sizes={"events": n, "nuisances": k, "dtype": "float32",
                                                  "normalization": "xsec" if norm == "xsec" else "mc"},
                     ours=t_ours, baseline=times["floor"], ours_label="NLL+grad s",
                     baseline_label="sum of the contract's arrays a call reads, s", target="<= 2.0",
                     extra={"MB_contract_per_call": round(nbytes / 1e6, 1), "MB_read_per_call": round(read_bytes / 1e6, 1),
                            "floor_read_s": round(floor_read, 5),
                            "ratio_to_read_floor": round(statistics.median(t_ours) / floor_read, 3),
                            "floor_all_arrays_s": round(floor_all, 5),
                            "ratio_to_all_arrays_floor": round(statistics.median(t_ours) / floor_all, 3),
                            "GB_per_s": round(nbytes / 1e9 / statistics.median(t_ours), 2),
                            "loadavg_1m": round(load, 2)})
        records.append(fig.record())
        emit(records[-1])
        del model
    return records
