"""Paired bootstrap intervals of one method's lead over another."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.statistics import (
    one_standard_error_choice,
    paired_bootstrap,
    versus_best_other,
)


def test_a_constant_lead_has_an_interval_of_that_lead() -> None:
    theirs = np.random.default_rng(0).random(500)
    difference, lower, upper = paired_bootstrap(theirs + 0.1, theirs)
    assert difference == pytest.approx(0.1) and lower == pytest.approx(0.1)
    assert upper == pytest.approx(0.1)


def test_noise_around_no_lead_gives_an_interval_around_zero() -> None:
    rng = np.random.default_rng(1)
    ours, theirs = rng.random(2_000), rng.random(2_000)
    difference, lower, upper = paired_bootstrap(ours, theirs)
    assert lower < 0 < upper
    assert lower < difference < upper
    assert upper - lower == pytest.approx(2 * 1.96 * np.std(ours - theirs) / np.sqrt(2_000), 0.1)


def test_pairs_must_match() -> None:
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(np.zeros(3), np.zeros(4))


def test_compares_with_the_best_other_method_by_its_mean() -> None:
    gains = {
        "trained": np.array([1.0, 0.0, 1.0]),
        "a": np.array([0.0, 0.0, 1.0]),
        "b": np.array([1.0, 0.0, 0.0]),
    }
    result = versus_best_other(gains, "trained", {"trained": 2 / 3, "a": 1 / 3, "b": 0.4})
    assert result is not None and result["method"] == "b"
    assert result["difference"] == pytest.approx(1 / 3, abs=1e-6)
    assert versus_best_other({"trained": gains["trained"]}, "trained", {"trained": 1.0}) is None


def test_one_standard_error_keeps_the_preferred_setting_within_the_noise() -> None:
    """A lead smaller than its standard error does not displace the preferred setting."""
    rng = np.random.default_rng(0)
    safe = rng.random(200)
    noise = rng.normal(0.0, 0.05, 200)
    lucky = safe + 0.002 + noise - noise.mean()  # ahead by much less than the noise
    assert np.mean(lucky) > np.mean(safe)
    assert one_standard_error_choice({1.0: safe, 2.0: lucky}, [1.0, 2.0]) == 1.0


def test_one_standard_error_takes_a_lead_beyond_the_noise() -> None:
    rng = np.random.default_rng(0)
    safe = rng.random(200)
    better = safe + rng.normal(0.1, 0.05, 200)
    assert one_standard_error_choice({1.0: safe, 2.0: better}, [1.0, 2.0]) == 2.0
