"""`sbi-core sample`: contract, joint ratio and score against the benchmark's exact ones, unweighted moments
against the exact moments, per-variation sets, reproducibility, chunk invariance, disjoint splits, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest

from sbi_core import steps
from sbi_core.config import load_config
from sbi_core.data.format import LATENT, OBSERVATIONS, WEIGHTS
from sbi_core.data.training_sets import SPLITS, read_training_set
from sbi_core.layout import RunLayout
from sbi_core.ml import samples
from sbi_core.ml.joint import joint_log_ratio, joint_score
from sbi_core.ml.plan import training_plan
from sbi_core.physics.registry import make_simulator
from tests.conftest import BENCHMARK_CONFIG

SMALL_SAMPLES = ["training.samples.train=1500", "training.samples.test=500", "training.samples.n_thetas=20"]


def derived(small_run: Path, tmp_path: Path, name: str, *sets: str) -> str:
    run = str(tmp_path / name)
    steps.derive(str(small_run), run, [*SMALL_SAMPLES, *sets])
    return run


def events_of(run: str) -> dict[str, np.ndarray]:
    layout, _, plan = steps.load_run(run)
    with h5py.File(steps.run_events(layout, plan), "r") as f:
        return {"x": f[OBSERVATIONS][()], "w": f[WEIGHTS][()], "z": f[LATENT][()]}


def read(run: str, method: str, head: str, variation: str, split: str):
    return read_training_set(RunLayout(run).training_set(method, head, variation, split))


@pytest.fixture(scope="module")
def sampled(small_run, tmp_path_factory) -> str:
    """A run derived from small_run, sampled for alices (prior theta0) and benchmark_ratio."""
    run = derived(small_run, tmp_path_factory.mktemp("sampled"), "run")
    for method in ("alices", "benchmark_ratio"):
        samples.sample(run, method)
    return run


def test_contract_shapes_and_summary(sampled, small_run, tmp_path):
    run = derived(small_run, tmp_path, "again")
    summary = samples.sample(run, "benchmark_ratio")
    cfg = load_config(RunLayout(run).config)
    assert summary["networks"] == training_plan(cfg)["networks"]["benchmark_ratio"]
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (1200, 300, 500)
    assert summary["epochs"] == cfg.training.optimizer.epochs  # what the fan-out plan weighs a network by
    assert set(summary["files"]) == {f"p{i}/nominal" for i in range(1, 6)} | {"sm/energy_scale_up",
                                                                                "sm/energy_scale_down"}
    ts = read(sampled, "alices", "theta", "nominal", "train")
    assert ts.x.shape == (1200, 5) and ts.theta0.shape == ts.theta1.shape == ts.t_xz.shape == (1200, 2)
    assert ts.y.shape == ts.log_r_xz.shape == ts.event.shape == (1200,)
    assert ts.observables == tuple(cfg.observable_names) and ts.parameters == ("cW", "cHW")
    assert abs(ts.y.mean() - 0.5) < 0.01 and ts.has_joint_ratio and ts.has_joint_score
    y0, y1 = np.unique(ts.theta0[ts.y == 0], axis=0), np.unique(ts.theta0[ts.y == 1], axis=0)
    assert len(y0) == 20 and np.array_equal(y0, y1)  # n_thetas prior points, each in both halves (shared)
    lo, hi = ts.theta0.min(axis=0), ts.theta0.max(axis=0)
    assert np.all(lo >= -1) and np.all(hi <= 1) and np.all(hi - lo > 1.0)
    assert np.all(ts.theta1 == 0.0)  # the reference (sm)
    br = read(sampled, "benchmark_ratio", "p2", "nominal", "val")
    np.testing.assert_array_equal(br.theta0, np.tile(np.float32([0.31, 0.95]), (300, 1)))
    var = read(sampled, "alices", "sm", "energy_scale_up", "test")
    assert not var.has_joint_ratio and np.isnan(var.log_r_xz).all() and np.isfinite(var.t_xz).all()
    assert np.all(var.theta0 == 0.0) and np.all(var.theta1 == 0.0)


def test_independent_pairing_draws_other_points_for_the_theta1_half(small_run, tmp_path):
    """MadMiner's sample_train_ratio: the y = 1 half takes its own n_thetas prior points."""
    run = derived(small_run, tmp_path, "independent", "training.samples.pairing=independent")
    samples.sample(run, "alices")
    ts = read(run, "alices", "theta", "nominal", "train")
    y0, y1 = np.unique(ts.theta0[ts.y == 0], axis=0), np.unique(ts.theta0[ts.y == 1], axis=0)
    assert len(y0) == len(y1) == 20 and not (set(map(tuple, y0)) & set(map(tuple, y1)))
    assert abs(ts.y.mean() - 0.5) < 0.01 and np.all(ts.theta1 == 0.0)
    _, cfg, _ = steps.load_run(run)
    y1_rows = ts.y == 1
    t64 = np.array([_theta64(run, "alices", "theta", t) for t in ts.theta0[y1_rows][:5]])
    np.testing.assert_array_equal(t64.astype(np.float32), ts.theta0[y1_rows][:5])  # the stream's second draw


