"""drell_yan_eft's neural importance sampler (MadNIS flow) against the vegas sampler and the quadrature: the same
cross section within the Monte Carlo errors, the same distributions after unweighting, the conditional flow at
points it was not trained at, and the sampler file's refusals (corrupt, another run's) through the CLI.

Small flows, few steps: these tests check correctness, not efficiency (`python -m bench sampler` measures it).
Seeds are fixed; every statistical comparison states its tolerance."""

from __future__ import annotations

import copy
import math
import shutil
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from scipy import stats

from sbi_core import steps
from sbi_core.analysis import validate_analysis
from sbi_core.errors import ConfigError, InputError
from sbi_core.layout import RunLayout
from sbi_core.physics.drell_yan import DrellYanSimulator
from sbi_core.physics.sampler_file import read_sampler, write_sampler
from sbi_core.physics.sampler_step import train_sampler
from sbi_core.physics.unweighting import Unweighter
from tests.physics.test_drell_yan import raw_config

# A flow of a few seconds: correctness only. The window 60-400 GeV has the Z peak and the photon tail: both
# channels matter.
FLOW = {"steps": 60, "batch_size": 512, "buffer_capacity": 5000, "vegas_iterations": 4, "vegas_evaluations": 1000,
        "layers": 2, "units": 16}
SAMPLING = {"iterations": 4, "evaluations": 5000, "max_points": 20_000, "overweight_fraction": 0.001, "safety": 1.0}
N_WEIGHTED, N_EVENTS = 100_000, 20_000


def flow_raw(**flow: Any) -> dict[str, Any]:
    raw = raw_config(observables=[{"name": "m_ll"}, {"name": "cos_theta_star"}], nuisance=[])
    raw["simulator"]["options"].update(sampler="flow", sampling={**SAMPLING, "flow": {**FLOW, **flow}})
    return raw


def _configure(tmp_path, name: str, raw: dict[str, Any], sampling_benchmark: str = "sm") -> str:
    cfg = copy.deepcopy(raw)
    cfg["generation"] = {"events": 1200, "shards": 2, "seed": 7, "sampling_benchmark": sampling_benchmark}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = str(tmp_path / name)
    assert steps.configure(str(path), run)["samplers"] == ["flow"]
    return run


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory) -> str:
    """A configured run with sampler: flow whose sampler was trained by the step."""
    run = _configure(tmp_path_factory.mktemp("flowrun"), "run", flow_raw())
    summary = train_sampler(run, "flow")
    assert summary["trained"] and summary["uri"] == RunLayout(run).sampler and summary["sha256"]
    assert summary["efficiency"] > 0 and summary["efficiency_vegas"] > 0
    assert "analytic toy" in summary["parton_densities"]
    return run


@pytest.fixture(scope="module")
def flow_sim(flow_run) -> DrellYanSimulator:
    """A simulator drawing from the run's sampler file, as a generate shard does."""
    sim = DrellYanSimulator(validate_analysis(flow_raw()))
    uri = RunLayout(flow_run).sampler
    sim.load_sampler(read_sampler(uri, config_hash=None, kind="flow"), uri)
    return sim


@pytest.fixture(scope="module")
def vegas_sim() -> DrellYanSimulator:
    raw = flow_raw()
    raw["simulator"]["options"]["sampler"] = "vegas"
    return DrellYanSimulator(validate_analysis(raw))


def weighted_integral(sampler: Any, seed: int) -> tuple[float, float]:
    _, w = sampler.proposal.draw(N_WEIGHTED, np.random.default_rng(seed))
    return float(w.mean()), float(w.std() / math.sqrt(w.size))


