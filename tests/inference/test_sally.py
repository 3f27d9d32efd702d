"""SALLY: histograms of the score t(x) as a binned likelihood in the contract's arrays (sbi_core/inference/sally.py).

The binned NLL is checked against an independent numpy Poisson NLL; the pipeline's steps (sample, train,
ensemble a small sally network, then dataset -> likelihood batches -> join -> fit) run on a run derived from the
session's `small_run` (6000 benchmark events, pseudo-data of ~1330 events at (cW, cHW) = (0.3, -0.2), L = 200/pb)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sbi_core import steps as data_steps
from sbi_core.errors import InputError
from sbi_core.inference import sally, steps
from sbi_core.inference.exact import model_header
from sbi_core.physics.morphing import monomials

TRUTH = {"cW": 0.3, "cHW": -0.2}
SALLY_RUN = ["inference.source=sally", "training.methods=[sally]", "inference.chunk_rows=2048"]


#: A small sally ensemble (1 member, 4 epochs on 3000 samples at the reference): ~4 s of training.
TRAINING = ["training.members=1", "training.min_members=1", "training.samples.train=3000", "training.samples.test=200",
            "training.variations=false", "training.network.hidden=[32]", "training.optimizer.epochs=4",
            "training.optimizer.batch_size=256", "training.optimizer.learning_rate=0.01",
            "training.optimizer.patience=0", "training.device=cpu"]


@pytest.fixture(scope="module")
def sally_fit(small_run, tmp_path_factory):
    """sample -> train -> ensemble a sally score network, then dataset -> likelihood -> join -> fit on its
    histograms (every nuisance floating)."""
    from sbi_core.ml import ensemble, samples, train_step

    run = str(tmp_path_factory.mktemp("sally") / "run")
    data_steps.derive(str(small_run), run, SALLY_RUN + TRAINING)
    train_step.train(run, samples.sample(run, "sally")["networks"])
    ensemble.build_ensembles(run)
    out = {"dataset": steps.dataset(run)}
    out["likelihood"] = steps.likelihood(run, [int(b) for b in out["dataset"]["likelihood_batches"]])
    out["join"] = steps.likelihood_join(run)
    out["fit"] = steps.fit(run)
    return run, out


def test_sally_fit_recovers_the_truth(sally_fit):
    """The binned fit's best values lie within 2 standard errors of the truth (seeds fixed: dataset.seed 0, the
    training's; seen: pulls 0.56 (cW) and 0.12 (cHW), errors 0.085 and 0.075 against the exact fit's 0.068, 0.060)."""
    run, out = sally_fit
    from sbi_core.data.likelihood_arrays import read_arrays
    from sbi_core.layout import RunLayout

    data = read_arrays(RunLayout(run).likelihood("pseudo", "sally"))
    assert data.source == "sally" and data.n_events <= 25  # 5 x 5 score bins, empty ones dropped
    assert data.weight.sum() == out["dataset"]["n_events"]  # every data event is in a bin
    assert sum(n.startswith("staterror_") for n in data.nuisance) == data.n_events
    fit = out["fit"]
    assert fit["valid"]
    values, errors = fit["values"], fit["errors"]
    for name, truth in TRUTH.items():
        pull = (values[name] - truth) / errors[name]
        assert abs(pull) < 2.0, (name, values[name], errors[name])
        assert 0.01 < errors[name] < 1.0


def _poisson_nll(p, arrays, mc, lumi, n_pois):
    """sum_b (lambda_b - n_b log lambda_b) + sum_k nu_k^2 / 2: numpy, exponential interpolation, written anew."""
    theta, nu = p[:n_pois], p[n_pois:]
    w = monomials(theta, arrays.morphing_components) @ arrays.morphing_matrix
    sigma_bins = mc.weight[:, None] * np.exp(mc.log_ratio)  # S_b,c
    u, d = mc.log_ratio_var[:, :, 0, 0], mc.log_ratio_var[:, :, 1, 0]
    factor = np.exp(u * np.maximum(nu, 0) + d * np.maximum(-nu, 0)).prod(axis=1)
    lam = lumi * (sigma_bins @ w) * factor
    return float(np.sum(lam - arrays.weight * np.log(lam)) + np.sum(nu ** 2) / 2)


def test_binned_nll_is_the_poisson_nll(small_run):
    """NLLModel on the binned arrays minus an independent numpy Poisson NLL is one constant (to 1e-9 relative)."""
    from sbi_core.inference.nll import NLLModel
    from sbi_core.runs import load_run

    _, cfg, _ = load_run(str(small_run))
    n_b, n_k, n_bins = len(cfg.benchmarks), len(cfg.nuisance), 12
    rng = np.random.default_rng(7)
    sums = rng.uniform(0.5, 2.0, size=(n_bins, n_b + 2 * n_k))
    sums[3] = 0.0  # an empty bin: dropped
    counts = rng.poisson(40.0, size=n_bins).astype(float)
    counts[3] = 0.0
    sumw2 = sums[:, 0] ** 2 / 50.0
    info = SimpleNamespace(xsec=sums[:, :n_b].sum(axis=0), xsec_var=np.ones((n_k, 2, n_b)), config_hash="x")
    from sbi_core.inference.datasets import event_header

    h = event_header(str(small_run / "events.h5"))
    data, mc = sally.binned_arrays(cfg, model_header(cfg, info, h["components"], h["matrix"], "sally"),
                                   counts, sums, sumw2)
    assert data.n_events == n_bins - 1 and len(data.nuisance) == n_k + n_bins - 1
    model = NLLModel.from_arrays(data, luminosity=20.0, normalization=mc, interpolation="exponential")
    points = [np.concatenate([t, rng.normal(0, 0.7, len(data.nuisance))]) for t in rng.normal(0, 0.5, (4, 2))]
    diffs = [model.value(p) - _poisson_nll(p, data, mc, 20.0, 2) for p in points]
    scale = abs(_poisson_nll(points[0], data, mc, 20.0, 2))
    np.testing.assert_allclose(diffs, diffs[0], rtol=0, atol=1e-9 * scale)


def test_staterror_is_the_bins_mc_uncertainty(small_run):
    """Bin b's staterror moves its rate by (1 + delta_b)^nu with delta_b = sqrt(sum w^2) / sum w, nothing else."""
    from sbi_core.runs import load_run

    _, cfg, _ = load_run(str(small_run))
    n_b, n_k = len(cfg.benchmarks), len(cfg.nuisance)
    sums = np.full((3, n_b + 2 * n_k), 2.0)
    sumw2 = np.array([0.04, 0.16, 1.0])
    info = SimpleNamespace(xsec=np.ones(n_b), xsec_var=np.ones((n_k, 2, n_b)), config_hash="x")
    header = model_header(cfg, info, np.zeros((1, 2), np.int64), np.ones((1, n_b)), "sally")
    data, _ = sally.binned_arrays(cfg, header, np.ones(3), sums, sumw2)
    stat = data.log_ratio_var[:, n_k:, :, 0]
    np.testing.assert_allclose(np.diagonal(stat[:, :, 0]), np.log1p([0.1, 0.2, 0.5]), rtol=1e-12)
    assert np.count_nonzero(stat) == 6  # each staterror acts on its own bin alone
    no_stat, _ = sally.binned_arrays(cfg, header, np.ones(3), sums, sumw2, staterror=False)
    assert no_stat.nuisance == [n.name for n in cfg.nuisance]