def _exact_pieces(run: str):
    layout, cfg, _ = steps.load_run(run)
    sim = make_simulator(cfg)
    ev = events_of(run)
    totals = ev["w"][:, : len(cfg.benchmarks)].sum(axis=0)  # fiducial totals the sampler normalises with
    morph = sim.morphing

    def sigma_fid(t):
        return float(morph.basis_coefficients(t) @ totals)

    def grad_sigma_fid(t):
        return morph.basis_gradient(t).T @ totals

    return cfg, sim, ev, sigma_fid, grad_sigma_fid


@pytest.mark.parametrize(("method", "head"), [("benchmark_ratio", "p3"), ("alices", "theta")])
def test_joint_ratio_and_score_match_the_exact_ones(sampled, method, head):
    """log r(x,z|t0,t1) and t(x,z|t0) from weights equal the simulator's closed forms (normalised after cuts
    by the file's fiducial cross sections instead of the total ones), per event, to 1e-6."""
    cfg, sim, ev, sigma_fid, grad_sigma_fid = _exact_pieces(sampled)
    ts = read(sampled, method, head, "nominal", "train")
    x, z, w = ev["x"][ts.event], ev["z"][ts.event], ev["w"][ts.event]
    exact_r, exact_t, ours_r, ours_t = [], [], [], []
    t1 = np.zeros(2)
    thetas = np.unique(ts.theta0, axis=0)
    for t in thetas[:6]:
        rows = np.all(ts.theta0 == t, axis=1)
        # the sampler works in float64 from the drawn theta; float32 in the file is its rounding: recover it
        t64 = _theta64(sampled, method, head, t)
        norm = np.log(sim.cross_section(t64) / sigma_fid(t64)) - np.log(sim.cross_section(t1) / sigma_fid(t1))
        exact_r.append(sim.joint_log_likelihood(x[rows], z[rows], t64)
                       - sim.joint_log_likelihood(x[rows], z[rows], t1) + norm)
        exact_t.append(sim.joint_score(x[rows], z[rows], t64) + sim.cross_section_gradient(t64) / sim.cross_section(t64)
                       - grad_sigma_fid(t64) / sigma_fid(t64))
        # the float64 computation the sampler does, on the same events
        alpha0 = np.tile(sim.morphing.basis_coefficients(t64), (rows.sum(), 1))
        if method == "benchmark_ratio":
            alpha0 = np.eye(6)[[cfg.benchmark_names.index(head)] * int(rows.sum())]
        alpha1 = np.eye(6)[[0] * int(rows.sum())]
        wb = w[rows, :6]
        totals = ev["w"][:, :6].sum(axis=0)
        ours_r.append(joint_log_ratio(wb, alpha0, alpha0 @ totals, alpha1, alpha1 @ totals))
        grad = np.tile(sim.morphing.basis_gradient(t64), (int(rows.sum()), 1, 1))
        ours_t.append(joint_score(wb, alpha0, grad, totals))
        np.testing.assert_allclose(ts.log_r_xz[rows], exact_r[-1], rtol=4e-7, atol=2e-6)  # float32 storage
        np.testing.assert_allclose(ts.t_xz[rows], exact_t[-1], rtol=4e-7, atol=2e-6)
    exact_r, exact_t = np.concatenate(exact_r), np.concatenate(exact_t)
    np.testing.assert_allclose(np.concatenate(ours_r), exact_r, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(ours_t), exact_t, rtol=0, atol=1e-6)
    assert np.std(exact_r) > 0.05 and np.std(exact_t) > 0.05  # not a degenerate comparison


