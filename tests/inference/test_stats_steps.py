"""The statistics steps on the benchmark model with exact arrays: scan -> limits, toys, report.

One run derived from the session's `small_run` (6000 events): pseudo-data at the true values (cW, cHW) =
(0.3, -0.2), L = 200/pb (~1250 events), lumi and energy_scale floating, MC normalisation; scans of cW and
cHW (9 points each, best fit +- 5 errors) and of (cW, cHW) on a 9 x 9 grid, in 3 mapped blocks; 20 toys in 2
blocks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sbi_core import steps as data_steps
from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.inference import stats_steps, steps
from sbi_core.inference.asymptotics import wilks_threshold
from sbi_core.inference.fit import minimize
from sbi_core.inference.intervals import region_contains
from sbi_core.layout import RunLayout

TRUTH = {"cW": 0.3, "cHW": -0.2}
SETTINGS = ["inference.scan.points=9", "inference.scan.parameters=[[cW], [cHW], [cW, cHW]]", "inference.scan.blocks=3",
            "inference.toys.n=20", "inference.toys.batch=10", "inference.toys.seed=5"]


@pytest.fixture(scope="module")
def run(small_run, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("stats") / "run")
    data_steps.derive(str(small_run), run, SETTINGS)
    ds = steps.dataset(run)
    steps.likelihood(run, [int(b) for b in ds["likelihood_batches"]])
    steps.likelihood_join(run)
    fit = steps.fit(run)
    for rows in fit["hessian_blocks"]:
        steps.hessian(run, rows)
    out = {"assemble": steps.assemble(run)}
    out["scan"] = [stats_steps.scan(run, block) for block in out["assemble"]["scan_blocks"]]
    out["limits"] = stats_steps.limits(run)
    out["toys"] = [stats_steps.toys(run, block) for block in out["assemble"]["toy_blocks"]]
    out["report"] = stats_steps.report(run)
    return run, out


def test_scan_blocks_cover_the_grid(run):
    path, out = run
    assert out["assemble"]["scan_blocks"] == ["0:33", "33:66", "66:99"]  # 9 + 9 + 81 points
    assert [s["n_points"] for s in out["scan"]] == [33, 33, 33]
    assert all(s["invalid"] == 0 for s in out["scan"])
    rec = storage.read_json(RunLayout(path).scan_block(0, 33))
    assert [p["index"] for p in rec["points"]] == list(range(33))
    # points 0..8 scan cW over the best fit +- 5 errors (scan.width), 9..17 cHW
    fit = storage.read_json(RunLayout(path).fit)
    c, e = fit["values"]["cW"], fit["errors"]["cW"]
    assert [p["at"]["cW"] for p in rec["points"][:9]] == pytest.approx(np.linspace(c - 5 * e, c + 5 * e, 9).tolist())
    assert [set(p["at"]) for p in rec["points"][8:10]] == [{"cW"}, {"cHW"}]


def test_profile_point_matches_a_direct_constrained_fit(run):
    """A scan point (warm-started from its neighbour) equals a cold constrained fit from the reference point."""
    path, _ = run
    layout, cfg, _ = data_steps.load_run(path)
    model = steps.load_model(layout, cfg)
    rec = storage.read_json(layout.scan_block(0, 33))
    for p in (rec["points"][3], rec["points"][6], rec["points"][12]):
        direct = minimize(model, start={"cW": 0.0, "cHW": 0.0}, fixed=p["at"], errors=False)
        assert direct.valid and p["observed"]["valid"]
        assert p["observed"]["nll"] == pytest.approx(direct.nll, abs=2e-4)  # Migrad's EDM goal is 1e-4
        for name, value in direct.values.items():
            assert p["observed"]["values"][name] == pytest.approx(value, abs=5e-3)


def test_intervals_are_profile_crossings(run):
    """Observed 1D intervals: the profile at each end sits at the Wilks threshold; the expected (Asimov at the
    truth, MC normalisation: its minimum is exactly the truth) ones are centred on the truth."""
    path, out = run
    layout, cfg, _ = data_steps.load_run(path)
    lim = storage.read_json(layout.limits)
    model = steps.load_model(layout, cfg)
    fit = storage.read_json(layout.fit)
    exp_fit = lim["expected_fit"]
    for name, true in TRUTH.items():
        assert exp_fit["values"][name] == pytest.approx(true, abs=1e-3 * exp_fit["errors"][name] + 1e-5)
    for s in lim["scans"]:
        if len(s["parameters"]) != 1:
            continue
        name = s["parameters"][0]
        for kind in ("observed", "expected"):
            for iv in s[kind]["intervals"]:
                assert iv["method"] == "profile" and not iv["lo_open"] and not iv["hi_open"]
                assert iv["threshold_dnll"] == pytest.approx(wilks_threshold(iv["level"]))
        for iv in s["observed"]["intervals"]:
            assert iv["lo"] < fit["values"][name] < iv["hi"]
            for end in (iv["lo"], iv["hi"]):
                p = minimize(model, start=fit["values"], fixed={name: end}, errors=False)
                assert p.nll - fit["nll"] == pytest.approx(iv["threshold_dnll"], abs=2e-3)
        lo68, hi68 = s["expected"]["intervals"][0]["lo"], s["expected"]["intervals"][0]["hi"]
        assert lo68 < TRUTH[name] < hi68
        # the expected 68% half-width is the Asimov error to within the profile's asymmetry (seen: < 10%)
        assert (hi68 - lo68) / 2 == pytest.approx(math.sqrt(2 * wilks_threshold(0.68)) * exp_fit["errors"][name],
                                                  rel=0.15)
    assert out["limits"]["intervals"]["cW"]["level"] == 0.68


def test_two_dimensional_contours_enclose_the_truth(run):
    path, _ = run
    lim = storage.read_json(RunLayout(path).limits)
    (s,) = [s for s in lim["scans"] if len(s["parameters"]) == 2]
    x, y = (np.asarray(a) for a in s["axes"])
    for kind in ("observed", "expected"):
        dnll = np.array([[np.nan if v is None else v for v in row] for row in s[kind]["dnll"]])
        assert dnll.shape == (9, 9) and np.nanmin(dnll) >= -1e-6
        for c in s[kind]["contours"]:
            assert c["lines"], (kind, c["level"])
    # Asimov data at the truth: the truth is the minimum, inside every contour
    assert s["expected"]["truth_inside"] == {"0.68": True, "0.95": True}
    # the observed 95% region holds the truth (pseudo-data at the truth; 5% of datasets would not)
    assert s["observed"]["truth_inside"]["0.95"] is True
    obs = np.array([[np.nan if v is None else v for v in row] for row in s["observed"]["dnll"]])
    assert region_contains(x, y, obs, 0.95, (0.3, -0.2))


def test_cls_upper_limits(run):
    """Default limits: every POI whose range holds 0, null 0. The observed limit is where CLs = 0.05; the
    expected band is ordered; with the data at cW = 0.3 the observed cW limit lies above the expected median."""
    path, out = run
    lim = storage.read_json(RunLayout(path).limits)
    by_poi = {u["poi"]: u for u in lim["limits"]}
    assert set(by_poi) == {"cW", "cHW"}
    for u in by_poi.values():
        assert u["null"] == 0.0 and u["level"] == 0.95 and u["valid"]
        bands = [u["expected"][k] for k in ("-2", "-1", "0", "+1", "+2")]
        assert bands == sorted(bands) and 0 < bands[0]
        if not u["observed_open"]:
            closest = min(u["tested"], key=lambda t: abs(t["mu"] - u["observed"]))
            assert closest["cls"] == pytest.approx(0.05, rel=1e-3)
    assert by_poi["cW"]["observed"] > by_poi["cW"]["expected"]["0"]
    assert out["limits"]["upper_limits"]["cW"]["observed"] == by_poi["cW"]["observed"]


def test_toys_and_report(run):
    path, out = run
    layout = RunLayout(path)
    assert [t["n_toys"] for t in out["toys"]] == [10, 10]
    blk = storage.read_json(layout.toy_block(0, 10))
    assert blk["tests"] == ["cW", "cHW", "cW,cHW"] and blk["point"]["cW"] == 0.3
    assert all(t["dnll"]["cW,cHW"] >= max(t["dnll"]["cW"], t["dnll"]["cHW"]) - 1e-6 for t in blk["toys"])
    rep = out["report"]
    res = storage.read_json(layout.results)
    assert rep["results"] == layout.results and res["toys"]["n"] == 20
    assert set(res) >= {"best_fit", "covariance", "correlation", "pulls", "impacts", "intervals", "contours",
                        "upper_limits", "validity", "toys"}
    assert res["validity"]["fit"] is True
    assert rep["best_fit"] == {k: res["best_fit"]["values"][k] for k in TRUTH}
    assert set(rep["plots"]) >= {"scan_cW", "scan_cHW", "contour_cW_cHW", "correlation", "pulls", "impacts_cW",
                                 "toys_cW", "toys_cW_cHW"}
    for uri in rep["plots"].values():
        assert storage.read_bytes(uri)[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_are_named(run, small_run, tmp_path):
    path, _ = run
    with pytest.raises(InputError, match=r"--points 0:500: expected 0 <= A < B <= 99"):
        stats_steps.scan(path, "0:500")
    with pytest.raises(InputError, match=r"--toys 5:50: expected 0 <= A < B <= 20"):
        stats_steps.toys(path, "5:50")
    fresh = str(tmp_path / "fresh")
    data_steps.derive(str(small_run), fresh, SETTINGS)
    with pytest.raises(InputError, match="run `sbi-core fit` first"):
        stats_steps.limits(fresh)


def test_report_command_prints_one_summary_line(run, cli):
    path, _ = run
    res = cli("report", "--run", path)
    assert res.returncode == 0, res.stderr
    summary = res.summary
    assert summary["step"] == "report" and summary["valid"] is True
    assert set(summary["intervals"]) == {"cW", "cHW"} and set(summary["upper_limits"]) == {"cW", "cHW"}
    bad = cli("scan", "--run", path, "--points", "x")
    assert bad.returncode == 2 and "--points 'x': expected A:B" in bad.stderr


def test_report_of_a_fit_alone(run, tmp_path):
    """Before any scan, Hessian or toy: results hold the fit and the pulls, and only the pulls are plotted."""
    from sbi_core.inference.report import build_results, headline, make_plots

    path, _ = run
    layout, cfg, _ = data_steps.load_run(path)
    res = build_results(cfg, storage.read_json(layout.fit), None, None, None)
    assert res["best_fit"]["errors_from"] == "fit" and set(res["pulls"]) == {"lumi", "energy_scale"}
    assert "intervals" not in res and headline(res)["valid"] is True
    plots = make_plots(res, None, None, lambda name: str(tmp_path / f"{name}.png"))
    assert list(plots) == ["pulls"]
