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


# ---------------------------------------------------------------------------------------------- import-madminer
OBSERVABLE_NAMES = ["x0", "x1", "x2", "x3", "x4 smeared"]  # one not an identifier: the import renames it


@pytest.fixture(scope="module")
def madminer_written(small_run, ours, tmp_path_factory) -> str:
    """A MadMiner event file made by MadMiner's own writer from the small run's events: the setup by
    `MadMiner.save` (our benchmarks as its basis), two event files by `save_nuisance_setup` + `save_events` (the
    halves, 'sampled' at sm and at p2, each weighted to the full cross section as MadMiner's readers do), with a
    one-sided normalisation (MadMiner's norm: +1 benchmark only) and a two-sided shape nuisance (the energy scale's
    weight columns), then `combine_and_shuffle`."""
    from madminer.core import MadMiner
    from madminer.models import NuisanceParameter, Observable
    from madminer.sampling import combine_and_shuffle
    from madminer.utils.interfaces.hdf5 import save_events, save_nuisance_setup

    cfg, x, w, _ = ours
    out = tmp_path_factory.mktemp("madminer")
    miner = MadMiner()
    for k, p in enumerate(cfg.parameters):
        miner.add_parameter(lha_block="dim6", lha_id=k + 1, parameter_name=p.name, morphing_max_power=2,
                            parameter_range=tuple(p.range))
    for b in cfg.benchmarks:
        miner.add_benchmark(dict(b.values), b.name)
    miner.set_morphing(include_existing_benchmarks=True, max_overall_power=2)
    miner.save(str(out / "setup.h5"))
    n_b, half = len(cfg.benchmarks), x.shape[0] // 2
    nuisance = {"lumi_nuisance_param_0": NuisanceParameter("lumi_nuisance_param_0", "lumi", "lumi_up", None),
                "escale": NuisanceParameter("escale", "escale", "escale_up", "escale_down")}
    parts = []
    for k, (rows, sampled) in enumerate(((slice(0, half), 0), (slice(half, None), 2))):
        weights = {b: 2.0 * w[rows, i] for i, b in enumerate(cfg.benchmark_names)}
        weights.update({"lumi_up": 2.0 * 1.05 * w[rows, 0], "escale_up": 2.0 * w[rows, n_b + 2],
                        "escale_down": 2.0 * w[rows, n_b + 3]})
        name = str(out / f"part{k}.h5")
        save_nuisance_setup(name, True, ["lumi_up", "escale_up", "escale_down"], nuisance, "sm",
                            copy_from_path=str(out / "setup.h5"))
        n = x[rows].shape[0]
        save_events(name, True, {o: Observable(o, f"x[{j}]") for j, o in enumerate(OBSERVABLE_NAMES)},
                    {o: x[rows, j] for j, o in enumerate(OBSERVABLE_NAMES)}, weights, [sampled] * n,
                    [n if i == sampled else 0 for i in range(n_b)], 0)
        parts.append(name)
    np.random.seed(9)  # combine_and_shuffle shuffles with numpy's global generator
    combine_and_shuffle(parts, str(out / "events.h5"))
    return str(out / "events.h5")


@pytest.fixture(scope="module")
def imported(madminer_written, tmp_path_factory) -> tuple[str, dict]:
    from sbi_core import steps

    run = str(tmp_path_factory.mktemp("imported") / "run")
    sets = ["training.members=1", "training.samples.train=1000", "training.samples.test=300",
            "training.optimizer.epochs=2", "training.network.hidden=[8]", "training.methods=[benchmark_ratio]"]
    return run, steps.import_madminer(madminer_written, run, sets)


