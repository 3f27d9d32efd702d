"""The inference steps on the benchmark model with exact arrays: closure of the fit, the Hessian, bad inputs.

All runs are derived from the session's `small_run` (6000 benchmark events; `sbi-core derive` reads its
events, so nothing is simulated here). The pseudo-data are ~1250 events at the config's true values
(cW = 0.3, cHW = -0.2), L = 200/pb.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sbi_core import steps as data_steps
from sbi_core.data.likelihood_arrays import read_arrays
from sbi_core.errors import InputError
from sbi_core.inference import steps
from sbi_core.inference.datasets import DatasetInfo
from sbi_core.inference.exact import exact_log_ratios
from sbi_core.layout import RunLayout
from sbi_core.physics.registry import make_simulator

TRUTH = {"cW": 0.3, "cHW": -0.2}


def _infer(run: str, hessian: bool = True) -> dict:
    """dataset -> likelihood (every batch) -> join -> fit [-> hessian blocks -> assemble]; the summaries."""
    out = {"dataset": steps.dataset(run)}
    out["likelihood"] = steps.likelihood(run, [int(b) for b in out["dataset"]["likelihood_batches"]])
    out["join"] = steps.likelihood_join(run)
    out["fit"] = steps.fit(run)
    if hessian:
        out["hessian"] = [steps.hessian(run, rows) for rows in out["fit"]["hessian_blocks"]]
        out["assemble"] = steps.assemble(run)
    return out


@pytest.fixture(scope="module")
def pseudo(small_run, tmp_path_factory):
    """Pseudo-data, every nuisance floating; likelihood batches of 2048 events, Hessian blocks of 3."""
    run = str(tmp_path_factory.mktemp("inf") / "pseudo")
    data_steps.derive(str(small_run), run, ["inference.chunk_rows=2048", "inference.hessian_block_rows=3"])
    return run, _infer(run)


def test_summaries_carry_the_mapped_work(pseudo):
    run, out = pseudo
    ds = out["dataset"]
    assert ds["kind"] == "pseudo" and ds["n_events"] > 1000
    n = ds["n_events"]
    # the dataset's events in batches of 2048, then the run's 6000 MC events (normalisation "mc")
    assert ds["likelihood_batches"] == [str(i) for i in range(-(-n // 2048) + 3)]
    assert out["join"]["n_events"] == n and out["join"]["parts"] == len(ds["likelihood_batches"])
    assert out["likelihood"]["n_events"] == n + 6000
    assert out["fit"]["hessian_blocks"] == ["0:3", "3:4"]  # cW, cHW, lumi | energy_scale
    assert out["assemble"]["scan_blocks"] == ["0:10", "10:21", "21:32", "32:42"]  # 2 POIs x 21 points, 4 tasks
    assert out["assemble"]["toy_blocks"] == []


def test_pseudo_data_are_unique_run_events_and_reproducible(pseudo, small_run, tmp_path):
    run, out = pseudo
    layout = RunLayout(run)
    with h5py.File(layout.dataset("pseudo")) as f, h5py.File(RunLayout(str(small_run)).events) as g:
        x = f["samples/observations"][()]
        pool = g["samples/observations"][()]
        assert f.attrs["n_events"] == x.shape[0] == out["dataset"]["n_events"]
    # every pseudo event is a distinct event of the run
    rows = {tuple(r) for r in pool}
    assert len({tuple(r) for r in x}) == x.shape[0] and all(tuple(r) in rows for r in x)
    again = str(tmp_path / "again")
    data_steps.derive(str(small_run), again, ["inference.chunk_rows=2048", "inference.hessian_block_rows=3"])
    steps.dataset(again)
    with h5py.File(RunLayout(again).dataset("pseudo")) as f:
        np.testing.assert_array_equal(f["samples/observations"][()], x)


def test_exact_arrays_agree_with_the_run_weights(pseudo, small_run):
    """sigma_b = E_ref[exp(log_ratio_b)] x sigma_ref: the exact per-event ratios (sigma_tot x density) and the
    weight sums are two estimates of the same fiducial cross sections (seen: within 0.2% at 20k events)."""
    run, _ = pseudo
    layout, cfg, _ = data_steps.load_run(run)
    with h5py.File(RunLayout(str(small_run)).events) as f:
        x, w = f["samples/observations"][()], f["samples/weights"][()]
    log_ratio, log_ratio_var = exact_log_ratios(make_simulator(cfg), cfg, x)
    assert np.all(log_ratio[:, 0] == 0.0)  # the reference benchmark (sm)
    np.testing.assert_allclose((np.exp(log_ratio) * w[:, :1]).sum(0), w[:, :6].sum(0), rtol=0.01)
    np.testing.assert_allclose(log_ratio_var[:, 0], [[np.log1p(0.05), -np.log1p(0.05)]] * len(x))  # lumi
    arrays = read_arrays(layout.likelihood("pseudo", "exact"))
    info = DatasetInfo.load(layout, "pseudo")
    assert arrays.n_events == info.n_events and np.all(arrays.weight == 1.0)
    np.testing.assert_allclose(arrays.xsec, w[:, :6].sum(0), rtol=1e-12)


def test_fit_recovers_the_truth_within_its_errors(pseudo):
    _, out = pseudo
    fit = out["fit"]
    assert fit["valid"] and fit["message"] == "valid"
    for name, true in TRUTH.items():
        pull = (fit["values"][name] - true) / fit["errors"][name]
        assert abs(pull) < 3.0, (name, fit["values"][name], fit["errors"][name])  # seen: 0.4 and -1.1 sigma
        assert 0.02 < fit["errors"][name] < 0.2
    for name in ("lumi", "energy_scale"):  # pulls of the constrained nuisances
        assert abs(fit["values"][name]) < 2.0 and 0.0 < fit["errors"][name] <= 1.0  # seen: 0.1, -0.2


def test_assembled_hessian_matches_the_fit_and_autodiff(pseudo):
    run, out = pseudo
    layout, cfg, _ = data_steps.load_run(run)
    hess = data_steps.storage.read_json(layout.hessian)
    fit = out["fit"]
    for name, err in fit["errors"].items():  # the fit's errors come from the same row-block Hessian
        assert hess["errors"][name] == pytest.approx(err, rel=1e-9)
    model = steps.load_model(layout, cfg)
    x = np.array([fit["values"][n] for n in model.names])
    auto = model.hessian_autodiff(x)
    np.testing.assert_allclose(np.array(hess["hessian"]), auto, rtol=1e-6, atol=1e-6 * np.abs(auto).max())
    corr = np.array(hess["correlation"])
    assert np.allclose(np.diag(corr), 1.0) and np.all(np.abs(corr) <= 1.0 + 1e-12)
    impacts = hess["impacts"]
    assert set(impacts) == {"cW", "cHW"} and set(impacts["cW"]) == {"lumi", "energy_scale"}
    cov = np.array(hess["covariance"])
    assert impacts["cW"]["lumi"]["postfit"] == pytest.approx(cov[0, 2] / np.sqrt(cov[2, 2]))


@pytest.mark.slow
def test_profiling_the_nuisances_widens_the_poi_errors(pseudo, small_run, tmp_path):
    """The same data with both nuisances fixed at 0: every POI error shrinks (or stays)."""
    run = str(tmp_path / "fixed")
    data_steps.derive(str(small_run), run, ["inference.chunk_rows=2048", "inference.fix={lumi: 0, energy_scale: 0}"])
    out = _infer(run, hessian=False)
    floating = pseudo[1]["fit"]
    assert out["fit"]["valid"]
    for name in TRUTH:
        assert out["fit"]["errors"][name] < floating["errors"][name]
        assert abs(out["fit"]["values"][name] - TRUTH[name]) < 3.0 * out["fit"]["errors"][name]
    assert out["fit"]["values"]["lumi"] == 0.0 and out["fit"]["errors"]["energy_scale"] == 0.0


@pytest.mark.slow
def test_asimov_fit_is_at_the_truth(small_run, tmp_path):
    """Asimov data (the run's events weighted to the truth): the minimum is the truth up to the difference
    between the weight-sum and the exact-density descriptions of the same 6000 events (seen: < 0.2 sigma)."""
    run = str(tmp_path / "asimov")
    data_steps.derive(str(small_run), run, ["inference.dataset.kind=asimov"])
    out = _infer(run, hessian=False)
    layout, cfg, _ = data_steps.load_run(run)
    fit = out["fit"]
    assert fit["valid"]
    for name, true in TRUTH.items():
        assert abs(fit["values"][name] - true) < 0.5 * fit["errors"][name]
    # the Asimov weights sum to L sigma_fid(truth) of the weight sums (the same events: exact identity), and
    # the model's expected count (exact density ratios of the same MC events) agrees (seen: 0.07%)
    arrays = read_arrays(layout.likelihood("asimov", "exact"))
    assert out["dataset"]["expected_events"] == pytest.approx(arrays.weight.sum(), rel=1e-9)
    model = steps.load_model(layout, cfg)
    assert arrays.weight.sum() == pytest.approx(model.expected_events(np.array([0.3, -0.2, 0.0, 0.0])), rel=0.01)


def test_bad_inputs_are_named(pseudo, small_run, tmp_path):
    run, _ = pseudo
    with pytest.raises(InputError, match="likelihood batch 99 is outside"):
        steps.likelihood(run, [99])
    with pytest.raises(InputError, match=r"--rows 0:9: expected 0 <= A < B <= 4"):
        steps.hessian(run, "0:9")
    with pytest.raises(InputError, match="--rows: expected A:B"):
        steps.hessian(run, "three")
    fresh = str(tmp_path / "fresh")
    data_steps.derive(str(small_run), fresh, ["inference.luminosity=20000"])
    with pytest.raises(InputError, match="too few for pseudo-data"):
        steps.dataset(fresh)
    with pytest.raises(InputError, match="run `sbi-core dataset` first"):
        steps.fit(fresh)
    other = str(tmp_path / "other")
    with pytest.raises(InputError, match="inference.dataset.uri: events file .*none.h5 not found"):
        data_steps.derive(str(small_run), other,  # refused when the run is made, not at the dataset step
                          ["inference.dataset.kind=file", f"inference.dataset.uri={tmp_path}/none.h5"])
    blocks = str(tmp_path / "blocks")
    data_steps.derive(str(small_run), blocks, ["inference.chunk_rows=2048"])
    ds = steps.dataset(blocks)
    steps.likelihood(blocks, [0])
    with pytest.raises(InputError, match=rf"{len(ds['likelihood_batches']) - 1} of {len(ds['likelihood_batches'])} "
                                         "parts are missing"):
        steps.likelihood_join(blocks)


def test_observed_file_dataset_and_cli_exit_codes(small_run, tmp_path, cli):
    """kind file: any events file of the analysis (here the run's own); the CLI: one JSON line, exit 2 on bad input."""
    run = str(tmp_path / "observed")
    events = RunLayout(str(small_run)).events
    data_steps.derive(str(small_run), run, ["inference.dataset.kind=file", f"inference.dataset.uri={events}",
                                            "inference.normalization=xsec"])
    res = cli("dataset", "--run", run)
    assert res.returncode == 0, res.stderr
    summary = res.summary
    assert summary["step"] == "dataset" and summary["kind"] == "file" and summary["events"] == events
    assert summary["n_events"] == 6000 and summary["likelihood_batches"] == ["0"]  # xsec: no MC batches
    bad = cli("hessian", "--run", run, "--rows", "4:2")  # before any fit: the message says what to run
    assert bad.returncode == 2 and "run `sbi-core fit` first" in bad.stderr and bad.stdout == ""
