"""The toy_limits kind on a one-bin counting experiment, whose CLs is known exactly:
CLs(mu) = P(n <= n_obs | mu s + b) / P(n <= n_obs | b). Every tested value's CLs from toys agrees with it
within the Monte Carlo error, and the refined limit with the exact limit within the study's tolerance. Then the
configs it refuses (exit 2, the field named, nothing written)."""

from __future__ import annotations

import json

import pytest
from scipy import optimize, stats

from sbi_core import storage
from sbi_core.inference.counting import CountingExperiment
from sbi_core.inference.limits import AsymptoticCLs
from sbi_core.studies import steps
from sbi_core.studies.cls_scan import ScanPoint
from sbi_core.studies.layout import StudyLayout
from sbi_core.studies.study import StudyConfigError, read_study_data, validate_study
from tests.conftest import BENCHMARK_CONFIG

N_OBS, S, B = 12, 5.0, 10.0
TOLERANCE = 0.15  # the limit (about 2) located to 7.5%: about 5000 toys
COUNTING = ["kind=toy_limits", "seed=2024", f"tolerance={TOLERANCE}", "budget=60000", "max_rounds=12",
            "points_per_round=3", "options.model=counting", "options.upper=4.0", "options.grid_points=4",
            "options.toys=200", "options.toys_per_task=200",
            f"options.counting={{observed: {N_OBS}, signal: {S}, background: {B}}}"]


def exact_cls(mu: float) -> float:
    return stats.poisson.cdf(N_OBS, mu * S + B) / stats.poisson.cdf(N_OBS, B)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("toys") / "counting")
    steps.create(uri, None, COUNTING)
    steps.drive(uri)
    return uri


def test_toy_cls_agrees_with_the_exact_cls(finished):
    state = steps.read_state(StudyLayout(finished))
    points = [ScanPoint.from_json(p) for p in state.kind["points"]]
    pulls = []
    for p in points:
        cls, err = p.cls
        pulls.append((cls - exact_cls(p.mu)) / err)
        assert abs(pulls[-1]) < 3.5, (p.mu, cls, err, exact_cls(p.mu))
    # together: the squared pulls are chi2-distributed (99.9% quantile), so the errors are not too small either
    assert sum(x * x for x in pulls) < stats.chi2.ppf(0.999, len(pulls)), pulls
    assert len(points) >= 6 and state.rounds >= 2


def test_the_refined_limit_is_the_exact_limit_within_the_tolerance(finished):
    exact = optimize.brentq(lambda m: exact_cls(m) - 0.05, 0.1, 4.0)
    res = json.loads(storage.read_text(StudyLayout(finished).results))
    assert res["status"] == "finished" and res["reason"].startswith("converged"), res["reason"]
    lim = res["limit"]
    assert 2 * lim["error"] <= TOLERANCE
    assert abs(lim["value"] - exact) <= TOLERANCE, (lim, exact)
    # the toys used, and the asymptotic limit of the same model beside it
    assert res["budget_used"] == lim["toys"] == sum(p["toys_sb"] + p["toys_b"] for p in res["points"])
    direct = AsymptoticCLs(CountingExperiment(N_OBS, S, B), "mu", CountingExperiment(B, S, B), upper=4.0)
    assert res["asymptotic"]["observed"] == pytest.approx(direct.upper_limit(0.95).observed, rel=1e-5)
    assert res["headline"]["asymptotic_expected"] == pytest.approx(direct.upper_limit(0.95).expected["0"], rel=1e-5)
    assert storage.read_bytes(res["plots"]["cls"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_lists_every_tested_value(finished, capsys):
    out = steps.show(finished)
    text = capsys.readouterr().out
    assert out["status"] == "finished" and "converged" in text
    state = steps.read_state(StudyLayout(finished))
    assert text.count(" p0") >= len(state.kind["points"])  # a row per tested value (and history rows)


def _issues(overrides: list[str], config: str | None = None) -> str:
    data, source = read_study_data(config, overrides)
    with pytest.raises(StudyConfigError) as err:
        validate_study(data, source, StudyLayout("/nonexistent/study"))
    return str(err.value)


def test_bad_configs_are_refused_naming_the_field(small_run):
    counting = [o for o in COUNTING if not o.startswith("budget")]
    assert "budget" in _issues([*counting, "budget=-5"])
    msg = _issues([*counting, "options.grid=[]", "options.colour=red"])
    assert "options.grid" in msg and "options.colour: unknown key" in msg
    assert "options.grid: values [5.0] lie outside the tested range (0.0, 4.0]" in _issues([*counting,
                                                                                            "options.grid=[1.0, 5.0]"])
    assert "budget: 100 toys do not cover round 1" in _issues([*counting, "budget=100"])
    assert "options.upper: a counting experiment needs" in _issues([o for o in counting if "upper" not in o])
    assert "model counting needs the counting section" in _issues(["kind=toy_limits", "options.model=counting"])
    run = ["kind=toy_limits", f"run={small_run}", "options.poi=cX"]
    assert "options.poi: unknown parameter 'cX'; the run's parameters of interest: ['cW', 'cHW']" in _issues(run)
    msg = _issues(["kind=toy_limits", f"run={small_run}", "options.poi=cW", "options.grid=[0.5, 1.5]"])
    assert "options.grid: 1.5 lies outside cW's range [-1.0, 1.0]" in msg
    assert "run: " in msg and "likelihood --join" in msg  # the run has no likelihood arrays yet
    assert "run: " in _issues(["kind=toy_limits", f"run={small_run}/nothing-here", "options.poi=cW"])


def test_the_cli_refuses_with_exit_2_before_any_round(tmp_path, cli, small_run):
    study = tmp_path / "study"
    out = cli("study", "--create", "--study", str(study), "--config", str(BENCHMARK_CONFIG))
    assert out.returncode == 2 and "invalid study config" in out.stderr and "kind" in out.stderr  # not a study
    out = cli("study", "--create", "--study", str(study), "--set", "kind=toy_limits", "--set", f"run={small_run}",
              "--set", "options.poi=cW", "--set", "options.grid=[-0.5]", "--set", "budget=0")
    assert out.returncode == 2, out.stderr
    assert "budget: Input should be greater than or equal to 1" in out.stderr
    assert not study.exists()