def _sorted_rows(x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    order = np.lexsort(x.T[::-1])
    return [x[order], *(o[order] for o in others)]


def test_import_carries_the_madminer_file(imported, madminer_written, ours):
    """Parameters, basis, nuisance parameters (the one-sided norm becomes our normalisation, its -1 column MadMiner's
    exp(-a); the shape one keeps its columns), renamed observables, and every event with the weights MadMiner's
    readers give it (the factor n_b / n of its sampling benchmark undoes the per-file normalisation)."""
    from sbi_core import steps

    run, summary = imported
    cfg0, x0, w0, _ = ours
    layout, cfg, _ = steps.load_run(run)
    assert cfg.simulator.name == "madminer" and cfg.sampling_benchmark == "sm"
    assert cfg.benchmark_matrix() == cfg0.benchmark_matrix() and cfg.parameter_names == cfg0.parameter_names
    assert [(n.name, str(n.kind)) for n in cfg.nuisance] == [("lumi_nuisance_param_0", "normalization"),
                                                              ("escale", "shape_weight")]
    assert cfg.nuisance[0].size == pytest.approx(0.05, rel=1e-12)
    assert cfg.observable_names[-1] == "x4_smeared" and summary["renamed"] == {"x4_smeared": "x4 smeared"}
    assert [p.true_value for p in cfg.parameters] == [0.0, 0.0]  # the reference benchmark's values
    assert summary["n_events"] == x0.shape[0] and summary["dropped_nonfinite"] == 0 and not summary["skipped"]
    with h5py.File(layout.events, "r") as f:
        x, w, z = f[OBSERVATIONS][()], f[WEIGHTS][()], f["samples/latent"][()]
    n_b = len(cfg.benchmarks)
    xs, ws, zs = _sorted_rows(x, w, z)
    xs0, ws0 = _sorted_rows(x0, w0)
    np.testing.assert_array_equal(xs, xs0)
    np.testing.assert_array_equal(ws[:, :n_b], ws0[:, :n_b])  # 2 w x 1/2: exact
    np.testing.assert_allclose(ws[:, n_b: n_b + 2], ws0[:, [0, 0]] * [1.05, 1 / 1.05], rtol=1e-12)
    np.testing.assert_allclose(ws[:, n_b + 2:], ws0[:, n_b + 2:], rtol=1e-12)
    assert set(np.unique(zs[:, 0])) == {0.0, 2.0}  # the MadMiner sampling ids, kept as the latent column
    again = steps.import_madminer(madminer_written, run, [
        "training.members=1", "training.samples.train=1000", "training.samples.test=300",
        "training.optimizer.epochs=2", "training.network.hidden=[8]", "training.methods=[benchmark_ratio]"])
    assert again["skipped"] and again["config_hash"] == summary["config_hash"]


def test_imported_run_opens_in_madminer_again(imported):
    """The imported run's events file is a MadMiner file again: same observables' MadMiner definitions, and
    MadMiner's cross sections at nu = 0 and at the nuisance points equal our sums."""
    from madminer.sampling import SampleAugmenter

    run, _ = imported
    sa = SampleAugmenter(f"{run}/events.h5")
    assert [o.val_expression for o in sa.observables.values()] == [f"x[{j}]" for j in range(5)]
    with h5py.File(f"{run}/events.h5", "r") as f:
        w = f[WEIGHTS][()]
    np.testing.assert_allclose(sa.xsecs()[0], w.sum(axis=0), rtol=1e-12)


def test_imported_run_goes_through_sample_train_and_fit(imported):
    """The pipeline continues from the import: benchmark_ratio samples (the shape nuisance's variation sets too),
    training, ensembles, pseudo-data at the reference, learned likelihood arrays and a valid fit."""
    from sbi_core.inference import steps as inference
    from sbi_core.ml import samples
    from sbi_core.ml.ensemble import build_ensembles
    from sbi_core.ml.train_step import train

    run, summary = imported
    sampled = samples.sample(run, "benchmark_ratio")
    assert "sm/escale_up" in sampled["files"] and "sm/lumi_nuisance_param_0_up" not in sampled["files"]
    assert train(run, sampled["networks"])["networks"] == sampled["networks"]
    build_ensembles(run)
    data = inference.dataset(run)
    inference.likelihood(run, [int(b) for b in data["likelihood_batches"]])
    inference.likelihood_join(run)
    fit = inference.fit(run)
    assert fit["valid"] and set(fit["values"]) == {"cW", "cHW", "lumi_nuisance_param_0", "escale"}
    assert all(abs(fit["values"][p]) < 3 * fit["errors"][p] for p in ("cW", "cHW"))  # pseudo-data at the SM


def _madminer_copy(src: str, dst, edit) -> str:
    import shutil

    shutil.copyfile(src, dst)
    with h5py.File(dst, "a") as f:
        edit(f)
    return str(dst)


@pytest.mark.parametrize(("edit", "group"), [
    (lambda f: f.__delitem__("samples"), "samples/observations: missing"),
    (lambda f: f.__delitem__("morphing"), "morphing: missing"),
    (lambda f: f["samples/weights"].__setitem__((3, 1), np.nan), "samples/weights: event 3"),
    (lambda f: f["morphing/morphing_matrix"].__setitem__((0, 0), 7.0), "morphing/morphing_matrix"),
    (lambda f: f["benchmarks/is_reference"].__setitem__(0, 0), "benchmarks/is_reference"),
    (lambda f: f["nuisance_parameters/benchmark_positive"].__setitem__(1, b"None"),
     "nuisance_parameters/benchmark_positive"),
    (lambda f: f["parameters/val_ranges"].__setitem__(0, [1.0, -1.0]), "parameters/val_ranges"),
])
def test_bad_or_partial_madminer_files_are_refused_naming_the_group(madminer_written, tmp_path, edit, group):
    from sbi_core import steps
    from sbi_core.errors import InputError

    bad = _madminer_copy(madminer_written, tmp_path / "bad.h5", edit)
    with pytest.raises(InputError, match=group.replace("(", r"\(")):
        steps.import_madminer(bad, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing written


def test_import_cli_exit_2_on_a_file_that_is_not_hdf5(cli, tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an HDF5 file")
    res = cli("import-madminer", "--file", str(junk), "--run", str(tmp_path / "run"))
    assert res.returncode == 2 and "not a readable HDF5 file" in res.stderr and res.stdout == ""
    from sbi_core import steps
    from sbi_core.errors import InputError

    with pytest.raises(InputError, match="not found"):
        steps.import_madminer(str(tmp_path / "nowhere.h5"), str(tmp_path / "run"))


def test_import_set_may_change_the_settings_not_the_events(madminer_written, tmp_path):
    from sbi_core import steps
    from sbi_core.errors import InputError

    run = str(tmp_path / "run")
    for bad in ("generation.events=10", "cuts=[{observable: x0, min: 0.0}]", "benchmarks[1].values.cW=0.5"):
        with pytest.raises(InputError, match="may not change"):
            steps.import_madminer(madminer_written, run, [bad])
    summary = steps.import_madminer(madminer_written, run, ["parameters[0].true_value=0.5", "inference.luminosity=50"])
    _, cfg, _ = steps.load_run(run)
    assert cfg.parameters[0].true_value == 0.5 and cfg.inference.luminosity == 50 and summary["n_events"] == 6000
