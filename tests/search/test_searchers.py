"""The searchers: deterministic from stored history, JSON-native points, failures kept, bad spaces refused."""

from __future__ import annotations

import json
import math

import pytest

from sbi_core.errors import ConfigError, InputError
from sbi_core.search import (
    best_trial,
    history_from_json,
    make_searcher,
    parse_search,
)

MIXED = {
    "space": {
        "learning_rate": {"type": "real", "low": 1e-4, "high": 1e-1, "log": True},
        "layers": {"type": "integer", "low": 1, "high": 4},
        "width": {"type": "integer", "low": 8, "high": 256, "log": True},
        "activation": {"type": "categorical", "choices": ["tanh", "relu", "silu"]},
    },
    "initial_points": 4,
    "seed": 7,
}
PLANE = {"space": {"x": {"type": "real", "low": -1.0, "high": 1.0}, "y": {"type": "real", "low": -1.0, "high": 1.0}},
         "initial_points": 6, "seed": 3}


def mixed_value(p: dict) -> float:
    return ((math.log10(p["learning_rate"]) + 2.5) ** 2 + 0.1 * p["layers"] + 0.2 * abs(math.log2(p["width"] / 64))
            + {"tanh": 0.0, "relu": 0.3, "silu": 0.1}[p["activation"]])


def bowl(p: dict) -> float:
    """A smooth bowl with its minimum 0 at (0.3, -0.2): the known answer of the convergence test."""
    return (p["x"] - 0.3) ** 2 + 2.0 * (p["y"] + 0.2) ** 2


def run_rounds(spec: dict, method: str, rounds: int, k: int, f, goal: str = "minimize") -> list[dict]:
    """Rounds of ask k / tell k, the searcher rebuilt each round from the JSON history (as a study does)."""
    options = parse_search({**spec, "method": method})
    history: list[dict] = []
    for _ in range(rounds):
        searcher = make_searcher(options, history_from_json(json.loads(json.dumps(history)), options.search_space),
                                 goal)
        points = searcher.ask(k)
        searcher.tell(points, [f(p) for p in points])
        history = searcher.history()
    return history


@pytest.mark.parametrize("method", ["bayes", "random"])
def test_the_same_history_and_seed_ask_the_same_points(method):
    """A searcher rebuilt from the stored JSON history asks exactly what the first one asked, twice over (bayes:
    past its initial design of 4, so the Gaussian process asks)."""
    history = run_rounds(MIXED, method, rounds=2, k=2, f=mixed_value)
    options = parse_search({**MIXED, "method": method})
    first = make_searcher(options, history_from_json(history, options.search_space)).ask(2)
    again = make_searcher(options, history_from_json(json.loads(json.dumps(history)), options.search_space))
    assert again.ask(2) == first
    assert again.ask(2) == first  # asking without telling changes nothing
    other = make_searcher(parse_search({**MIXED, "method": method, "seed": 8}),
                          history_from_json(history, options.search_space)).ask(2)
    assert other != first


@pytest.mark.parametrize("method", ["bayes", "random"])
def test_points_are_plain_json_inside_the_space(method):
    history = run_rounds(MIXED, method, rounds=2, k=2, f=mixed_value)
    options = parse_search({**MIXED, "method": method})
    for point in [h["point"] for h in history] + make_searcher(options, history_from_json(
            history, options.search_space)).ask(2):
        assert type(point["learning_rate"]) is float and 1e-4 <= point["learning_rate"] <= 1e-1
        assert type(point["layers"]) is int and 1 <= point["layers"] <= 4
        assert type(point["width"]) is int and 8 <= point["width"] <= 256
        assert type(point["activation"]) is str and point["activation"] in ("tanh", "relu", "silu")
    assert json.loads(json.dumps(history)) == history


@pytest.mark.slow
def test_bayes_finds_the_minimum_of_a_bowl_and_beats_random_search():
    """Known answer: minimum 0 at (0.3, -0.2). 15 evaluations (6 design + 3 rounds of 3): the Gaussian process
    gets within 0.05 of it (value < 2.5e-3) and below the best of random search at the same budget."""
    bayes = run_rounds(PLANE, "bayes", rounds=5, k=3, f=bowl)
    rand = run_rounds(PLANE, "random", rounds=5, k=3, f=bowl)
    assert len(bayes) == len(rand) == 15
    best_b = min(h["value"] for h in bayes)
    best_r = min(h["value"] for h in rand)
    assert best_b < 2.5e-3, best_b
    assert best_b < best_r, (best_b, best_r)


