"""Our event files in MadMiner 0.9.6 (installed as a test dependency): its `SampleAugmenter` opens them and reads
the same parameters, benchmarks, morphing, nuisance parameters, cross sections and weights; its augmented samples
carry the joint ratio and score our sampler computes for the same events; its observable expressions of our
observables give our values."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from sbi_core.config import load_config
from sbi_core.data.format import OBSERVATIONS, WEIGHTS
from sbi_core.ml.joint import MorphedWeights, joint_log_ratio, joint_score
from sbi_core.physics.morphing import Morphing


@pytest.fixture(scope="module")
def ours(small_run):
    """The small run's events and header, read with h5py."""
    cfg = load_config(str(small_run / "config.yaml"))
    with h5py.File(small_run / "events.h5", "r") as f:
        x, w = f[OBSERVATIONS][()], f[WEIGHTS][()]
        components = f["morphing/components"][()]
    morph = MorphedWeights(Morphing(components, np.asarray(cfg.benchmark_matrix(), dtype=np.float64)))
    return cfg, x, w, morph


@pytest.fixture(scope="module")
def augmenter(small_run):
    from madminer.sampling import SampleAugmenter

    return SampleAugmenter(str(small_run / "events.h5"))


def test_madminer_reads_the_header(small_run, ours, caplog):
    """Parameters, benchmarks (then the nuisance ones), reference, morphing, observables, nuisance parameters and
    the sample summary as MadMiner loads them; no 'inconsistent event numbers' warning."""
    from madminer.sampling import SampleAugmenter

    cfg, x, w, morph = ours
    with caplog.at_level(logging.INFO, logger="madminer"):
        sa = SampleAugmenter(str(small_run / "events.h5"))
    assert "Inconsistent event numbers" not in caplog.text
    assert list(sa.parameters) == cfg.parameter_names
    assert [tuple(p.val_range) for p in sa.parameters.values()] == [p.range for p in cfg.parameters]
    assert [p.max_power for p in sa.parameters.values()] == cfg.max_powers
    names = cfg.benchmark_names + [f"{n.name}_{d}" for n in cfg.nuisance for d in ("up", "down")]
    assert list(sa.benchmarks) == names and sa.reference_benchmark == cfg.sampling_benchmark
    assert sa.benchmark_nuisance_flags == [i >= len(cfg.benchmarks) for i in range(len(names))]
    assert list(sa.observables) == cfg.observable_names
    assert {k: (p.benchmark_pos, p.benchmark_neg) for k, p in sa.nuisance_parameters.items()} == {
        n.name: (f"{n.name}_up", f"{n.name}_down") for n in cfg.nuisance}
    assert sa.n_samples == x.shape[0] and list(sa.n_events_generated_per_benchmark) == [x.shape[0], 0, 0, 0, 0, 0]
    np.testing.assert_allclose(sa.morphing_matrix, morph.morphing.matrix, rtol=0, atol=0)
    theta = np.array([0.4, -0.7])
    np.testing.assert_allclose(sa.morpher.calculate_morphing_weights(theta), morph.alpha(theta[None])[0],
                               rtol=1e-10, atol=1e-12)


def test_madminer_cross_sections_and_weights_are_ours(augmenter, ours):
    """Benchmark cross sections (nuisance benchmarks too), morphed ones, those at nu = +-1 of each nuisance
    (MadMiner's exp(a nu + b nu^2) is exact at +-1: the weight column's ratio), and per-event weights at theta."""
    cfg, x, w, morph = ours
    np.testing.assert_allclose(augmenter.xsecs()[0], w.sum(axis=0), rtol=1e-12)
    thetas = [np.array([0.4, -0.7]), np.array([-0.9, 0.8])]
    n_b, n_k = len(cfg.benchmarks), len(cfg.nuisance)
    ratio = w[:, n_b:] / w[:, [0]]  # columns <k>_up, <k>_down relative to the reference (sm)
    nus, expected = [], []
    for t in thetas:
        w_t = w[:, :n_b] @ morph.alpha(t[None])[0]
        nus.append(None)
        expected.append(w_t.sum())
        for k in range(n_k):
            for j, sign in enumerate((1.0, -1.0)):
                nus.append(sign * np.eye(n_k)[k])
                expected.append((w_t * ratio[:, 2 * k + j]).sum())
    thetas_rep = [t for t in thetas for _ in range(1 + 2 * n_k)]
    got, _ = augmenter.xsecs(thetas=thetas_rep, nus=nus)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert abs(expected[1] / expected[0] - 1.05) < 1e-12  # lumi: (1 + size)^nu
    x_mm, w_mm = augmenter.weighted_events(theta=thetas[0])
    np.testing.assert_array_equal(x_mm, x)
    np.testing.assert_allclose(w_mm, w[:, :n_b] @ morph.alpha(thetas[0][None])[0], rtol=1e-10, atol=1e-15)