def _theta64(run: str, method: str, head: str, t32: np.ndarray) -> np.ndarray:
    """The float64 theta0 the sampler drew whose float32 rounding is t32 (benchmarks: the benchmark itself)."""
    _, cfg, _ = steps.load_run(run)
    if method == "benchmark_ratio":
        return np.array([cfg.benchmarks[cfg.benchmark_names.index(head)].values[p] for p in cfg.parameter_names])
    spec = samples.SampleSpec(method, head, "nominal")
    rng = samples.set_rng(cfg.training.seed, spec, "train")
    thetas = -1.0 + 2.0 * rng.random((2 * cfg.training.samples.n_thetas, 2))  # the y = 0 points, then y = 1's
    match = thetas[np.all(thetas.astype(np.float32) == t32, axis=1)]
    assert len(match) == 1
    return match[0]


def test_weight_type_variation_reweights_with_its_column(sampled):
    """The shape_weight path (reweighting by the nuisance's weight column), run on the benchmark's energy scale
    column, which holds the exact ratio p(x,z|nu=+1)/p(x,z|0): joint ratio = the exact one (fiducial norm)."""
    cfg, sim, ev, _, _ = _exact_pieces(sampled)
    model = samples.EventModel(cfg, samples._header(steps.run_events(*steps.load_run(sampled)[::2])))
    v = dataclasses.replace(model.variation("energy_scale_up"), moves_observables=False)
    w = ev["w"][:300]
    factor = model.factor(v, w)
    totals_var = (ev["w"][:, :6] * model.factor(v, ev["w"])[:, None]).sum(axis=0)
    totals = ev["w"][:, :6].sum(axis=0)
    alpha = np.eye(6)[[0] * 300]
    ours = joint_log_ratio(w[:, :6], alpha, alpha @ totals_var, alpha, alpha @ totals, factor)
    nu = np.array([0.0, 1.0])
    exact = (sim.joint_log_likelihood(ev["x"][:300], ev["z"][:300], np.zeros(2), nu)
             - sim.joint_log_likelihood(ev["x"][:300], ev["z"][:300], np.zeros(2))
             - np.log(totals_var[0] / totals[0]))
    np.testing.assert_allclose(ours, exact, rtol=0, atol=1e-6)
    assert np.std(exact) > 1e-3


def test_splits_are_disjoint_by_event_across_sets_and_methods(sampled):
    used = {s: set() for s in SPLITS}
    for method, heads in (("alices", [("theta", "nominal"), ("sm", "energy_scale_up")]),
                          ("benchmark_ratio", [("p1", "nominal"), ("p5", "nominal"), ("sm", "energy_scale_down")])):
        for head, variation in heads:
            for split in SPLITS:
                used[split] |= set(read(sampled, method, head, variation, split).event.tolist())
    assert not used["train"] & used["test"] and not used["val"] & used["test"] and not used["train"] & used["val"]
    assert all(len(v) > 100 for v in used.values())


def test_reproducible_by_seed_and_independent_of_chunk_rows(sampled, small_run, tmp_path):
    """Same seed, any chunk size -> the same bytes; another seed -> other draws."""
    a = derived(small_run, tmp_path, "chunked", "training.samples.chunk_rows=700")
    b = derived(small_run, tmp_path, "reseeded", "training.seed=1")
    samples.sample(a, "alices")
    samples.sample(b, "alices")
    layout0, layout_a = RunLayout(sampled), RunLayout(a)
    for head, variation in (("theta", "nominal"), ("sm", "energy_scale_up")):
        for split in SPLITS:
            same = Path(layout0.training_set("alices", head, variation, split)).read_bytes()
            assert Path(layout_a.training_set("alices", head, variation, split)).read_bytes() == same
            other = read(b, "alices", head, variation, split)
            assert not np.array_equal(other.event, read(sampled, "alices", head, variation, split).event)


def test_rerun_overwrites_with_identical_files(sampled):
    path = Path(RunLayout(sampled).training_set("alices", "theta", "nominal", "val"))
    before, manifest = path.read_bytes(), Path(RunLayout(sampled).samples_manifest("alices")).read_text()
    samples.sample(sampled, "alices")
    assert path.read_bytes() == before
    assert Path(RunLayout(sampled).samples_manifest("alices")).read_text() == manifest