def test_flow_and_vegas_give_the_same_cross_section(flow_sim, vegas_sim):
    # Weighted estimates of sigma(theta_s) from independent streams: equal within 4 combined standard errors,
    # and each within 4 of its own error of the quadrature (the exact value); the flow's weights vary less.
    exact = flow_sim.cross_section(flow_sim.sampling_theta)
    flow, flow_err = weighted_integral(flow_sim._sampler(), 1)
    vegas, vegas_err = weighted_integral(vegas_sim._sampler(), 2)
    assert abs(flow - vegas) < 4 * math.hypot(flow_err, vegas_err), (flow, flow_err, vegas, vegas_err)
    assert abs(flow - exact) < 4 * flow_err and abs(vegas - exact) < 4 * vegas_err, (flow, vegas, exact)
    assert flow_sim._sampler().stats.relative_variance < vegas_sim._sampler().stats.relative_variance
    # the events' mean weight is the cross section too (overweight factors included), 4 standard errors
    ev = flow_sim.simulate(N_EVENTS, np.random.default_rng(3))
    w = ev.weights[:, 0]
    assert abs(w.mean() - exact) < 4 * exact / math.sqrt(N_EVENTS) + 4 * w.std() / math.sqrt(N_EVENTS)


def test_unweighted_flow_events_follow_the_vegas_distributions(flow_sim, vegas_sim):
    # Two-sample Kolmogorov-Smirnov tests on the reconstructed m_ll and cos theta* of 20k unweighted events from
    # each sampler: p > 0.001 each (a wrong Jacobian or channel weight shifts the Z peak or the asymmetry; at 20k
    # events KS sees a 1.5% shift of the distribution function).
    a = flow_sim.simulate(N_EVENTS, np.random.default_rng(11)).observations
    b = vegas_sim.simulate(N_EVENTS, np.random.default_rng(12)).observations
    for col, name in enumerate(("m_ll", "cos_theta_star")):
        x, y = a[:, col], b[:, col]
        p = stats.ks_2samp(x[np.isfinite(x)], y[np.isfinite(y)]).pvalue
        assert p > 1e-3, (name, p)


def test_the_flow_learns_the_channel_weights_and_keeps_overweights_exact(flow_sim):
    sampler = flow_sim._sampler()
    assert isinstance(sampler, Unweighter)
    meta = flow_sim._sampler_meta
    assert meta["channels"] == ["photon", "z"] and len(meta["point"]["fractions"]) == 2
    assert min(meta["point"]["fractions"]) > 0.05  # both channels carry part of the 60-400 GeV cross section
    # the quantile rule leaves about eps of the cross section above w_max, and those events are kept and counted
    assert sampler.stats.overweight_excess == pytest.approx(0.001, rel=1e-6)
    assert 0 < sampler.stats.overweight_rate < 0.1
    _, factors = sampler.sample(5000, np.random.default_rng(4))
    assert np.all(factors >= 1.0) and np.any(factors > 1.0)
    assert flow_sim.provenance()["parton_densities"].startswith("analytic toy densities")


def test_a_conditional_flow_samples_points_it_was_not_trained_at(tmp_path):
    # One flow across the ranges (run A); run B at another sampling benchmark reuses A's file without training;
    # at B's point and at a point off every benchmark the weighted cross section equals the quadrature within
    # 4 standard errors.
    from sbi_core.physics import neural_sampling as ns

    a = _configure(tmp_path, "a", flow_raw(conditional=True))
    assert train_sampler(a)["trained"]
    b = _configure(tmp_path, "b", flow_raw(conditional=True, reuse=RunLayout(a).sampler), sampling_benchmark="p2")
    summary = train_sampler(b)
    assert not summary["trained"] and summary["training"]["reused_from"] == RunLayout(a).sampler
    art = read_sampler(RunLayout(b).sampler, config_hash=None)
    assert art.meta["conditional"] and art.meta["theta_low"] == [-0.5, -0.5]
    sim = DrellYanSimulator(validate_analysis(flow_raw()))
    mods = ns.flow_from_bytes(art.payload, ns.FlowArchitecture.from_json(art.meta["architecture"]))
    space = sim._flow_setup().phase_space(art.meta)
    for theta in (art.meta["point"]["theta_s"], [-0.44, 0.13]):
        t = np.array(theta)
        exact = sim.cross_section(t)
        cond = space.condition_of(t)
        frac = ns.channel_fractions(mods, space, cond, 2000, seed=5)
        _, w = ns.FlowProposal(mods, space, cond, frac, scale=exact).draw(N_WEIGHTED, np.random.default_rng(6))
        assert abs(w.mean() - exact) < 4 * w.std() / math.sqrt(w.size), (theta, w.mean(), exact)