def test_madminer_augmented_samples_carry_our_joint_ratio_and_score(augmenter, ours):
    """sample_train_ratio (ALICES's sampler) and sample_train_local (SALLY's): every drawn x is one of our events,
    and its r(x,z|theta0, theta1) and t(x,z|theta0) equal what sbi_core.ml.joint computes for that event with the
    same fiducial totals (MadMiner's train partition: the first 60% of the events)."""
    from madminer.sampling import benchmark, morphing_point, random_morphing_points

    cfg, x, w, morph = ours
    np.random.seed(5)  # MadMiner draws with numpy's global generator
    x_s, theta0, theta1, y, r_xz, t_xz, _ = augmenter.sample_train_ratio(
        theta0=random_morphing_points(4, [("flat", -1.0, 1.0)] * 2), theta1=benchmark("sm"), n_samples=400,
        double_precision=True)
    n_b, n_par = len(cfg.benchmarks), len(cfg.parameters)
    train = w[: int(round(0.6 * x.shape[0])), :n_b]
    totals = train.sum(axis=0)
    rows = {row.tobytes(): i for i, row in enumerate(x)}
    events = np.array([rows[row.tobytes()] for row in x_s])
    assert events.max() < train.shape[0] and len(np.unique(theta0[:, :n_par], axis=0)) == 8  # 4 per half
    a0, a1 = morph.alpha(theta0[:, :n_par]), morph.alpha(theta1[:, :n_par])
    log_r = joint_log_ratio(w[events, :n_b], a0, a0 @ totals, a1, a1 @ totals)
    np.testing.assert_allclose(np.log(r_xz[:, 0]), log_r, rtol=0, atol=1e-9)
    t = joint_score(w[events, :n_b], a0, morph.alpha_gradient(theta0[:, :n_par]), totals)
    assert t_xz.shape == (len(events), n_par + len(cfg.nuisance))  # MadMiner appends the nuisance score
    np.testing.assert_allclose(t_xz[:, :n_par], t, rtol=1e-9, atol=1e-9)
    assert set(np.unique(y)) == {0.0, 1.0} and np.std(log_r) > 0.05

    theta = np.array([0.3, -0.2])
    x_l, _, t_l = augmenter.sample_train_local(theta=morphing_point(theta), n_samples=200, double_precision=True)[:3]
    events = np.array([rows[row.tobytes()] for row in x_l])
    a = np.repeat(morph.alpha(theta[None]), len(events), axis=0)
    grad = np.repeat(morph.alpha_gradient(theta[None]), len(events), axis=0)
    np.testing.assert_allclose(t_l[:, :n_par], joint_score(w[events, :n_b], a, grad, totals), rtol=1e-9, atol=1e-9)


def test_madminer_cannot_read_back_norm_systematics(tmp_path):
    """Why our files carry no `systematics/*` group: MadMiner 0.9.6 raises on loading any systematic that is not a
    scale variation (it passes None to SystematicScale.from_str). When this test fails, MadMiner reads them:
    write the group (sbi_core/data/madminer_layout.py)."""
    from madminer.utils.interfaces.hdf5 import _load_systematics, load_madminer_settings

    path = tmp_path / "norm.h5"
    with h5py.File(path, "w") as f:
        for key, value in (("names", b"lumi"), ("types", b"norm"), ("values", b"1.05"), ("scales", b"None")):
            f.create_dataset(f"systematics/{key}", data=np.array([value], dtype="S256"))
    assert _load_systematics(str(path))[3] == [None]
    with pytest.raises((ValueError, OSError)):
        load_madminer_settings(str(path), True)


def _madminer_particles(pids, p4s):
    from madminer.utils.particle import MadMinerParticle

    out = []
    for pid, (e, px, py, pz) in zip(pids, p4s, strict=True):
        p = MadMinerParticle.from_xyzt(px, py, pz, e)
        p.set_pdgid(pid)
        out.append(p)
    return out


def test_madminer_expressions_of_our_observables_give_our_values():
    """Each observable's MadMiner expression, evaluated by MadMiner's own observable code on the same particles,
    equals our value (events with two leptons, two jets and a photon; MET from the visible particles)."""
    from madminer.utils.interfaces.lhe import _get_objects

    from sbi_core.physics.observables import compute, madminer_expression
    from sbi_core.physics.particles import Particles

    rng = np.random.default_rng(7)
    names = ["pt_l1", "eta_l2", "phi_j1", "y_j2", "e_a1", "m_j1", "m_ll", "pt_ll", "y_jj", "eta_l1j1", "phi_ll",
             "e_lj", "dphi_ll", "deta_l1j2", "dy_jj", "dr_l2j1", "n_j", "n_l", "met", "met_phi", "ht", "pt_mu1"]
    pids, p4s = [], []
    for _ in range(20):
        ids = [11, -13, 21, 2, 22, 13]
        mom = []
        for pid in ids:
            pt, eta, phi, m = rng.uniform(20, 200), rng.uniform(-2.4, 2.4), rng.uniform(-np.pi, np.pi), 0.0
            m = 4.0 if abs(pid) in (2, 21) else m
            px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
            mom.append((np.sqrt(px**2 + py**2 + pz**2 + m**2), px, py, pz))
        pids.append(ids)
        p4s.append(mom)
    ours = compute(names, Particles.from_lists(pids, p4s))
    for i, (ids, mom) in enumerate(zip(pids, p4s, strict=True)):
        particles = _madminer_particles(ids, mom)
        variables = _get_objects(particles, particles)
        for j, name in enumerate(names):
            expression = madminer_expression(name)
            assert expression is not None, name
            assert float(eval(expression, variables)) == pytest.approx(ours[i, j], rel=1e-9, abs=1e-9), name
    assert madminer_expression("cos_theta_star") is None and madminer_expression("x0") is None
