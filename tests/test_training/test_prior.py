"""Fitting version 0's popularity prior: the held-out users decide between text and the chart."""

from __future__ import annotations

import numpy as np

from stream.data.dataset import DatasetInteraction
from stream.model.item_space import ItemSpace
from stream.settings import Settings
from training.evaluation.cases import EvalCase
from training.prior import WEIGHT_GRID, fit_weights, held_out_cases, prior_of

MOVIES = [f"m{i:02d}" for i in range(40)]
BOOKS = [f"b{i:02d}" for i in range(40)]


def _space_and_embeddings() -> tuple[ItemSpace, dict[str, np.ndarray]]:
    """Book i and movie i share a text embedding; all others are random."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    space = ItemSpace.from_ids({"books": BOOKS, "movies": MOVIES})
    return space, {"books": vectors.copy(), "movies": vectors.copy()}


def _case(user: int, book: int, movie: int) -> EvalCase:
    history = (DatasetInteraction(f"u{user}", BOOKS[book], "books", 1.0, None, "view"),)
    target = DatasetInteraction(f"u{user}", MOVIES[movie], "movies", 2.0, None, "view")
    return EvalCase(f"u{user}", "held_out", target, history)


def _fit(cases: list[EvalCase], counts: np.ndarray) -> tuple[float, dict]:
    space, embeddings = _space_and_embeddings()
    settings = Settings(domains=["books", "movies"])
    cold, _, curves = fit_weights(
        space, embeddings, settings, {"cold": cases}, {"cold": counts, "warm": counts}
    )
    return cold, curves


def test_text_that_predicts_keeps_a_small_weight() -> None:
    """Each user's movie is the one whose text matches their book; popularity is noise."""
    counts = np.concatenate([np.zeros(40), np.random.default_rng(1).integers(1, 50, 40)])
    cold, curves = _fit([_case(u, u, u) for u in range(40)], counts)
    assert cold <= 1.0
    assert curves["cold"][cold] > 0.95  # (nearly) every target ranked first
    assert curves["cold"][WEIGHT_GRID[-1]] < 0.2


def test_text_that_does_not_predict_gets_the_chart() -> None:
    """Every user's movie is by far the most popular one, whatever their book."""
    counts = np.concatenate([np.zeros(40), np.arange(40, dtype=float)])
    counts[-1] = 1_000.0
    cold, curves = _fit([_case(u, u, 39) for u in range(39)], counts)
    assert cold >= 5.0
    assert curves["cold"][cold] == 1.0
    assert curves["cold"][WEIGHT_GRID[0]] < 0.2


def test_a_group_without_cases_keeps_the_middle_of_the_grid() -> None:
    _, curves = _fit([], np.ones(80))
    assert set(curves["cold"].values()) == {0.0}


def test_held_out_cases_withhold_only_the_last_event() -> None:
    sequences = [
        [
            DatasetInteraction(f"u{u}", BOOKS[u % 40], "books", 1.0, None, "view"),
            DatasetInteraction(f"u{u}", MOVIES[u % 40], "movies", 2.0, None, "view"),
        ]
        for u in range(100)
    ]
    remaining, cases = held_out_cases(sequences)
    assert len(cases["warm"]) == len(cases["cold"]) == 5  # 5% of the users
    for case in cases["cold"]:
        assert case.target.domain == "movies" and [e.domain for e in case.history] == ["books"]
    assert sum(len(s) for s in remaining) == 200 - 5


def test_prior_of_keeps_counted_items_only() -> None:
    space, _ = _space_and_embeddings()
    counts = np.zeros(80)
    counts[0], counts[45] = 2.0, 7.0  # books b00, movies m05
    prior = prior_of(space, counts, 1.0, 2.0)
    assert prior.counts == {"books": {"b00": 2.0}, "movies": {"m05": 7.0}}
    assert (prior.cold_weight, prior.warm_weight) == (1.0, 2.0)


def test_text_no_better_than_the_chart_beyond_noise_keeps_the_chart() -> None:
    """Half the users' movies match their book, half are the chart's top: text alone and the
    chart alone each find half, so popularity with text as a tie-break is kept."""
    counts = np.concatenate([np.zeros(40), np.arange(40, dtype=float)])
    cases = [_case(u, u, u) for u in range(0, 38, 2)] + [_case(u, u, 39) for u in range(1, 38, 2)]
    cold, _ = _fit(cases, counts)
    assert cold == WEIGHT_GRID[-1]