def test_binning_quantiles_and_index():
    t = np.column_stack([np.arange(100.0), -np.arange(100.0)])
    b = sally.Binning.from_scores(t, np.ones(100), 4)
    assert b.shape == (4, 4) and b.edges[0] == (24.0, 49.0, 74.0)
    np.testing.assert_array_equal(np.bincount(b.index(t)[t[:, 0] < 24], minlength=16)[:4], [0, 0, 0, 24])
    assert sally.Binning.from_json(b.to_json()) == b


def test_no_sally_network_is_refused_naming_the_field(small_run, tmp_path, cli):
    run = str(tmp_path / "run")
    data_steps.derive(str(small_run), run, SALLY_RUN)
    result = cli("dataset", "--run", run)
    assert result.returncode == 2 and "inference.source sally needs a trained sally score network" in result.stderr


def test_sally_config_checks(small_run, tmp_path):
    with pytest.raises(InputError, match="inference.source"):
        data_steps.derive(str(small_run), str(tmp_path / "a"), ["inference.source=sally"])
    with pytest.raises(InputError, match="inference.normalization"):
        data_steps.derive(str(small_run), str(tmp_path / "b"), [*SALLY_RUN, "inference.normalization=xsec"])


def test_a_members_histograms_are_the_ensembles_for_one_member(sally_fit):
    """The bootstrap replica of member 0 (its own scores and binning) is the joined histogram when the ensemble
    has that one member: the same bins, counts and log ratios."""
    from sbi_core.data.likelihood_arrays import read_arrays
    from sbi_core.inference.datasets import DatasetInfo
    from sbi_core.layout import RunLayout
    from sbi_core.runs import load_run

    run, _ = sally_fit
    layout, cfg, plan = load_run(run)
    data, mc = sally.member_arrays(layout, cfg, plan, DatasetInfo.load(layout, "pseudo"), 0)
    joined = read_arrays(RunLayout(run).likelihood("pseudo", "sally"))
    assert data.nuisance == joined.nuisance
    np.testing.assert_array_equal(data.weight, joined.weight)
    np.testing.assert_allclose(data.log_ratio, joined.log_ratio, rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="1 members, member 1"):
        sally.member_arrays(layout, cfg, plan, DatasetInfo.load(layout, "pseudo"), 1)


def test_a_sally_likelihood_exports_as_its_histograms(sally_fit, tmp_path):
    """export-likelihood writes the binned arrays (no networks needed) and the numpy reader gives the pipeline's
    NLL, the per-bin staterrors included."""
    import nsbi_likelihood
    from sbi_core.inference.steps import load_model
    from sbi_core.publish.artefact import export_likelihood
    from sbi_core.runs import load_run

    run, out = sally_fit
    summary = export_likelihood(run, str(tmp_path / "lik"))
    assert summary["source"] == "sally" and summary["networks"] == 0
    layout, cfg, _ = load_run(run)
    model = load_model(layout, cfg)
    lik = nsbi_likelihood.load(str(tmp_path / "lik"))
    p = np.array([out["fit"]["values"][n] for n in model.names]) + 0.01
    assert lik.nll(p) == pytest.approx(model.value(p), rel=1e-10)
