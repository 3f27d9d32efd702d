"""Losses against hand-computed values, the registry, typed configs, and the autograd score."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError

import pytest
import torch

from sbi_core.errors import InputError
from sbi_core.ml.estimators import get_estimator, known_estimators
from sbi_core.ml.estimators.losses import cross_entropy, ratio_mse, score_mse
from sbi_core.ml.mlp import build_mlp
from sbi_core.ml.options import KNOWN_METHODS, TrainingConfig
from tests.ml.synthetic import gaussian_set, tensors


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_cross_entropy_by_hand():
    # s = 1/(1+r): r = 1 -> s = 1/2 (label 1), r = 3 -> s = 1/4 (label 0): -(ln 1/2 + ln 3/4) / 2
    got = cross_entropy(t(0.0, math.log(3.0)), t(1.0, 0.0))
    assert float(got) == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2, rel=1e-12)
    # soft labels: target c, s = 1/2 -> -(c ln s + (1-c) ln(1-s)) = ln 2 whatever c
    assert float(cross_entropy(t(0.0), t(0.3))) == pytest.approx(math.log(2.0), rel=1e-12)


def test_ratio_mse_by_hand():
    # y = 0 row: (1/r_hat - 1/r_xz)^2 = (1 - 1/2)^2; y = 1 row: (r_hat - r_xz)^2 = (2 - 4)^2; each term / n = 2
    got = ratio_mse(t(0.0, math.log(2.0)), t(math.log(2.0), math.log(4.0)), t(0.0, 1.0))
    assert float(got) == pytest.approx(0.25 / 2 + 4.0 / 2, rel=1e-12)
    # clipping: log r beyond the clip counts as the clip
    clipped = ratio_mse(t(50.0), t(0.0), t(1.0), log_r_clip=2.0)
    assert float(clipped) == pytest.approx((math.exp(2.0) - 1.0) ** 2, rel=1e-12)


def test_score_mse_by_hand_and_shapes():
    t_hat = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    t_xz = torch.tensor([[0.0, 0.0], [3.0, 2.0]], dtype=torch.float64)
    assert float(score_mse(t_hat, t_xz)) == pytest.approx((1 + 4 + 0 + 4) / 4)
    assert float(score_mse(t_hat, t_xz, t(1.0, 0.0))) == pytest.approx((1 + 4) / 4)
    with pytest.raises(ValueError, match="expected shape"):
        score_mse(t_hat, t_xz[:, :1])  # never broadcast
    with pytest.raises(ValueError, match="target"):
        cross_entropy(t(0.0, 0.0), t(1.0))


def test_registry_matches_config_methods():
    assert sorted(known_estimators()) == sorted(KNOWN_METHODS)
    with pytest.raises(InputError, match="unknown estimator method 'nope'.*known"):
        get_estimator("nope")


def test_typed_configs_from_training():
    training = TrainingConfig(alpha=2.5)
    alices = get_estimator("alices").from_training(training)
    assert alices.config.alpha == 2.5
    rascal = get_estimator("rascal").from_training(training)
    assert (rascal.config.alpha, rascal.config.log_r_clip) == (2.5, 10.0)
    with pytest.raises(FrozenInstanceError):
        alices.config.alpha = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="alpha"):
        type(alices.config)(alpha=-1.0)
    with pytest.raises(TypeError):
        get_estimator("carl")(alices.config)


@pytest.mark.parametrize("method", ["carl", "alice", "alices", "rolr", "rascal"])
def test_parametrised_losses_compose(method):
    """Each method's loss equals its documented formula evaluated on the network's outputs (float64),
    with the score obtained by central finite differences in theta0."""
    torch.manual_seed(0)
    data = {k: v.double() for k, v in tensors(gaussian_set(64, 1)).items()}
    est = get_estimator(method)()
    model = est.build_model(5, 2, hidden=[8], activation="tanh").double()
    log_r = model(data["x"], data["theta0"])[:, 0].detach()
    eps = 1e-6
    t_hat = torch.stack([
        (model(data["x"], data["theta0"] + eps * torch.eye(2, dtype=torch.float64)[k])[:, 0]
         - model(data["x"], data["theta0"] - eps * torch.eye(2, dtype=torch.float64)[k])[:, 0]) / (2 * eps)
        for k in range(2)], dim=1).detach()
    y, lr = data["y"], data["log_r_xz"]
    s_hat = 1 / (1 + torch.exp(log_r))
    xe_y = -(y * torch.log(s_hat) + (1 - y) * torch.log(1 - s_hat)).mean()
    c = 1 / (1 + torch.exp(lr))
    xe_c = -(c * torch.log(s_hat) + (1 - c) * torch.log(1 - s_hat)).mean()
    r_hat, r = torch.exp(log_r), torch.exp(lr)
    mse = ((1 - y) * (1 / r_hat - 1 / r) ** 2).mean() + (y * (r_hat - r) ** 2).mean()
    score = (((1 - y)[:, None] * (t_hat - data["t_xz"])) ** 2).mean()
    expected = {"carl": xe_y, "alice": xe_c, "alices": xe_c + score, "rolr": mse, "rascal": mse + score}[method]
    got = est.loss(model, {k: data[k] for k in est.uses})
    assert float(got.detach()) == pytest.approx(float(expected), rel=1e-7)
    assert torch.allclose(est.score(model, data["x"], data["theta0"]), t_hat, atol=1e-6)


def test_x_only_estimators():
    data = tensors(gaussian_set(32, 2))
    sally = get_estimator("sally")()
    model = sally.build_model(5, 2, hidden=[8], activation="relu")
    assert (model.n_theta, model.n_out) == (0, 2)
    expected = ((model(data["x"]) - data["t_xz"]) ** 2).mean()
    got = sally.loss(model, {k: data[k] for k in sally.uses}).detach()
    assert float(got) == pytest.approx(float(expected.detach()), rel=1e-6)
    br_cls = get_estimator("benchmark_ratio")
    br = br_cls(br_cls.config_class(labels="y"))
    assert br.uses == ("x", "y") and br.parametrised is False
    joint = br_cls()
    assert "log_r_xz" in joint.uses and joint.config.labels == "joint"
    net = br.build_model(5, 2, hidden=[8], activation="silu")
    assert (net.n_theta, net.n_out) == (0, 1)
    with pytest.raises(ValueError, match="x only"):
        net(data["x"], data["theta0"])
    with pytest.raises(ValueError, match="score"):
        sally.log_ratio(model, data["x"])


def test_mlp_standardisation_inside_model():
    data = tensors(gaussian_set(1000, 3))
    model = build_mlp(5, 2, 1, hidden=[4], activation="tanh")
    x = data["x"] * 10 + 3
    model.set_standardisation(x, data["theta0"])
    assert torch.allclose(model.x_mean, x.mean(0)) and torch.allclose(model.x_std, x.std(0, unbiased=False))
    const = torch.ones(1000, 2)
    model.set_standardisation(x, const)  # a constant column is centred, not divided by 0
    assert torch.equal(model.theta_std, torch.ones(2))
    assert "x_mean" in model.state_dict() and "theta_std" in model.state_dict()
    with pytest.raises(ValueError, match=r"theta: expected shape \(1000, 2\)"):
        model(x, data["theta0"][:10])


@pytest.mark.parametrize("method", ["alices", "rascal"])
def test_standardised_score_term_is_madminers(method):
    """score_units standardised: the loss equals MadMiner 0.9.6's own loss functions evaluated as its
    ParameterizedRatioEstimator does with scale_parameters=True: the network sees theta' = (theta - mean) / std,
    its score is d log r / d theta', and the target is t_xz * std. raw: the unscaled score term."""
    from madminer.utils.ml import losses as mm

    torch.manual_seed(3)
    data = {k: v.double() for k, v in tensors(gaussian_set(256, 4)).items()}
    data["theta0"] = data["theta0"] * torch.tensor([3.0, 0.5], dtype=torch.float64) + 1.0  # stds ~1.7 and ~0.3
    est = get_estimator(method).from_training(TrainingConfig(alpha=0.7))
    model = est.build_model(5, 2, hidden=[8], activation="tanh").double()
    model.set_standardisation(data["x"], data["theta0"])
    std = model.theta_std
    assert est.config.score_units == "standardised" and float(std.min()) < 0.5 < 1.5 < float(std.max())
    theta_s = ((data["theta0"] - model.theta_mean) / std).requires_grad_(True)
    log_r = model.net(torch.cat([(data["x"] - model.x_mean) / model.x_std, theta_s], dim=1))
    (t_s,) = torch.autograd.grad(log_r.sum(), theta_s)
    y, r = data["y"][:, None], torch.exp(data["log_r_xz"])[:, None]
    args = (None, log_r.detach(), t_s, None, y, r, data["t_xz"] * std, None)
    first = mm.ratio_augmented_xe(*args) if method == "alices" else mm.ratio_mse(*args)
    expected = first + 0.7 * mm.ratio_score_mse_num(*args)
    got = est.loss(model, {k: data[k] for k in est.uses})
    assert float(got.detach()) == pytest.approx(float(expected), rel=1e-7)
    raw = get_estimator(method)(type(est.config)(alpha=0.7, score_units="raw"))
    t_hat = est.score(model, data["x"], data["theta0"])
    score_raw = (((1 - data["y"])[:, None] * (t_hat - data["t_xz"])) ** 2).mean()
    got_raw = raw.loss(model, {k: data[k] for k in raw.uses})
    assert float(got_raw.detach()) == pytest.approx(float(first + 0.7 * score_raw), rel=1e-7)
    with pytest.raises(ValueError, match="score_units"):
        type(est.config)(score_units="theta")
