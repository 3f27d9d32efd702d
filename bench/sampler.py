"""sampler: drell_yan_eft's phase-space samplers side by side at the shipped config (configs/drell_yan_eft.yaml).

For each sampler (flat map, vegas, the MadNIS flow at the sampling benchmark, the theta-conditioned flow at three
points it was not trained at, beside a flow trained at each of those points alone): the unweighting efficiency
(accepted / proposed) under both w_max rules, the quantile rule of MadGraph and MadNIS (overweight_fraction
1e-3, safety 1: the headline) and the largest weight found (safety 1.1, what vegas used before), the relative
variance of the weights var(w)/mean(w)^2, the wall time to set up or train each, and unweighted phase-space points
per second (`Unweighter.sample`, before the detector). One process, torch on one thread (as a shard runs).
Goals: flow / vegas efficiency >= 1.5 at the sampling benchmark; conditional / per-point >= 0.8 at every point.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Figure, emit

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "drell_yan_eft.yaml"
#: Points inside the shipped ranges ([-0.2, 0.2] for both coefficients), none of them a benchmark.
NEW_POINTS = ([0.12, -0.15], [-0.17, 0.08], [0.05, 0.18])
#: The conditional flow a second time with 4x the batch and 2x the steps (trained once for every point): each
#: step's loss averages over theta, and a larger batch covers the range better (quick: 2x the quick steps).
LARGE = {"batch_size": 4096, "steps_factor": 2}
QUANTILE, MAX_RULE = (1.0, 1e-3), (1.1, 0.0)  # (safety, overweight_fraction)


def _setup(quick: bool) -> tuple[Any, Any, dict[str, Any]]:
    """The shipped simulator with sampler flow (quick: fewer steps and points), and the sizes used."""
    from sbi_core.config import load_config
    from sbi_core.physics.drell_yan import DrellYanSimulator

    sizes = {"max_points": 50_000, "steps": 100, "events": 20_000} if quick else \
        {"max_points": 200_000, "steps": None, "events": 200_000}
    sets = ["simulator.options.sampler=flow", f"simulator.options.sampling.max_points={sizes['max_points']}",
            f"simulator.options.sampling.safety={QUANTILE[0]}",
            f"simulator.options.sampling.overweight_fraction={QUANTILE[1]}"]
    if sizes["steps"]:
        sets.append(f"simulator.options.sampling.flow.steps={sizes['steps']}")
    sim = DrellYanSimulator(load_config(str(CONFIG), sets))
    sizes["steps"] = sim.options.sampling.flow.steps
    return sim, sim._flow_setup(), sizes


def _figures(proposal: Any, n: int, seed: int) -> dict[str, float]:
    """Efficiency under both rules, relative variance and overweights of n weights of the proposal."""
    from sbi_core.physics.unweighting import MaxWeightRule, max_weight, weight_stats

    _, w = proposal.draw(n, np.random.default_rng([seed, 7]))
    q = weight_stats(w, max_weight(w, MaxWeightRule(*QUANTILE)))
    m = weight_stats(w, max_weight(w, MaxWeightRule(*MAX_RULE)))
    return {"efficiency": round(q.efficiency, 4), "efficiency_max_rule": round(m.efficiency, 4),
            "relative_variance": round(q.relative_variance, 5), "overweight_rate": round(q.overweight_rate, 5)}


def _rate(proposal: Any, n: int, seed: int) -> float:
    """Unweighted points per second at the quantile rule (w_max searched on a separate stream, not timed)."""
    from sbi_core.physics.unweighting import MaxWeightRule, Unweighter

    unw = Unweighter.find(proposal, seed=seed, max_points=min(n, 50_000), rule=MaxWeightRule(*QUANTILE))
    unw.sample(1000, np.random.default_rng(0))  # warm
    t0 = time.perf_counter()
    unw.sample(n, np.random.default_rng(1))
    return n / (time.perf_counter() - t0)


def _flow_at(setup: Any, theta: list[float] | np.ndarray, conditional_art: Any = None) -> tuple[Any, float]:
    """(flow proposal at theta, training seconds): trained at theta alone, or the conditional flow's."""
    import dataclasses

    from sbi_core.physics import drell_yan_sampling as dys
    from sbi_core.physics import neural_sampling as ns

    point = dataclasses.replace(setup, theta_s=np.asarray(theta, dtype=np.float64))
    art, seconds = conditional_art, 0.0
    if art is None:
        art = dys.train_flow(point)
        seconds = float(art.meta["training"]["train_seconds"])  # VEGAS start and flow training, not the w_max search
    mods = ns.flow_from_bytes(art.payload, ns.FlowArchitecture.from_json(art.meta["architecture"]))
    space = point.phase_space(art.meta)
    cond = space.condition_of(point.theta_s)
    st = setup.opts.sampling
    frac = ns.channel_fractions(mods, space, cond, max(st.max_points // 10, 1000), st.seed)
    return ns.FlowProposal(mods, space, cond, frac, scale=point.sigma_s), seconds


def _conditional(setup: Any, update: dict[str, Any]) -> tuple[Any, Any]:
    """(setup, artifact) of the conditional flow trained across the ranges with the flow options updated."""
    import dataclasses

    from sbi_core.physics import drell_yan_sampling as dys

    flow = setup.opts.sampling.flow.model_copy(update={"conditional": True, **update})
    opts = setup.opts.model_copy(update={"sampling": setup.opts.sampling.model_copy(update={"flow": flow})})
    cond_setup = dataclasses.replace(setup, opts=opts)
    return cond_setup, dys.train_flow(cond_setup)


def run(quick: bool) -> list[dict[str, Any]]:

    from sbi_core.physics import drell_yan_sampling as dys
    from sbi_core.physics.adaptive_sampling import AdaptiveSampler, VegasProposal

    sim, setup, sizes = _setup(quick)
    n, events = sizes["max_points"], sizes["events"]
    opts = setup.opts
    box = dys.box_integrand(setup.model, setup.theta_s)
    t0 = time.perf_counter()
    vegas = AdaptiveSampler(box, dys.box_limits(opts), opts.sampling.settings())
    vegas_seconds = time.perf_counter() - t0
    import vegas as vegas_lib

    flat = VegasProposal(box, vegas_lib.AdaptiveMap(dys.box_limits(opts).tolist(), ninc=200))
    flow, flow_seconds = _flow_at(setup, setup.theta_s)
    rows = {"flat": _figures(flat, n, 1), "vegas": _figures(vegas.proposal, n, 1), "flow": _figures(flow, n, 1)}
    rates = {"vegas": _rate(vegas.proposal, events, 2), "flow": _rate(flow, events, 2)}
    recs = [_record_main(rows, rates, sizes, vegas_seconds, flow_seconds)]
    same = _conditional(setup, {})
    large = _conditional(setup, {"batch_size": LARGE["batch_size"], "steps": sizes["steps"] * LARGE["steps_factor"]})
    per_point = []
    for i, theta in enumerate(NEW_POINTS):
        alone, alone_seconds = _flow_at(setup, theta)
        row = {"theta": theta, "alone": _figures(alone, n, 10 + i), "alone_train_seconds": round(alone_seconds, 1)}
        for key, (cond_setup, art) in (("conditional", same), ("conditional_large", large)):
            row[key] = _figures(_flow_at(cond_setup, theta, art)[0], n, 10 + i)
        per_point.append(row)
    recs.append(_record_conditional(per_point, sizes, [float(c[1].meta["training"]["train_seconds"])
                                                       for c in (same, large)]))
    for rec in recs:
        emit(rec)
    return recs


def _record_main(rows: dict[str, dict[str, float]], rates: dict[str, float], sizes: dict[str, Any],
                 vegas_seconds: float, flow_seconds: float) -> dict[str, Any]:
    fig = Figure(name="sampler_flow_vs_vegas", sizes={"config": CONFIG.name, "max_points": sizes["max_points"],
                                                       "flow_steps": sizes["steps"], "theta": "sm"},
                 ours=[rows["flow"]["efficiency"]], baseline=[rows["vegas"]["efficiency"]],
                 ours_label="unweighting efficiency (flow)", baseline_label="unweighting efficiency (vegas)",
                 target=">= 1.5",
                 extra={"flat": rows["flat"], "vegas": rows["vegas"], "flow": rows["flow"],
                        "vegas_setup_seconds": round(vegas_seconds, 2), "flow_train_seconds": round(flow_seconds, 1),
                        "unweighted_points_per_s_vegas": round(rates["vegas"]),
                        "unweighted_points_per_s_flow": round(rates["flow"]),
                        "w_max_rule": "quantile, overweight_fraction 1e-3 (efficiency_max_rule: 1.1 x the largest)"})
    return fig.record()


def _record_conditional(per_point: list[dict[str, Any]], sizes: dict[str, Any],
                        seconds: list[float]) -> dict[str, Any]:
    def ratios(key: str) -> list[float]:
        return [p[key]["efficiency"] / p["alone"]["efficiency"] for p in per_point]

    fig = Figure(name="sampler_conditional_vs_per_point", sizes={"config": CONFIG.name, "points": len(per_point),
                                                                  "flow_steps": sizes["steps"]},
                 ours=[p["conditional"]["efficiency"] for p in per_point],
                 baseline=[p["alone"]["efficiency"] for p in per_point],
                 ours_label="efficiency (conditional flow, same settings)",
                 baseline_label="efficiency (flow trained there)", target=">= 0.8 at every point",
                 extra={"min_ratio_same_settings": round(min(ratios("conditional")), 3),
                        "min_ratio_large": round(min(ratios("conditional_large")), 3),
                        "large": f"batch {LARGE['batch_size']}, steps x {LARGE['steps_factor']}",
                        "points": per_point, "conditional_train_seconds": round(seconds[0], 1),
                        "conditional_large_train_seconds": round(seconds[1], 1)})
    return fig.record()
