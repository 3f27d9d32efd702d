"""The study mechanism with a cheap kind (`bisect`, tests/studies/bisect_kind.py): rounds, idempotent steps,
failed points recorded, the bounds (max_rounds, budget, tolerance, stop flag), `study --show`, refused configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tests.studies.bisect_kind  # noqa: F401 - registers the kind in this process
from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.studies import steps
from sbi_core.studies.layout import StudyLayout
from sbi_core.studies.state import StudyState
from sbi_core.studies.study import StudyConfigError

PLUGIN = {"SBI_STUDY_PLUGINS": "tests.studies.bisect_kind"}
BASE = ["kind=bisect", "points_per_round=3", "tolerance=0.01", "options.target=0.37"]


def one_round(uri: str) -> dict:
    state = steps.read_state(StudyLayout(uri))
    planned = steps.plan(uri, state.round)
    steps.work(uri, state.round, planned["items"])
    return steps.aggregate(uri, state.round)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and "/work/" not in str(p)}


def test_rounds_until_the_tolerance_then_finish(tmp_path):
    uri = str(tmp_path / "s")
    assert steps.create(uri, None, BASE)["created"]
    summaries = [one_round(uri)]
    while summaries[-1]["decision"] == "continue":
        summaries.append(one_round(uri))
    assert [s["round"] for s in summaries] == [1, 2, 3, 4]  # the bracket shrinks 4x a round: 1/256 < 0.01
    assert summaries[-1]["status"] == "finished" and summaries[-1]["reason"].startswith("converged")
    assert summaries[0]["next_run_id"] == f"study-{Path(uri).name}-round-0002"
    state = steps.read_state(StudyLayout(uri))
    assert (state.round, state.rounds, state.budget_used) == (5, 4, 12.0)
    history = storage.read_json(StudyLayout(uri).history)
    assert [(e["round"], e["point"]) for e in history][:4] == [(1, "x01-0"), (1, "x01-1"), (1, "x01-2"), (2, "x02-0")]
    lo, hi = state.kind["bracket"]
    assert lo <= 0.37 <= hi and hi - lo < 0.01
    done = steps.finish(uri)
    assert done["headline"]["root"] == pytest.approx(0.37, abs=0.005)
    assert json.loads((tmp_path / "s" / "results.json").read_text())["rounds"] == 4


def test_every_step_is_idempotent(tmp_path):
    uri = str(tmp_path / "s")
    steps.create(uri, None, BASE)
    assert not steps.create(uri, None, BASE)["created"]  # the same config again: nothing changes
    assert not steps.create(uri)["created"]  # no config: continue the existing study
    with pytest.raises(InputError, match="another config"):
        steps.create(uri, None, [*BASE, "seed=5"])
    first = steps.plan(uri)
    assert steps.plan(uri) == first == steps.plan(uri, 1)
    steps.work(uri, 1, first["items"])
    work = (tmp_path / "s" / "rounds" / "round-0001" / "work" / "x01-0.json").read_bytes()
    again = steps.work(uri, 1, first["items"][:1])
    assert again["items"][0]["skipped"] and (tmp_path / "s" / "rounds" / "round-0001" / "work" /
                                             "x01-0.json").read_bytes() == work
    agg = steps.aggregate(uri, 1)
    before = files(tmp_path / "s")
    repeated = steps.aggregate(uri, 1)  # a retried aggregate: the stored decision, nothing counted twice
    assert repeated["repeated"] and {k: v for k, v in repeated.items() if k != "repeated"} == \
        {k: v for k, v in agg.items() if k != "repeated"}
    assert files(tmp_path / "s") == before
    assert steps.plan(uri, 1) == first  # an old round keeps its plan
    with pytest.raises(InputError, match="round 3 cannot be planned"):
        steps.plan(uri, 3)
    with pytest.raises(InputError, match="round 2 is not planned"):
        steps.work(uri, 2, ["x02-0"])


def test_a_failed_point_is_recorded_and_the_study_goes_on(tmp_path):
    uri = str(tmp_path / "s")
    steps.create(uri, None, [*BASE, "options.fail_at=[0.5]"])
    out = one_round(uri)
    assert out["decision"] == "continue" and out["failed"] == ["x01-1"]
    entry = next(e for e in storage.read_json(StudyLayout(uri).history) if e["point"] == "x01-1")
    assert entry["ok"] is False and "undefined at x=0.5" in entry["reason"]
    assert steps.read_state(StudyLayout(uri)).kind["bracket"] == [0.25, 0.75]  # from the points that worked


def test_a_crash_is_not_a_failed_point(tmp_path):
    uri = str(tmp_path / "s")
    steps.create(uri, None, [*BASE, "options.crash_at=[0.25]"])
    planned = steps.plan(uri)
    with pytest.raises(RuntimeError, match="a bug"):
        steps.work(uri, 1, planned["items"])
    with pytest.raises(InputError, match=r"items \['x01-0', 'x01-1', 'x01-2'\] have no result"):
        steps.aggregate(uri, 1)


@pytest.mark.parametrize(("setting", "reason", "rounds"), [
    ("max_rounds=2", "max_rounds reached (2 of 2)", 2),
    ("budget=7", "budget spent (6 of 7 evaluations)", 2),  # round 3 would need 3 more: 1 fits, then spent
])
def test_the_bounds_end_a_study(tmp_path, setting, reason, rounds):
    uri = str(tmp_path / "s")
    steps.create(uri, None, [*BASE, setting])
    out = [one_round(uri) for _ in range(rounds)][-1]
    if setting.startswith("budget"):
        assert out["decision"] == "continue"
        out = one_round(uri)
        assert steps.read_state(StudyLayout(uri)).budget_used == 7.0
        reason = "budget spent (7 of 7 evaluations)"
    assert out["decision"] == "finish" and out["status"] == "finished" and out["reason"].startswith(reason)
    assert steps.plan(uri)["items"] == []  # an ended study plans nothing


def test_the_stop_flag_ends_the_study_at_the_next_aggregate(tmp_path):
    uri = str(tmp_path / "s")
    steps.create(uri, None, BASE)
    one_round(uri)
    steps.stop(uri, "enough for tonight")
    out = one_round(uri)  # a round planned after the flag: no work, then stopped
    assert out["status"] == "stopped" and "enough for tonight" in out["reason"]
    assert StudyState.from_json(storage.read_json(StudyLayout(uri).state)).status == "stopped"
    assert steps.finish(uri)["status"] == "stopped"


def test_show_tells_where_it_stands(tmp_path, cli):
    uri = str(tmp_path / "s")
    steps.create(uri, None, [*BASE, "options.fail_at=[0.5]"])
    one_round(uri)
    planned = steps.plan(uri)
    steps.work(uri, 2, planned["items"][:1])
    steps.stop(uri, "maintenance")
    out = cli("study", "--show", uri, env=PLUGIN)
    assert out.returncode == 0, out.stderr
    summary = out.summary
    assert summary["status"] == "running" and summary["pending"]["done"] == 1 and summary["stop_flag"] == "maintenance"
    assert "round 2 planned, 1 of 3 items done" in out.stderr and "stop flag set (maintenance)" in out.stderr
    assert "FAILED: f is undefined at x=0.5" in out.stderr and "bracket [0.25, 0.75]" in out.stderr


@pytest.mark.parametrize(("overrides", "field"), [
    (["kind=bisect", "budget=-5"], "budget"),
    (["kind=bisect", "max_rounds=0"], "max_rounds"),
    (["kind=nope"], "kind: unknown study kind 'nope'"),
    (["kind=bisect", "options.target=3.0"], "options.target: must lie inside"),
    (["kind=bisect", "options.colour=red"], "options.colour: unknown key"),
    (["kind=bisect", "name=has space"], "name:"),
])
def test_bad_configs_are_refused_before_anything_is_written(tmp_path, overrides, field):
    uri = tmp_path / "s"
    with pytest.raises(StudyConfigError, match="invalid study config") as err:
        steps.create(str(uri), None, overrides)
    assert field in str(err.value)
    assert not uri.exists()


def test_the_cli_exits_2_naming_every_bad_field(tmp_path, cli):
    uri = tmp_path / "s"
    out = cli("study", "--create", "--study", str(uri), "--set", "kind=bisect", "--set", "budget=-5", "--set",
              "seed=-1", env=PLUGIN)
    assert out.returncode == 2, out.stderr
    assert "invalid study config" in out.stderr and "budget:" in out.stderr and "seed:" in out.stderr
    assert not uri.exists()