def test_maximize_goal_and_failed_trials():
    """goal=maximize asks towards the maximum; failed points stay in the history with their reason, count at
    the worst value, and are not asked again."""
    options = parse_search(PLANE)
    searcher = make_searcher(options, goal="maximize")
    points = searcher.ask(6)
    values = [-bowl(p) for p in points]
    values[2] = None
    searcher.tell(points, values, reasons=["", "", "fit did not converge", "", "", ""])
    assert searcher.trials[2].reason == "fit did not converge" and not searcher.trials[2].ok
    rebuilt = make_searcher(options, history_from_json(searcher.history(), options.search_space), goal="maximize")
    asked = rebuilt.ask(3)
    assert all(p != points[2] for p in asked)
    assert best_trial(rebuilt.trials, "maximize").value == max(v for v in values if v is not None)
    assert rebuilt.best().value == max(v for v in values if v is not None)


def test_bayes_with_every_trial_failed_still_asks():
    options = parse_search({**PLANE, "initial_points": 2})
    searcher = make_searcher(options)
    points = searcher.ask(2)
    searcher.tell(points, [None, float("nan")])
    assert [t.ok for t in searcher.trials] == [False, False]
    assert "not finite" in searcher.trials[1].reason
    asked = make_searcher(options, searcher.trials).ask(2)
    assert len(asked) == 2 and asked[0] != asked[1]


def test_small_discrete_space_does_not_repeat_points():
    """Two categorical dimensions: 6 points in all. Past the design, repeats are replaced by untried points."""
    spec = {"space": {"a": {"type": "categorical", "choices": ["x", "y", "z"]},
                      "b": {"type": "categorical", "choices": [1, 2]}}, "initial_points": 2, "seed": 1}
    history = run_rounds(spec, "bayes", rounds=2, k=2, f=lambda p: {"x": 0.0, "y": 1.0, "z": 2.0}[p["a"]] + p["b"])
    seen = [tuple(h["point"].values()) for h in history]
    assert len(set(seen)) == len(seen) == 4


@pytest.mark.parametrize(("spec", "field"), [
    ({"space": {}}, "search.space"),
    ({"space": {"lr": {"type": "real", "low": 0.0, "high": 0.1, "log": True}}}, "search.space.lr"),
    ({"space": {"lr": {"type": "real", "low": 0.1, "high": 0.1}}}, "search.space.lr"),
    ({"space": {"layers": {"type": "integer", "low": 4, "high": 1}}}, "search.space.layers"),
    ({"space": {"layers": {"type": "integer", "low": 1.5, "high": 4}}}, "search.space.layers"),
    ({"space": {"act": {"type": "categorical", "choices": ["tanh"]}}}, "search.space.act"),
    ({"space": {"act": {"type": "categorical", "choices": ["tanh", 1]}}}, "search.space.act"),
    ({"space": {"act": {"type": "categorical", "choices": ["tanh", "tanh"]}}}, "search.space.act"),
    ({"space": {"act": {"type": "colour", "choices": ["tanh", "relu"]}}}, "search.space.act"),
    ({"space": {"lr": {"type": "real", "low": "0", "high": 1.0}}}, "search.space.lr"),
    ({"space": {"lr": {"type": "real", "low": 0.0, "high": 1.0, "prior": "log"}}}, "search.space.lr"),
    ({"space": {"lr": {"type": "real", "low": 0.0, "high": 1.0}}, "method": "grid"}, "search.method"),
    ({"space": {"lr": {"type": "real", "low": 0.0, "high": 1.0}}, "initial_points": 0}, "search.initial_points"),
])
def test_bad_search_spaces_are_refused_naming_the_field(spec, field):
    with pytest.raises(ConfigError) as info:
        parse_search(spec)
    assert isinstance(info.value, InputError)  # exit code 2 from any step
    assert any(path.startswith(field) for path, _ in info.value.issues), info.value.issues


def test_a_history_outside_the_space_is_refused_naming_the_entry():
    options = parse_search(PLANE)
    with pytest.raises(InputError, match=r"history\[1\]\.point\.x"):
        history_from_json([{"point": {"x": 0.0, "y": 0.0}, "value": 1.0},
                           {"point": {"x": 2.0, "y": 0.0}, "value": 1.0}], options.search_space)
    with pytest.raises(InputError, match=r"history\[0\]\.value"):
        history_from_json([{"point": {"x": 0.0, "y": 0.0}, "value": "1"}], options.search_space)
    with pytest.raises(InputError, match="dimension 'y' is missing"):
        history_from_json([{"point": {"x": 0.0}, "value": 1.0}], options.search_space)