# ------------------------------------------------------------------------------- moments (a run without cuts)
@pytest.fixture(scope="module")
def uncut(tmp_path_factory) -> str:
    """40k events without cuts (the exact moments are before cuts) and a 10% energy scale, sampled for alices
    with theta0 at the benchmarks."""
    run = str(tmp_path_factory.mktemp("uncut") / "run")
    steps.configure(str(BENCHMARK_CONFIG), run, [
        "generation.events=40000", "generation.shards=2", "generation.shards_per_group=2", "generation.seed=5",
        "cuts=[]", "nuisance[1].size=0.1", "training.methods=[alices]", "training.samples.theta0=benchmarks",
        "training.samples.train=30000", "training.samples.test=12000", "training.samples.chunk_rows=5000"])
    steps.generate(run, [0, 1])
    steps.combine(run, 0)
    steps.combine(run, None)
    samples.sample(run, "alices")
    return run


def _standard_errors(run: str, split: str, theta: np.ndarray, n: int, factor=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the unweighted draws' distribution over the split's events, and the standard error of the mean of
    n draws: resampling (var/n) plus the finite weighted pool (sum p_i^2 (x_i - m)^2)."""
    _, cfg, _ = steps.load_run(run)
    ev = events_of(run)
    sim = make_simulator(cfg)
    keep = samples.event_split(cfg, np.arange(len(ev["w"]))) == SPLITS.index(split)
    p = ev["w"][keep, :6] @ sim.morphing.basis_coefficients(theta)
    x = ev["x"][keep] if factor is None else factor(ev["x"][keep])
    p = p / p.sum()
    m = p @ x
    var = p @ (x - m) ** 2
    return m, np.sqrt(var / n + (p**2) @ (x - m) ** 2)


def test_unweighted_moments_match_the_exact_ones(uncut):
    _, cfg, _ = steps.load_run(uncut)
    sim = make_simulator(cfg)
    ts = read(uncut, "alices", "theta", "nominal", "train")
    far = 0.0
    for b, bench in enumerate(cfg.benchmarks):
        theta = np.array([bench.values[p] for p in cfg.parameter_names])
        rows = (ts.y == 0) & np.all(ts.theta0 == theta.astype(np.float32), axis=1)
        assert rows.sum() == 2000  # 24000 train rows / 6 benchmarks, half at theta0
        _, se = _standard_errors(uncut, "train", theta, int(rows.sum()))
        mean, cov = sim.observation_moments(theta)
        pull = (ts.x[rows].mean(axis=0) - mean) / se
        assert np.all(np.abs(pull) < 4.0), (bench.name, pull)
        np.testing.assert_allclose(np.var(ts.x[rows], axis=0), np.diag(cov), rtol=0.15)
        if b:
            sm_mean, _ = sim.observation_moments(np.zeros(2))
            far = max(far, float(np.max(np.abs(ts.x[rows].mean(axis=0) - sm_mean) / se)))
    assert far > 8.0  # the test can tell the benchmarks apart
    y1 = ts.y == 1  # y = 1 rows are at theta1 = sm
    _, se = _standard_errors(uncut, "train", np.zeros(2), int(y1.sum()))
    assert np.all(np.abs((ts.x[y1].mean(axis=0) - sim.observation_moments(np.zeros(2))[0]) / se) < 4.0)


@pytest.mark.parametrize(("variation", "nu"), [("energy_scale_up", 1.0), ("energy_scale_down", -1.0)])
def test_variation_sets_match_the_exact_moments_at_nu(uncut, variation, nu):
    _, cfg, _ = steps.load_run(uncut)
    sim = make_simulator(cfg)
    ts = read(uncut, "alices", "sm", variation, "train")
    rows = ts.y == 0
    scale = 1.0 + 0.1 * nu
    _, se = _standard_errors(uncut, "train", np.zeros(2), int(rows.sum()), factor=lambda x: x * scale)
    mean_nu, cov_nu = sim.observation_moments(np.zeros(2), np.array([0.0, nu]))
    pull = (ts.x[rows].mean(axis=0) - mean_nu) / se
    assert np.all(np.abs(pull) < 4.0), pull
    np.testing.assert_allclose(np.var(ts.x[rows], axis=0), np.diag(cov_nu), rtol=0.1)
    nominal = sim.observation_moments(np.zeros(2))[0]
    assert np.max(np.abs(ts.x[rows].mean(axis=0) - nominal) / se) > 8.0  # nominal is rejected
    nominal_rows = ts.y == 1
    _, se0 = _standard_errors(uncut, "train", np.zeros(2), int(nominal_rows.sum()))
    assert np.all(np.abs((ts.x[nominal_rows].mean(axis=0) - nominal) / se0) < 4.0)


# ------------------------------------------------------------------------------- errors through the command line
def test_bad_method_and_unconfigured_run_exit_2(cli, sampled, tmp_path):
    res = cli("sample", "--run", sampled, "--method", "alicse")
    assert res.returncode == 2 and "alicse" in res.stderr
    res = cli("sample", "--run", sampled, "--method", "carl")
    assert res.returncode == 2 and "carl" in res.stderr and "training.methods" in res.stderr
    res = cli("sample", "--run", str(tmp_path / "nothing"), "--method", "alices")
    assert res.returncode == 2 and "not configured" in res.stderr


def test_sample_through_the_cli_prints_one_summary(cli, sampled):
    res = cli("sample", "--run", sampled, "--method", "alices")
    assert res.returncode == 0, res.stderr
    assert res.summary["step"] == "sample" and res.summary["method"] == "alices"
    assert len(res.summary["networks"]) == 9 and res.summary["n_test"] == 500


def test_configured_run_without_events_is_bad_input(tmp_path):
    from sbi_core.errors import InputError

    run = str(tmp_path / "empty")
    steps.configure(str(BENCHMARK_CONFIG), run, ["generation.events=100", "generation.shards=1"])
    with pytest.raises(InputError, match="combine --all"):
        samples.sample(run, "alices")


def test_sally_samples_at_theta_fixed_with_the_exact_score(small_run, tmp_path):
    run = derived(small_run, tmp_path, "sally", "training.methods=[sally]",
                  "training.samples.theta_fixed={cW: 0.25, cHW: -0.5}")
    summary = samples.sample(run, "sally")
    assert summary["networks"] == [f"sally-score-nominal-m{m:02d}" for m in range(3)]  # no variations
    cfg, sim, ev, sigma_fid, grad_sigma_fid = _exact_pieces(run)
    ts = read(run, "sally", "score", "nominal", "train")
    theta = np.array([0.25, -0.5])
    assert np.all(ts.theta0 == theta.astype(np.float32)) and np.all(ts.theta1 == ts.theta0)
    assert np.all(ts.y == 0) and np.all(ts.log_r_xz == 0)
    x, z = ev["x"][ts.event], ev["z"][ts.event]
    exact = (sim.joint_score(x, z, theta) + sim.cross_section_gradient(theta) / sim.cross_section(theta)
             - grad_sigma_fid(theta) / sigma_fid(theta))
    np.testing.assert_allclose(ts.t_xz, exact, rtol=4e-7, atol=2e-6)
    assert ts.attrs["xsec_theta0"] == pytest.approx(sigma_fid(theta), rel=1e-12)


def test_shared_validation_events_are_training_events(small_run, tmp_path):
    """validation_events: shared (MadMiner's split of its samples): validation rows come from the training events,
    which are then more; test events stay their own."""
    run = derived(small_run, tmp_path, "sharedval", "training.samples.validation_events=shared")
    samples.sample(run, "alices")
    sets = {s: read(run, "alices", "theta", "nominal", s) for s in SPLITS}
    train, val, test = (set(sets[s].event.tolist()) for s in SPLITS)
    assert not train & test and not val & test and train & val
    _, cfg, _ = steps.load_run(run)
    labels = samples.event_split(cfg, np.arange(6000))
    assert set(np.unique(labels)) == {0, 2} and abs(np.mean(labels == 0) - 1500 / 2000) < 0.03
    assert np.all(labels[sorted(train | val)] == 0)  # validation rows drawn from the training events
    separate = samples.event_split(steps.load_run(derived(small_run, tmp_path, "separate"))[1], np.arange(6000))
    assert abs(np.mean(separate == 0) - 1200 / 2000) < 0.03  # 1200 train, 300 val, 500 test rows asked