def test_flow_options_are_checked_with_the_field_named():
    bad = flow_raw(conditional=True)
    bad["benchmarks"][0]["values"]["c_LL"] = 0.7  # sampling benchmark outside c_LL's range [-0.5, 0.5]
    bad["benchmarks"][1]["values"]["c_LL"] = 0.2
    with pytest.raises(ConfigError) as exc:
        validate_analysis(bad)
    assert "simulator.options.sampling.flow.conditional" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        validate_analysis(flow_raw(reuse="/somewhere/proposal.bin"))
    assert "simulator.options.sampling.flow.reuse" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        validate_analysis(flow_raw(channels=["z", "z"]))
    assert "simulator.options.sampling.flow.channels" in str(exc.value)


# ---------------------------------------------------------------------------------------------- the step and file
def _samples(path: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f["samples"][k][...] for k in f["samples"]}


def test_shards_draw_from_the_file_reproducibly_and_a_rerun_keeps_it(flow_run):
    layout = RunLayout(flow_run)
    before = open(layout.sampler, "rb").read()
    again = train_sampler(flow_run)
    assert again["kept"] and not again["trained"] and open(layout.sampler, "rb").read() == before
    with pytest.raises(InputError, match="--sampler vegas"):
        train_sampler(flow_run, "vegas")
    summary = steps.generate(flow_run, [0, 1])
    assert summary["sampler"] == "flow" and summary["unweighting_efficiency"] > 0
    first = _samples(layout.shard(1))
    shutil.rmtree(RunLayout(flow_run).root + "/shards")
    steps.generate(flow_run, [1])  # the same shard again, alone: the same events bit for bit
    for k, v in _samples(layout.shard(1)).items():
        np.testing.assert_array_equal(v, first[k])


def test_a_run_without_a_trained_sampler_has_nothing_to_train(small_run):
    summary = train_sampler(str(small_run))  # the benchmark simulator
    assert summary["sampler"] is None and not summary["trained"] and summary["uri"] is None


def test_a_corrupt_sampler_file_is_refused_with_exit_2_naming_it(flow_run, tmp_path, cli):
    run = tmp_path / "copy"
    shutil.copytree(flow_run, run)
    shutil.rmtree(run / "shards", ignore_errors=True)
    sampler = RunLayout(str(run)).sampler
    data = bytearray(open(sampler, "rb").read())
    data[-100] ^= 0x01  # one bit of the weights
    open(sampler, "wb").write(bytes(data))
    res = cli("generate", "--run", str(run), "--shard", "0")
    assert res.returncode == 2, res.stderr[-2000:]
    assert sampler in res.stderr and "checksum" in res.stderr
    assert not (run / "shards" / "shard-00000.h5").exists()


def test_a_sampler_file_of_another_config_is_refused(flow_run, tmp_path):
    # Another run (another seed: another config hash) with this run's file copied in: refused, naming the file;
    # its own file with the max weight edited in the meta: refused by the checksum.
    raw = flow_raw()
    raw["simulator"]["options"]["sampling"]["seed"] = 99
    other = _configure(tmp_path, "other2", raw)
    shutil.copy(RunLayout(flow_run).sampler, _mkparent(RunLayout(other).sampler))
    with pytest.raises(InputError, match="was trained for config hash") as exc:
        steps.generate(other, [0])
    assert RunLayout(other).sampler in str(exc.value)
    art = read_sampler(RunLayout(flow_run).sampler, config_hash=None)
    edited = tmp_path / "edited.bin"
    write_sampler(str(edited), art, config_hash=str(art.config_hash))
    text = edited.read_bytes().replace(b'"w_max": ', b'"w_max": 1', 1)
    edited.write_bytes(text)
    with pytest.raises(InputError, match="checksum"):
        read_sampler(str(edited), config_hash=art.config_hash)


def _mkparent(path: str) -> str:
    import os

    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path
