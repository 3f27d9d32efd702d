"""Events at a new sampling point (`generation.sampling_point`, `sbi-core resample`) and training sets added to a
run's (`sbi-core merge-samples`): what an active-learning round does before it retrains."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_core import steps, storage
from sbi_core.data.format import read_samples
from sbi_core.data.training_sets import read_training_set
from sbi_core.errors import ConfigError, InputError
from sbi_core.layout import RunLayout
from sbi_core.ml.merge import merge_samples
from sbi_core.ml.samples import sample
from sbi_core.physics.registry import make_simulator
from tests.conftest import BENCHMARK_CONFIG

POINT = {"cW": 0.8, "cHW": 0.8}
TRAINING = ["training.methods=[alices]", "training.members=1", "training.variations=false", "training.device=cpu",
            "training.samples.test=300", "training.samples.n_thetas=8", "training.network.hidden=[16]",
            "training.optimizer.epochs=2", "training.optimizer.patience=0"]


def _combined(run: str, summary: dict) -> str:
    steps.generate(run, summary["shards"])
    for g in range(summary["n_groups"]):
        steps.combine(run, g)
    steps.combine(run, None)
    return run


def test_events_at_a_sampling_point_follow_the_exact_density(tmp_path):
    """Known answer (no cuts): the events' mean x is the exact mean of p(x|point) within 4 standard errors, and
    the summed weights at every basis benchmark estimate its exact cross section (unbiased importance weights)."""
    run = str(tmp_path / "run")
    summary = steps.configure(str(BENCHMARK_CONFIG), run, [
        "generation.events=6000", "generation.shards=2", "cuts=[]", "nuisance=[]",
        "generation.sampling_point={cW: 0.8, cHW: 0.8}"])
    _combined(run, summary)
    cfg = steps.load_run(run)[1]
    sim = make_simulator(cfg)
    ev = read_samples(RunLayout(run).events)
    x, w = ev["samples/observations"], ev["samples/weights"]
    mean, cov = sim.observation_moments(np.array([0.8, 0.8]))
    assert np.all(np.abs(x.mean(axis=0) - mean) < 4 * np.sqrt(np.diag(cov) / len(x))), (x.mean(axis=0), mean)
    for b, theta in enumerate(np.asarray(cfg.benchmark_matrix())):
        err = w[:, b].std() * np.sqrt(len(w))  # the weights are sigma-estimates / n: their sum's standard error
        assert abs(w[:, b].sum() - sim.cross_section(theta)) < 4 * err, (cfg.benchmark_names[b], w[:, b].sum())


@pytest.mark.parametrize(("sets", "field"), [
    (["generation.sampling_point={cW: 0.8}"], "generation.sampling_point"),
    (["generation.sampling_point={cW: 0.8, cHW: 3.0}"], "generation.sampling_point.cHW"),
])
def test_bad_sampling_points_are_refused_naming_the_field(tmp_path, sets, field):
    with pytest.raises(ConfigError) as info:
        steps.configure(str(BENCHMARK_CONFIG), str(tmp_path / "r"), ["generation.events=100", "generation.shards=1",
                                                                     *sets])
    assert field in [p for p, _ in info.value.issues]


def test_a_simulator_reading_files_cannot_sample_at_a_point(tmp_path):
    from tests.conftest import REPO

    with pytest.raises(ConfigError) as info:
        steps.configure(str(REPO / "configs" / "lhe_example.yaml"), str(tmp_path / "r"),
                        ["generation.sampling_point={cW: 0.1, cHW: 0.1}"])
    assert "generation.sampling_point" in [p for p, _ in info.value.issues]


@pytest.fixture(scope="module")
def rounds(small_run, tmp_path_factory):
    """The small run's ALICES samples (part 1), a run resampled at POINT with its own samples (part 2), and a run
    derived from the small run whose sets are their union."""
    root = tmp_path_factory.mktemp("al")
    base = str(root / "base")
    steps.derive(str(small_run), base, TRAINING + ["training.samples.train=1500"])
    sample(base, "alices")
    new = str(root / "new")
    summary = steps.resample(base, new, POINT, events=1500, overrides=["training.samples.train=500"])
    _combined(new, summary)
    sample(new, "alices")
    merged = str(root / "merged")
    steps.derive(str(small_run), merged, TRAINING + ["training.samples.train=1500"])
    return base, new, merged, summary


def test_resample_configures_the_point_and_its_samples(rounds):
    base, new, _, summary = rounds
    assert summary["step"] == "resample" and summary["point"] == POINT and summary["events"] == 1500
    cfg = steps.load_run(new)[1]
    base_cfg = steps.load_run(base)[1]
    assert cfg.generation.sampling_point == POINT and cfg.sampling_benchmark == base_cfg.sampling_benchmark
    assert cfg.benchmarks == base_cfg.benchmarks and cfg.generation.seed == steps.sampling_seed(
        base_cfg.generation.seed, POINT)
    train = read_training_set(RunLayout(new).training_set("alices", "theta", "nominal", "train"))
    assert np.allclose(train.theta0, [0.8, 0.8]) and np.allclose(train.theta1, [0.0, 0.0])


def test_merge_adds_the_new_rows_and_keeps_the_first_test_set(rounds):
    base, new, merged, _ = rounds
    summary = merge_samples(merged, "alices", [base, new])
    layout = RunLayout(merged)
    parts = [RunLayout(base), RunLayout(new)]
    for split in ("train", "val"):
        m = read_training_set(layout.training_set("alices", "theta", "nominal", split))
        a, b = (read_training_set(p.training_set("alices", "theta", "nominal", split)) for p in parts)
        assert len(m) == len(a) + len(b)
        for key in ("x", "theta0", "theta1", "y", "log_r_xz", "t_xz"):
            assert np.array_equal(getattr(m, key), np.concatenate([getattr(a, key), getattr(b, key)])), key
        assert m.config_hash == steps.load_run(merged)[2].config_hash
        assert m.attrs["rows_per_part"] == f"{len(a)},{len(b)}"
    test = read_training_set(layout.training_set("alices", "theta", "nominal", "test"))
    first = read_training_set(parts[0].training_set("alices", "theta", "nominal", "test"))
    assert np.array_equal(test.x, first.x)
    manifest = storage.read_json(layout.samples_manifest("alices"))
    assert [p["run"] for p in manifest["parts"]] == [base, new] and summary["n_train"] == manifest["rows"]["train"]
    with pytest.raises(InputError, match="cannot be one of its own parts"):
        merge_samples(merged, "alices", [merged, new])
    with pytest.raises(InputError, match="has no .*benchmark_ratio"):
        steps.derive(base, str(RunLayout(merged).root) + "-br", ["training.methods=[benchmark_ratio]"])
        merge_samples(str(RunLayout(merged).root) + "-br", "benchmark_ratio", [base])


@pytest.mark.slow
def test_drell_yan_weights_at_a_sampling_point_estimate_the_same_cross_sections(tmp_path):
    """Events drawn at a point off the basis (the corner of the ranges) and at the SM estimate the same fiducial
    cross sections at every basis benchmark, within 4 combined standard errors."""
    from tests.conftest import REPO

    sums = []
    for name, extra in (("sm", []), ("corner", ["generation.sampling_point={c_lq3: 0.2, c_eu: -0.2}"])):
        run = str(tmp_path / name)
        summary = steps.configure(str(REPO / "configs" / "drell_yan_eft.yaml"), run,
                                  ["generation.events=8000", "generation.shards=1", "generation.seed=5", *extra])
        _combined(run, summary)
        w = read_samples(RunLayout(run).events)["samples/weights"][:, :6]
        sums.append((w.sum(axis=0), w.std(axis=0) * np.sqrt(len(w))))
    (a, ea), (b, eb) = sums
    assert np.all(np.abs(a - b) < 4 * np.hypot(ea, eb) + 1e-12), (a, b)
