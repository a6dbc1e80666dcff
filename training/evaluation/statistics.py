"""Paired bootstrap intervals: is one method's lead over another more than the luck of the draw?

Both methods are scored on the same cases, so the difference is taken per case and the cases
are resampled with replacement; the 2.5th and 97.5th percentiles of the mean difference bound
a 95% interval. An interval above 0 says the lead holds for this population of users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 2_000


def paired_bootstrap(
    ours: np.ndarray, theirs: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean difference, lower, upper)`` of ``ours - theirs`` (per case, same order)."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"paired samples differ in shape: {ours.shape} vs {theirs.shape}")
    difference = ours - theirs
    if len(difference) == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 200):  # 200 resamples at a time bounds the memory
        count = min(200, resamples - start)
        picks = rng.integers(0, len(difference), size=(count, len(difference)))
        means[start : start + count] = difference[picks].mean(axis=1)
    lower, upper = np.percentile(means, [2.5, 97.5])
    return float(difference.mean()), float(lower), float(upper)


def versus_best_other(
    gains: dict[str, np.ndarray], ours: str, metric_of: dict[str, float]
) -> dict | None:
    """``ours`` against the best other method by mean (``metric_of``): that method's name,
    the difference and its 95% interval; None when there is no other method."""
    others = [name for name in gains if name != ours]
    if ours not in gains or not others:
        return None
    best = max(others, key=lambda name: (metric_of[name], name))
    difference, lower, upper = paired_bootstrap(gains[ours], gains[best])
    return {
        "method": best,
        "difference": round(difference, 6),
        "ci95": [round(lower, 6), round(upper, 6)],
    }


def paired_standard_error(first: np.ndarray, second: np.ndarray) -> float:
    """The standard error of the mean of ``first - second`` (per case, same order)."""
    difference = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    if len(difference) < 2:
        return 0.0
    return float(difference.std(ddof=1) / np.sqrt(len(difference)))


def one_standard_error_choice(
    gains: dict[float, np.ndarray], preferred_first: Sequence[float]
) -> float:
    """The first setting of ``preferred_first`` whose mean gain is within one standard error
    of the best setting's (the standard error of the paired difference over the same users).

    On a few hundred held-out users the best of ten noisy means is mostly luck; the
    one-standard-error rule keeps the safer setting unless another beats it by more than the
    noise. ``gains`` maps each setting to its per-user gains (same users, same order)."""
    means = {setting: float(np.mean(values)) for setting, values in gains.items()}
    best = best_setting(gains, preferred_first)
    for setting in preferred_first:
        if means[best] - means[setting] <= paired_standard_error(gains[best], gains[setting]):
            return setting
    return best


def best_setting(gains: dict[float, np.ndarray], preferred_first: Sequence[float]) -> float:
    """The setting with the best mean gain; a tie goes to the one preferred first."""
    return max(
        preferred_first,
        key=lambda setting: (float(np.mean(gains[setting])), -preferred_first.index(setting)),
    )
