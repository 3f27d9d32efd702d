"""The streaming unweighter and the event split: exact multinomial draws, any chunking, disjoint labels."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_core.ml.unweighting import Unweighter, split_labels


def draw(weights: np.ndarray, u: np.ndarray, chunk: int) -> tuple[np.ndarray, Unweighter]:
    uw = Unweighter(1)
    uw.request(0, u)
    pools = np.array([0])
    for phase in (1, 2):
        if phase == 2:
            uw.start_selection()
        for a in range(0, len(weights), chunk):
            w = weights[a: a + chunk, None]
            if phase == 1:
                uw.accumulate(pools, w)
            else:
                uw.select(pools, w, np.arange(a, a + len(w)))
    uw.finish()
    return uw.events[0], uw


def test_draws_follow_the_weights_and_skip_zero_and_negative_ones():
    weights = np.array([0.0, 1.0, 0.0, 3.0, -0.5, 0.0])
    u = np.random.default_rng(0).random(40000)
    events, uw = draw(weights, u, chunk=4)
    assert set(np.unique(events)) == {1, 3}
    share = np.mean(events == 3)
    assert abs(share - 0.75) < 4 * np.sqrt(0.75 * 0.25 / len(u))  # binomial: 4 standard errors
    assert uw.total[0] == 4.0 and uw.negative[0] == 0.5


@pytest.mark.parametrize("chunk", [1, 7, 100, 1000])
def test_any_chunk_size_gives_the_same_events(chunk):
    rng = np.random.default_rng(1)
    weights = rng.exponential(size=1000) * (rng.random(1000) > 0.2)
    u = rng.random(5000)
    reference, _ = draw(weights, u, chunk=1000)
    events, _ = draw(weights, u, chunk=chunk)
    np.testing.assert_array_equal(events, reference)
    # each draw lands in the event whose cumulative interval holds u * total
    cum = np.cumsum(weights)
    np.testing.assert_array_equal(reference, np.searchsorted(cum, u * cum[-1], side="right"))


def test_empty_pool_with_draws_is_refused():
    uw = Unweighter(1)
    uw.request(0, np.array([0.5]))
    uw.accumulate(np.array([0]), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="no positive weight"):
        uw.start_selection()


def test_split_labels_are_disjoint_proportional_and_chunk_free():
    rows = np.arange(200000)
    labels = split_labels(rows, key=42, fractions=(0.6, 0.15, 0.25))
    np.testing.assert_allclose(np.bincount(labels) / rows.size, [0.6, 0.15, 0.25], atol=0.005)
    np.testing.assert_array_equal(split_labels(rows[123:456], 42, (0.6, 0.15, 0.25)), labels[123:456])
    assert not np.array_equal(split_labels(rows, 43, (0.6, 0.15, 0.25)), labels)
