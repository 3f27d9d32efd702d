"""The benchmark simulator against its own closed forms: normalisation, sampling, scores, morphing, nuisances."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from scipy import stats

from sbi_core.config import AnalysisConfig, validate_config
from sbi_core.physics.base import EventBatch, Simulator
from sbi_core.physics.benchmark import BenchmarkSimulator
from sbi_core.physics.registry import make_simulator

PARAMS = ["cW", "cHW"]
PENTAGON = [(0.0, 0.0), (1.0, 0.0), (0.31, 0.95), (-0.81, 0.59), (-0.81, -0.59), (0.31, -0.95)]
# Thetas covering the square, incl. destructive interference (cHW > 0 has a negative linear coefficient).
THETAS = [(0.0, 0.0), (1.0, -1.0), (-1.0, 0.0), (0.0, 1.0), (0.5, 0.8), (-0.7, 0.9)]


def raw_config(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "bench-test",
        "parameters": [{"name": p, "range": [-1, 1]} for p in PARAMS],
        "benchmarks": [
            {"name": "sm" if i == 0 else f"p{i}", "values": dict(zip(PARAMS, v, strict=True))}
            for i, v in enumerate(PENTAGON)
        ],
        "observables": [{"name": f"x{i}"} for i in range(5)],
        "nuisance": [
            {"name": "lumi", "kind": "normalization", "size": 0.05},
            {"name": "escale", "kind": "observable_scale", "size": 0.02},
        ],
        "simulator": {"name": "benchmark", "options": {"detector_correlation": 0.2}},
        "generation": {"events": 1000, "shards": 1},
        "output": "/nonexistent",
    }
    data.update(copy.deepcopy(over))
    return data


def config(**over: Any) -> AnalysisConfig:
    return validate_config(raw_config(**over))


@pytest.fixture(scope="module")
def sim() -> BenchmarkSimulator:
    return BenchmarkSimulator(config())


@pytest.fixture(scope="module")
def events(sim: BenchmarkSimulator) -> EventBatch:
    return sim.simulate(40_000, np.random.default_rng(7))


def test_contract(sim: BenchmarkSimulator, events: EventBatch) -> None:
    assert isinstance(sim, Simulator)
    assert isinstance(make_simulator(config()), BenchmarkSimulator)
    assert sim.provided_observables == ("x0", "x1", "x2", "x3", "x4")
    assert sim.latent_names == ["z0", "z1", "z2", "z3", "z4"]
    assert sim.morphing_powers.tolist() == [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]]
    assert events.observations.shape == (40_000, 5) and events.latent.shape == (40_000, 5)
    assert events.weights.shape == (40_000, 6) and events.nuisance_weights.shape == (40_000, 2, 2)
    assert np.all(np.isfinite(events.weights)) and np.all(events.weights >= 0)
    assert 1.0 < sim.cross_section(np.zeros(2)) < 10.0
    assert len(sim.simulate(0, np.random.default_rng(0))) == 0


def test_cross_section_is_the_integral_of_the_weights(sim: BenchmarkSimulator, events: EventBatch) -> None:
    # The mean weight at benchmark b estimates sigma(theta_b): within 5 standard errors.
    mean = events.weights.mean(axis=0)
    se = events.weights.std(axis=0) / np.sqrt(len(events))
    exact = np.array([sim.cross_section(np.array(t)) for t in PENTAGON])
    assert np.all(np.abs(mean - exact) <= 5 * se + 1e-12), (mean, exact, se)
    assert np.all(sim.cross_section(np.array(t)) > 0 for t in THETAS)


@pytest.mark.parametrize("nu", [None, (0.0, 1.0), (2.0, -1.5)])
@pytest.mark.parametrize("theta", THETAS)
def test_likelihood_integrates_to_one(sim: BenchmarkSimulator, theta: tuple[float, float], nu: Any) -> None:
    # Importance sampling from a broad Gaussian q (the exact nominal mean, 1.3 x the nominal covariance, also
    # for nu != 0): mean of p/q over 100k draws. Tolerance 1%; the estimated standard error must be < 0.2%.
    t = np.array(theta)
    nu_arr = None if nu is None else np.array(nu)
    mean, cov = sim.observation_moments(t)
    q = stats.multivariate_normal(mean, 1.3 * cov)
    x = q.rvs(100_000, random_state=np.random.default_rng(1))
    ratio = np.exp(sim.log_likelihood(x, t, nu_arr) - q.logpdf(x))
    se = ratio.std() / np.sqrt(ratio.size)
    assert se < 0.002
    assert abs(ratio.mean() - 1.0) < 0.01, (ratio.mean(), se)


def test_negative_interference_is_exercised(sim: BenchmarkSimulator) -> None:
    a, _, _ = sim.observation_mixture(np.array([0.5, 0.8]))
    assert a.min() < 0  # the signed-mixture path of log_likelihood is really tested


def _moments_agree(sim: BenchmarkSimulator, x: np.ndarray, theta: np.ndarray) -> None:
    # Sample mean within 5 standard errors; sample covariance within 5 Gaussian-approximation standard
    # errors sqrt((C_ii C_jj + C_ij^2)/n).
    n = x.shape[0]
    mean, cov = sim.observation_moments(theta)
    assert np.all(np.abs(x.mean(axis=0) - mean) < 5 * np.sqrt(np.diag(cov) / n))
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(x, rowvar=False) - cov) < 5 * se_cov)


def _ks_projection(sim: BenchmarkSimulator, x: np.ndarray, theta: np.ndarray, v: np.ndarray) -> float:
    a, means, covs = sim.observation_mixture(theta)
    mu = means @ v
    sd = np.sqrt(np.einsum("i,cij,j->c", v, covs, v))

    def cdf(t: np.ndarray) -> np.ndarray:
        return stats.norm.cdf((np.asarray(t)[..., None] - mu) / sd) @ a

    return float(stats.kstest(x @ v, cdf).pvalue)


@pytest.mark.parametrize("sampling", ["sm", "p2", "p4"])
def test_events_follow_the_exact_likelihood(sampling: str) -> None:
    # p2 = (0.31, 0.95) sits in the destructive-interference region: rejection sampling does real work there.
    sim = BenchmarkSimulator(config(generation={"events": 1000, "shards": 1, "sampling_benchmark": sampling}))
    theta = sim.sampling_theta
    x = sim.simulate(30_000, np.random.default_rng(3)).observations
    _moments_agree(sim, x, theta)
    rng = np.random.default_rng(4)
    for v in [np.eye(5)[2], rng.normal(size=5), rng.normal(size=5)]:
        assert _ks_projection(sim, x, theta, v / np.linalg.norm(v)) > 1e-3  # KS p-value of a 1-D projection


def test_detector_smearing_has_the_configured_covariance(sim: BenchmarkSimulator, events: EventBatch) -> None:
    # x - z ~ N(0, Sigma_det) at nominal nu: sample covariance within 5 Gaussian-approximation standard errors.
    resid = events.observations - events.latent
    cov = sim.detector_covariance
    np.testing.assert_allclose(np.diag(cov), 0.09)
    np.testing.assert_allclose(cov[0, 1], 0.2 * 0.09)
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / len(resid))
    assert np.all(np.abs(np.cov(resid, rowvar=False) - cov) < 5 * se)
    assert np.all(np.abs(resid.mean(axis=0)) < 5 * np.sqrt(np.diag(cov) / len(resid)))


def test_weights_morph_to_the_joint_likelihood_ratio(sim: BenchmarkSimulator, events: EventBatch) -> None:
    x, z = events.observations, events.latent
    theta_s = sim.sampling_theta
    w_s = events.weights[:, 0]  # sampling benchmark = sm = column 0
    rng = np.random.default_rng(5)
    for theta in [*map(np.array, THETAS), *rng.uniform(-1, 1, (4, 2))]:
        morphed = sim.morphing.morph_weights(events.weights, theta)
        log_ratio = sim.joint_log_likelihood(x, z, theta) - sim.joint_log_likelihood(x, z, theta_s)
        exact = np.exp(log_ratio) * sim.cross_section(theta) / sim.cross_section(theta_s)
        # Per event to 1e-9 relative; atol for events where destructive interference makes the exact value ~0
        # (there the morphed sum cancels terms of size ~ the weights themselves).
        np.testing.assert_allclose(morphed / w_s, exact, rtol=1e-9, atol=1e-12 * np.abs(events.weights).max())
        # The mean morphed weight estimates sigma(theta): within 5 standard errors.
        se = morphed.std() / np.sqrt(morphed.size)
        assert abs(morphed.mean() - sim.cross_section(theta)) <= 5 * se + 1e-9  # (se = 0 at the sampling point)


@pytest.mark.parametrize("theta", [(0.4, -0.7), (-0.3, 0.6), (0.0, 0.0)])
def test_joint_score_is_the_gradient_of_the_joint_log_likelihood(
    sim: BenchmarkSimulator, events: EventBatch, theta: Any
) -> None:
    x, z = events.observations[:2000], events.latent[:2000]
    t = np.array(theta)
    h = 1e-5
    fd = np.stack(
        [
            (sim.joint_log_likelihood(x, z, t + h * e) - sim.joint_log_likelihood(x, z, t - h * e)) / (2 * h)
            for e in np.eye(2)
        ],
        axis=1,
    )
    # Central differences: truncation ~h^2 * third derivative, rounding ~1e-16 |log p| / h ~ 1e-10.
    np.testing.assert_allclose(sim.joint_score(x, z, t), fd, rtol=1e-5, atol=1e-6)


def test_determinism(sim: BenchmarkSimulator) -> None:
    a = sim.simulate(500, np.random.default_rng(42))
    b = sim.simulate(500, np.random.default_rng(42))
    c = sim.simulate(500, np.random.default_rng(43))
    for name in ("observations", "latent", "weights", "nuisance_weights"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.observations, c.observations)
    assert not np.array_equal(a.latent, c.latent)
    # The geometry comes from model_seed only: a second simulator gives the same events.
    np.testing.assert_array_equal(
        BenchmarkSimulator(config()).simulate(500, np.random.default_rng(42)).weights, a.weights
    )


def test_global_random_state_is_untouched(sim: BenchmarkSimulator) -> None:
    before = np.random.get_state()[1].copy()  # type: ignore[index]
    sim.simulate(100, np.random.default_rng(0))
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # type: ignore[index]


def test_model_seed_changes_the_geometry() -> None:
    other = BenchmarkSimulator(config(simulator={"name": "benchmark", "options": {"model_seed": 1}}))
    assert other.cross_section(np.array([1.0, 1.0])) != BenchmarkSimulator(config()).cross_section(np.array([1.0, 1.0]))


def test_subset_of_observables_in_config_order() -> None:
    full = BenchmarkSimulator(config())
    sub = BenchmarkSimulator(config(observables=[{"name": "x3"}, {"name": "x1"}], nuisance=[]))
    a = full.simulate(2000, np.random.default_rng(9))
    b = sub.simulate(2000, np.random.default_rng(9))
    np.testing.assert_array_equal(b.latent, a.latent)
    np.testing.assert_array_equal(b.observations, a.observations[:, [3, 1]])
    assert b.nuisance_weights.shape == (2000, 0, 2)
    # The detector term of the joint likelihood is the marginal on the kept coordinates.
    theta = np.array([0.2, -0.4])
    cov = sub.detector_covariance[np.ix_([3, 1], [3, 1])]
    det = stats.multivariate_normal(np.zeros(2), cov).logpdf(b.observations - b.latent[:, [3, 1]])
    np.testing.assert_allclose(
        sub.joint_log_likelihood(b.observations, b.latent, theta),
        sub.latent_log_likelihood(b.latent, theta) + det,
        rtol=1e-12,
    )
    # The 2-D marginal likelihood is normalised (importance sampling, 40k draws, 1%).
    mean, cov2 = sub.observation_moments(theta)
    q = stats.multivariate_normal(mean, 1.3 * cov2)
    xq = q.rvs(40_000, random_state=np.random.default_rng(2))
    assert abs(np.exp(sub.log_likelihood(xq, theta) - q.logpdf(xq)).mean() - 1.0) < 0.01
    _moments_agree(sub, sub.simulate(20_000, np.random.default_rng(10)).observations, sub.sampling_theta)


def test_normalization_weights_are_exact(events: EventBatch) -> None:
    np.testing.assert_array_equal(events.nuisance_weights[:, 0, 0], 1.05)
    np.testing.assert_array_equal(events.nuisance_weights[:, 0, 1], 1 / 1.05)


def test_observable_scale_weights_are_joint_density_ratios(sim: BenchmarkSimulator, events: EventBatch) -> None:
    x, z = events.observations[:3000], events.latent[:3000]
    for j, nu in enumerate((1.0, -1.0)):
        for theta in (np.zeros(2), np.array([0.8, -0.6])):  # the same ratio at any theta
            ratio = np.exp(
                sim.joint_log_likelihood(x, z, theta, np.array([0.0, nu])) - sim.joint_log_likelihood(x, z, theta)
            )
            np.testing.assert_allclose(events.nuisance_weights[:3000, 1, j], ratio, rtol=1e-12)
    # Normalization nuisances do not change the (normalised) shape.
    np.testing.assert_array_equal(
        sim.log_likelihood(x, np.zeros(2), np.array([1.5, 0.0])), sim.log_likelihood(x, np.zeros(2))
    )


def test_observable_scale_reweighting_reproduces_the_scaled_simulation() -> None:
    # size 0.05 on x0, x2 only: the second moments move by ~10%, far more than the statistical error.
    nuisance = [{"name": "escale", "kind": "observable_scale", "size": 0.05, "observables": ["x0", "x2"]}]
    sim = BenchmarkSimulator(config(nuisance=nuisance))
    ev = sim.simulate(40_000, np.random.default_rng(11))
    x2 = ev.observations**2
    scaled_events = ev.observations * np.array([1.05, 1, 1.05, 1, 1])  # simulation at nu=+1: x -> S x
    for j, nu in enumerate((1.0, -1.0)):
        w = ev.nuisance_weights[:, 0, j]
        mean, cov = sim.observation_moments(sim.sampling_theta, np.array([nu]))
        exact = np.diag(cov) + mean**2  # E[x^2] under the scaled model
        est = (w[:, None] * x2).mean(axis=0)
        se = (w[:, None] * x2).std(axis=0) / np.sqrt(len(w))
        assert np.all(np.abs(est - exact) < 5 * se), (est, exact, se)  # within 5 standard errors
        assert np.all(np.abs(x2.mean(axis=0)[[0, 2]] - exact[[0, 2]]) > 5 * se[[0, 2]])  # the effect is resolved
        np.testing.assert_array_equal(w[ev.observations[:, 0] < -100], 1.0)  # (no-op; keeps w used per event)
    sc_mean, _ = sim.observation_moments(sim.sampling_theta, np.array([1.0]))
    se_sc = scaled_events.std(axis=0) / np.sqrt(len(ev))
    assert np.all(np.abs(scaled_events.mean(axis=0) - sc_mean) < 5 * se_sc)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.log_likelihood(np.zeros((3, 4)), np.zeros(2)), r"x: expected shape \(n, 5\), got \(3, 4\)"),
        (lambda s: s.log_likelihood(np.zeros(5), np.zeros(2)), r"x: expected shape \(n, 5\), got \(5,\)"),
        (lambda s: s.log_likelihood(np.zeros((3, 5)), np.zeros(3)), r"theta: expected shape \(2,\), got \(3,\)"),
        (lambda s: s.log_likelihood(np.zeros((3, 5)), np.zeros(2), np.zeros(1)), r"nu: expected shape \(2,\)"),
        (lambda s: s.log_likelihood(np.zeros((3, 5)), np.zeros(2), np.array([0, -60.0])), "must stay > 0"),
        (
            lambda s: s.joint_log_likelihood(np.zeros((3, 5)), np.zeros((4, 5)), np.zeros(2)),
            r"z: expected shape \(3, 5\)",
        ),
        (lambda s: s.joint_score(np.zeros((3, 5)), np.zeros((3, 6)), np.zeros(2)), r"z: expected shape \(3, 5\)"),
        (lambda s: s.cross_section(np.zeros((1, 2))), r"theta: expected shape \(2,\), got \(1, 2\)"),
        (lambda s: s.simulate(-1, np.random.default_rng(0)), "n: expected an int >= 0"),
    ],
)
def test_shapes_are_checked_loudly(sim: BenchmarkSimulator, call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(sim)


def test_simulate_refuses_legacy_random_state(sim: BenchmarkSimulator) -> None:
    with pytest.raises(TypeError, match="Generator"):
        sim.simulate(10, np.random.RandomState(0))  # type: ignore[arg-type]


def test_log_likelihood_is_finite_far_in_the_tails(sim: BenchmarkSimulator) -> None:
    x = np.array([[30.0, -30.0, 30.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    for theta in THETAS:
        ll = sim.log_likelihood(x, np.array(theta))
        assert np.all(np.isfinite(ll)) and ll[0] < ll[1]
    jll = sim.joint_log_likelihood(x, x, np.array([0.3, 0.3]))
    assert np.all(np.isfinite(jll))


def test_benchmark_simulator_satisfies_the_protocol() -> None:
    from sbi_core.config import load_config
    from sbi_core.physics.base import Simulator
    from sbi_core.physics.registry import make_simulator
    from tests.conftest import BENCHMARK_CONFIG

    assert isinstance(make_simulator(load_config(str(BENCHMARK_CONFIG))), Simulator)


def test_observations_at_moves_the_same_events_to_the_law_at_nu(sim: BenchmarkSimulator, events: EventBatch) -> None:
    """x(nu) of the sampled events follows p(x|theta_s, nu): its weighted mean matches the exact one at nu = +-1."""
    sm = np.zeros(2)
    w = events.weights[:, 0]
    for nu in (np.array([0.0, 1.0]), np.array([0.0, -1.0]), np.array([0.7, 0.0])):
        moved = sim.observations_at(events.observations, events.latent, nu)
        assert moved.shape == events.observations.shape and moved.dtype == np.float64
        mean, cov = sim.observation_moments(sm, nu)
        got = np.average(moved, axis=0, weights=w)
        assert np.all(np.abs(got - mean) < 4 * np.sqrt(np.diag(cov) / len(w))), (nu, got, mean)
    assert np.array_equal(sim.observations_at(events.observations, events.latent, np.zeros(2)), events.observations)
    with pytest.raises(ValueError, match="nu"):
        sim.observations_at(events.observations, events.latent, np.zeros(3))


# ---------------------------------------------------------------------------------------------- the background
BKG_NUISANCE = [
    {"name": "lumi", "kind": "normalization", "size": 0.05},
    {"name": "bkg_norm", "kind": "normalization", "size": 0.2, "samples": ["background"]},
    {"name": "escale", "kind": "observable_scale", "size": 0.02},
]


def bkg_config(nuisance: list[dict[str, Any]] | None = None) -> AnalysisConfig:
    options = {"detector_correlation": 0.2, "background": {"cross_section": 2.0}}
    return config(nuisance=nuisance or BKG_NUISANCE, simulator={"name": "benchmark", "options": options})


@pytest.fixture(scope="module")
def bkg_sim() -> BenchmarkSimulator:
    return BenchmarkSimulator(bkg_config())


@pytest.fixture(scope="module")
def bkg_events(bkg_sim: BenchmarkSimulator) -> EventBatch:
    return bkg_sim.simulate(40_000, np.random.default_rng(17))


def test_background_is_a_second_sample(bkg_sim: BenchmarkSimulator, bkg_events: EventBatch) -> None:
    """Two samples; the background adds sigma_bkg at every theta; the weights integrate to the total and morph to
    the joint ratio; the events' background share is sigma_bkg / sigma(theta_s) (5 standard errors)."""
    sim, ev = bkg_sim, bkg_events
    assert sim.samples == ("signal", "background") and BenchmarkSimulator.fixed_samples(bkg_config()) == ("background",)
    signal_only = BenchmarkSimulator(config())
    for t in map(np.array, THETAS):
        assert sim.cross_section(t) == pytest.approx(signal_only.cross_section(t) + 2.0, rel=1e-12)
    mean, se = ev.weights.mean(axis=0), ev.weights.std(axis=0) / np.sqrt(len(ev))
    exact = np.array([sim.cross_section(np.array(t)) for t in PENTAGON])
    assert np.all(np.abs(mean - exact) <= 5 * se + 1e-12), (mean, exact, se)
    frac = sim.sample_fractions(ev.latent)
    np.testing.assert_allclose(frac.sum(axis=1), 1.0, rtol=1e-12)
    share = 2.0 / sim.cross_section(sim.sampling_theta)
    assert abs(frac[:, 1].mean() - share) < 5 * frac[:, 1].std() / np.sqrt(len(ev))
    x, z, theta = ev.observations[:5000], ev.latent[:5000], np.array([0.5, -0.8])
    morphed = sim.morphing.morph_weights(ev.weights[:5000], theta) / ev.weights[:5000, 0]
    exact_ratio = np.exp(sim.joint_log_likelihood(x, z, theta) - sim.joint_log_likelihood(x, z, sim.sampling_theta))
    np.testing.assert_allclose(morphed, exact_ratio * sim.cross_section(theta) / sim.cross_section(sim.sampling_theta),
                               rtol=1e-9)
    _moments_agree(sim, ev.observations, sim.sampling_theta)  # events follow the signal + background mixture


