"""The ensemble disagreement D(theta) = sqrt(sum_i w_i(theta) s_i^2 / sum_i w_i(theta)) of the active-learning
objective: the formula on members with known outputs, and on a real two-member ALICES ensemble."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_core import steps
from sbi_core.errors import InputError
from sbi_core.ml import disagreement as module
from sbi_core.ml.disagreement import DisagreementSample, disagreement
from sbi_core.ml.samples import event_split


class Known:
    """Two 'members': log r = 0 and log r = c x0 (1 + theta0): spread |c x0 (1 + theta0)| / sqrt(2) per event."""

    parametrised = True

    def __init__(self, c: float) -> None:
        self.c = c
        self.models = [None, None]

    def member_log_ratio(self, x, theta0=None):
        return np.stack([np.zeros(len(x)), self.c * x[:, 0] * (1.0 + theta0[0])])


def test_the_formula_on_members_with_known_outputs(small_run, monkeypatch):
    layout, cfg, plan = steps.load_run(str(small_run))
    sample = DisagreementSample.from_run(layout, cfg, plan, n=500)
    rows = np.flatnonzero(event_split(cfg, np.arange(6000)) == 2)[:500]
    from sbi_core.data.format import read_samples

    events = read_samples(small_run / "events.h5")
    assert np.array_equal(sample.x, events["samples/observations"][rows])  # the first 500 test-split events
    monkeypatch.setattr(module, "trained_ensemble", lambda *a, **k: Known(0.2))
    thetas = np.array([[0.5, 0.0], [-0.3, 0.6]])
    basis = events["samples/weights"][rows, : len(cfg.benchmarks)]
    for weighting in ("events", "theta"):
        got = disagreement(layout, cfg, "alices", thetas, sample, weighting)
        for theta, res in zip(thetas, got, strict=True):
            w = np.maximum(basis @ sample.morphing.basis_coefficients(theta), 0.0) if weighting == "theta" \
                else np.ones(len(rows))
            s = np.abs(0.2 * sample.x[:, 0] * (1.0 + theta[0])) / np.sqrt(2.0)
            assert res["disagreement"] == pytest.approx(np.sqrt(np.sum(w * s**2) / w.sum()), rel=1e-12)
            assert res["mean_spread"] == pytest.approx(np.sum(w * s) / w.sum(), rel=1e-12)


def test_one_member_has_no_spread(small_run, monkeypatch):
    layout, cfg, plan = steps.load_run(str(small_run))
    sample = DisagreementSample.from_run(layout, cfg, plan, n=50)
    one = Known(0.2)
    one.member_log_ratio = lambda x, theta0=None: np.zeros((1, len(x)))
    monkeypatch.setattr(module, "trained_ensemble", lambda *a, **k: one)
    with pytest.raises(InputError, match="at least 2"):
        disagreement(layout, cfg, "alices", np.array([[0.1, 0.1]]), sample)


def test_trained_ensemble_reads_the_members_without_ensemble_files(tmp_path):
    """The trained members straight from their result.json and model.pt equal what `sbi-core ensemble` builds."""
    import torch

    from sbi_core.layout import RunLayout
    from sbi_core.ml.ensemble import build_ensembles, load_ensemble
    from sbi_core.ml.train_step import train
    from tests.ml.synthetic_run import synthetic_run

    torch.set_num_threads(1)
    run = synthetic_run(tmp_path / "run")
    train(run, ["alices-theta-nominal-m00", "alices-theta-nominal-m01"])
    layout, cfg, _ = steps.load_run(run)
    direct = module.trained_ensemble(layout, cfg, "alices", "theta")
    build_ensembles(run)
    built = load_ensemble(RunLayout(run), "alices", "theta")
    x = np.random.default_rng(0).normal(size=(50, 5))
    assert direct.members == built.members == ["alices-theta-nominal-m00", "alices-theta-nominal-m01"]
    assert np.array_equal(direct.member_log_ratio(x, np.array([0.2, -0.1])),
                          built.member_log_ratio(x, np.array([0.2, -0.1])))


class KnownHead:
    """A benchmark_ratio head whose members output log r = k c x0 for k = 1..members."""

    parametrised = False

    def __init__(self, c: float, members: int) -> None:
        self.c, self.models = c, [None] * members

    def member_log_ratio(self, x, theta0=None):
        return np.stack([(k + 1) * self.c * x[:, 0] for k in range(len(self.models))])


def test_benchmark_ratio_members_are_morphed_one_by_one_and_the_mean_from_each_heads_mean(small_run, monkeypatch):
    from sbi_core.ml.closure import morphed_log_ratio
    from sbi_core.ml.disagreement import disagreement_and_mean

    layout, cfg, plan = steps.load_run(str(small_run))
    sample = DisagreementSample.from_run(layout, cfg, plan, n=300)
    names = cfg.benchmark_names
    ref = names.index(cfg.sampling_benchmark)
    heads = {name: KnownHead(0.01 * (b + 1), 3 if b % 2 else 2) for b, name in enumerate(names) if b != ref}
    monkeypatch.setattr(module, "trained_ensemble", lambda _l, _c, _m, head, *a, **k: heads[head])
    theta = np.array([0.4, -0.3])
    results, mean = disagreement_and_mean(layout, cfg, "benchmark_ratio", theta[None, :], sample)
    coefficients, sigma = sample.morphing.basis_coefficients(theta), sample.basis_weights.sum(axis=0)

    def morph(per_head: dict[str, np.ndarray]) -> np.ndarray:
        lr = np.zeros((sample.x.shape[0], len(names)))
        for b, name in enumerate(names):
            if b != ref:
                lr[:, b] = per_head[name]
        return morphed_log_ratio(lr, coefficients, sigma)

    members = [morph({n: h.member_log_ratio(sample.x)[m] for n, h in heads.items()}) for m in range(2)]  # fewest: 2
    spread = np.stack(members).std(axis=0, ddof=1)
    assert results[0]["disagreement"] == pytest.approx(float(np.sqrt(np.mean(spread**2))), rel=1e-12)
    # the ensemble's log r: every head's mean over all its members (3 or 2), then morphed
    expected = morph({n: h.member_log_ratio(sample.x).mean(axis=0) for n, h in heads.items()})
    np.testing.assert_allclose(mean[0], expected, rtol=0, atol=1e-12)