def test_per_sample_densities_and_the_background_normalisation(bkg_sim: BenchmarkSimulator,
                                                               bkg_events: EventBatch) -> None:
    sim, ev = bkg_sim, bkg_events
    x, z = ev.observations[:3000], ev.latent[:3000]
    t = np.array([0.3, -0.2])
    total = sim.log_dsigma(x, t)
    np.testing.assert_allclose(np.logaddexp(sim.log_dsigma(x, t, sample="signal"),
                                            sim.log_dsigma(x, t, sample="background")), total, rtol=1e-12)
    np.testing.assert_allclose(total - np.log(sim.cross_section(t)), sim.log_likelihood(x, t), rtol=1e-12)
    # bkg_norm = +1.5 scales the background's rate only, so p(x) changes where the background is
    nu = np.array([0.0, 1.5, 0.0])
    np.testing.assert_allclose(sim.log_dsigma(x, t, nu, "background") - sim.log_dsigma(x, t, sample="background"),
                               1.5 * np.log(1.2), rtol=1e-12)
    np.testing.assert_array_equal(sim.log_dsigma(x, t, nu, "signal"), sim.log_dsigma(x, t, sample="signal"))
    # the event weights' variation: the background's share of the weight scales by 1.2^+-1
    share = sim.sample_fractions(z)[:, 1]
    np.testing.assert_allclose(ev.nuisance_weights[:3000, 1, 0], 1.0 + 0.2 * share, rtol=1e-12)
    np.testing.assert_allclose(ev.nuisance_weights[:3000, 1, 1], 1.0 + share * (1 / 1.2 - 1), rtol=1e-12)
    np.testing.assert_allclose(ev.nuisance_weights[:3000, 0, 0], 1.05)  # lumi: both samples
    for theta in (np.array([0.4, -0.7]), np.zeros(2)):  # the joint score with a background, against differences
        h = 1e-5
        fd = np.stack([(sim.joint_log_likelihood(x, z, theta + h * e) - sim.joint_log_likelihood(x, z, theta - h * e))
                       / (2 * h) for e in np.eye(2)], axis=1)
        np.testing.assert_allclose(sim.joint_score(x, z, theta), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nu", [None, (0.0, 1.0, 0.0), (1.0, -1.5, 1.0)])
def test_likelihood_with_a_background_integrates_to_one(bkg_sim: BenchmarkSimulator, nu: Any) -> None:
    t = np.array([0.5, 0.8])
    mean, cov = bkg_sim.observation_moments(t)
    q = stats.multivariate_normal(mean, 1.3 * cov)
    x = q.rvs(100_000, random_state=np.random.default_rng(1))
    ratio = np.exp(bkg_sim.log_likelihood(x, t, None if nu is None else np.array(nu)) - q.logpdf(x))
    assert ratio.std() / np.sqrt(ratio.size) < 0.002 and abs(ratio.mean() - 1.0) < 0.01, ratio.mean()


def test_samples_of_a_nuisance_are_checked() -> None:
    from sbi_core.errors import ConfigError
    from sbi_core.physics.registry import check_analysis

    bad = [*BKG_NUISANCE[:2], {"name": "escale", "kind": "observable_scale", "size": 0.02, "samples": ["signal"]}]
    with pytest.raises(ConfigError, match=r"nuisance\[2\].samples: an observable_scale nuisance"):
        BenchmarkSimulator(bkg_config(nuisance=bad))
    with pytest.raises(ConfigError, match=r"nuisance\[1\].samples: unknown samples \['background'\]"):
        check_analysis(config(nuisance=BKG_NUISANCE))  # no background configured
