"""Why an item was recommended: the user's interactions that contributed most to its score.

Version 0 (zero-shot) is a sum, so it decomposes exactly. The query is the normalized sum of
decayed, weighted item embeddings, so an item's score is one term per interaction:
``w_domain * w_event * 2^(-(t - t_e) / half_life) * (x_e . v) / |q|``. Each term divided by the
item's score is that interaction's share. Only the ``explain_history`` most recent interactions
are decomposed; the terms of older ones are the part of the score that no listed share covers.

Trained versions decompose over the positions of the model's input: mean pooling and the
residual head are linear, so the score is one term per history position plus a constant
(:meth:`stream.model.transfer.TransferModel.user_parts`). A position's output also carries what
attention mixed in from other items, so the shares are checked by ablation (leaving out the
top-attributed item must hurt more than leaving out another); ``docs/explanations.md`` says how.

Both reduce to the same form, a term vector per (domain, item) whose dot product with an
item's vector is that interaction's part of the score, so one :class:`TermExplainer` serves
both. :func:`explain_batch` explains every ranked recommendation of one target at once: the
zero-shot history embeddings come in one gather, recommendations with the same numbers of
terms and items share one stacked matrix product, and sorting and rounding run in numpy. A
single recommendation is the batch of one, so both give the same output by construction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stream.core.scoring import DomainIndex
from stream.core.state import SECONDS_PER_DAY, UserState, state_time
from stream.settings import Settings

# (item_id, domain, share) of one interaction behind a recommended item, largest share first.
Contributions = list[tuple[str, str, float]]

_DIGITS = 4  # shares are rounded to this many decimals
_SCALE = 10.0**_DIGITS


class Explainer(Protocol):
    """Built when a recommendation is due (the state as it was), used once it is ranked."""

    def explain(
        self, index: DomainIndex, items: list[tuple[str, float]], top: int
    ) -> list[Contributions]: ...


class EmbeddingLookup(Protocol):
    def embeddings(self, keys: Sequence[tuple[str, str]]) -> tuple[np.ndarray, list[bool]]: ...


@dataclass(slots=True)
class TermExplainer:
    """Each (domain, item)'s term of the query: ``terms @ v`` is its part of item ``v``'s score.

    Build it with :meth:`of`, which sums the terms of an item the user met more than once (the
    decomposition is linear, so the item's share is the sum of its terms) and orders the pairs,
    so that equal shares are listed by (domain, item) whatever the history's order.
    """

    pairs: list[tuple[str, str]]  # (domain, item_id), sorted and unique
    terms: np.ndarray  # (len(pairs), dim)

    @classmethod
    def of(cls, pairs: list[tuple[str, str]], terms: np.ndarray) -> TermExplainer:
        if sorted(set(pairs)) == pairs:
            return cls(pairs, terms)
        merged = _merge_terms(np.zeros(len(pairs), dtype=np.int64), pairs, terms, 1)
        return cls([merged.ordered[name] for name in merged.names.tolist()], merged.matrix)

    def explain(
        self, index: DomainIndex, items: list[tuple[str, float]], top: int
    ) -> list[Contributions]:
        """The ``top`` largest positive shares of each item's score; [] for a score <= 0."""
        return explain_batch(index, [self], [items], top)[0]


@dataclass(slots=True)
class ZeroShotTerms:
    """The zero-shot decomposition before its embeddings are fetched: the weight of each
    interaction that fed the query, as the state was when the recommendation was due.

    The embeddings are gathered when the recommendation is explained, for all of a batch's
    recommendations at once (:func:`explain_batch`); an interaction whose item the catalog
    does not know has no term.
    """

    keys: list[tuple[str, str]]  # (domain, item_id) per interaction, oldest first
    weights: list[float]  # its term's weight: domain * event * decay / |sum|
    items: EmbeddingLookup

    def explain(
        self, index: DomainIndex, items: list[tuple[str, float]], top: int
    ) -> list[Contributions]:
        """The ``top`` largest positive shares of each item's score; [] for a score <= 0."""
        return explain_batch(index, [self], [items], top)[0]


def zero_shot_explainer(
    state: UserState,
    target: str,
    sources: list[str],
    norm: float,
    items: EmbeddingLookup,
    settings: Settings,
    when: float | None = None,
) -> ZeroShotTerms | None:
    """The decomposition of :func:`stream.core.state.interest_query` for the state as it is now;
    ``norm`` is the length of the query's unnormalized sum, ``when`` the state's time (as
    :func:`stream.core.state.state_time` gives it, which the caller usually has already)."""
    config = settings.recommendations
    half_life = settings.interest.half_life_days * SECONDS_PER_DAY
    if when is None:
        when = state_time(state)
    target_weight, source_weight = config.target_weight, config.source_weight
    feeding = [i for i in state.recent if i.domain == target or i.domain in sources]
    feeding = feeding[-config.explain_history :]
    if not feeding:
        return None
    # The query's own operations in its order, so the float32 terms add up to it exactly.
    weights = [
        (target_weight if i.domain == target else source_weight)
        * i.weight
        * 2.0 ** (-max(0.0, when - i.timestamp) / half_life)
        / norm
        for i in feeding
    ]
    return ZeroShotTerms([(i.domain, i.item_id) for i in feeding], weights, items)


@dataclass(slots=True)
class _TermTable:
    """The term rows of many recommendations: each one's rows contiguous, sorted by (domain,
    item) and unique, as :meth:`TermExplainer.of` orders them."""

    matrix: np.ndarray  # (rows, dim)
    item_ids: np.ndarray  # (rows,) object: the interaction's item
    domains: np.ndarray  # (rows,) object: its domain
    start: list[int]  # per recommendation: its first row
    count: list[int]  # per recommendation: its number of rows (0: nothing to explain with)


@dataclass(slots=True)
class _MergedTerms:
    matrix: np.ndarray  # (rows, dim): one row per (recommendation, pair)
    names: np.ndarray  # (rows,) each row's pair, as a position in ``ordered``
    ordered: list[tuple[str, str]]  # every pair, sorted
    counts: np.ndarray  # (recommendations,) rows per recommendation


def _merge_terms(
    recs: np.ndarray, keys: list[tuple[str, str]], terms: np.ndarray, count: int
) -> _MergedTerms:
    """Order term rows by (recommendation, pair) and sum the rows of a pair met twice.

    Sums start from 0 and add the repeats in history order, the order a loop over the
    history would add them, so one explainer and a batch of them get the same float32 sums.
    """
    ordered = sorted(set(keys))
    rank = {key: position for position, key in enumerate(ordered)}
    width = max(len(ordered), 1)
    combined = recs * width + np.fromiter(map(rank.__getitem__, keys), np.int64, len(keys))
    order = np.argsort(combined, kind="stable")  # by recommendation, pair, then history
    combined, terms = combined[order], terms[order]
    first = np.ones(len(combined), dtype=bool)
    first[1:] = combined[1:] != combined[:-1]
    unique = combined[first]
    matrix = terms.dtype.type(0.0) + terms[first]
    if len(unique) < len(combined):
        row = np.cumsum(first) - 1  # each sorted term's row in ``matrix``
        repeat = np.arange(len(combined)) - np.flatnonzero(first)[row]  # 0 for the first
        for level in range(1, int(repeat.max()) + 1):
            at = repeat == level  # at most one term per row, so no write is lost
            matrix[row[at]] += terms[at]
    return _MergedTerms(
        matrix, unique % width, ordered, np.bincount(unique // width, minlength=count)
    )


def _zero_shot_table(lazy: Sequence[ZeroShotTerms], items: EmbeddingLookup) -> _TermTable:
    """All the terms of many zero-shot recommendations from one gather: each term is the
    float32 product of the embedding and its weight, merged as :meth:`TermExplainer.of`
    merges one explainer's."""
    keys = [key for terms in lazy for key in terms.keys]
    recs = np.repeat(np.arange(len(lazy)), [len(terms.keys) for terms in lazy])
    weights = np.array([weight for terms in lazy for weight in terms.weights], dtype=np.float64)
    vectors, found = items.embeddings(keys)
    if not all(found):  # unknown items have no term
        known = np.array(found, dtype=bool)
        keys = [key for key, ok in zip(keys, found, strict=True) if ok]
        recs, weights = recs[known], weights[known]
    merged = _merge_terms(recs, keys, vectors * weights.astype(np.float32)[:, None], len(lazy))
    counts = merged.counts
    return _TermTable(
        merged.matrix,
        np.array([item_id for _, item_id in merged.ordered], dtype=object)[merged.names],
        np.array([domain for domain, _ in merged.ordered], dtype=object)[merged.names],
        (np.cumsum(counts) - counts).tolist(),
        counts.tolist(),
    )


def _explainer_table(explainers: Sequence[TermExplainer]) -> _TermTable:
    """Term explainers built by a scorer (already ordered and unique), as one table."""
    counts = [len(explainer.pairs) for explainer in explainers]
    pairs = [pair for explainer in explainers for pair in explainer.pairs]
    return _TermTable(
        np.concatenate([explainer.terms for explainer in explainers]),
        np.array([item_id for _, item_id in pairs], dtype=object),
        np.array([domain for domain, _ in pairs], dtype=object),
        (np.cumsum(counts) - np.array(counts)).tolist(),
        counts,
    )


def explain_batch(
    index: DomainIndex,
    explainers: Sequence[Explainer | None],
    ranked: Sequence[list[tuple[str, float]]],
    top: int,
) -> list[list[Contributions]]:
    """Explain each recommendation's ranked items: per item, the ``top`` largest positive
    shares of its score, largest first ([] for a score <= 0, and for every item of a
    recommendation without explainer or without known history).

    The arithmetic per recommendation is that of one ``terms @ vectors.T`` (the same float32
    BLAS product for each stacked slice), so batching never changes a share.
    """
    explained: list[list[Contributions] | None] = [None] * len(ranked)
    scored: list[int] = []
    lazy: dict[int, list[int]] = defaultdict(list)  # id(lookup) -> positions
    for position, explainer in enumerate(explainers):
        if explainer is None or not ranked[position]:
            continue
        if isinstance(explainer, TermExplainer):
            scored.append(position)
        elif isinstance(explainer, ZeroShotTerms):
            lazy[id(explainer.items)].append(position)
        else:  # another kind explains itself
            explained[position] = explainer.explain(index, ranked[position], top)
    tables: list[tuple[list[int], _TermTable]] = []
    if scored:
        tables.append((scored, _explainer_table([explainers[p] for p in scored])))  # type: ignore[misc]
    for positions in lazy.values():
        batch: list[ZeroShotTerms] = [explainers[p] for p in positions]  # type: ignore[misc]
        tables.append((positions, _zero_shot_table(batch, batch[0].items)))
    for positions, table in tables:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for row, position in enumerate(positions):
            if table.count[row]:
                groups[(table.count[row], len(ranked[position]))].append(row)
        for rows in groups.values():
            members = [positions[row] for row in rows]
            contributions = _explain_group(
                index, table, rows, [ranked[position] for position in members], top
            )
            for position, item_contributions in zip(members, contributions, strict=True):
                explained[position] = item_contributions
    return [
        [[] for _ in items] if contributions is None else contributions
        for contributions, items in zip(explained, ranked, strict=True)
    ]


def _explain_group(
    index: DomainIndex,
    table: _TermTable,
    rows: list[int],
    ranked: Sequence[list[tuple[str, float]]],
    top: int,
) -> list[list[Contributions]]:
    """Recommendations with the same numbers of terms and items: one stacked product, and
    the contributions built by zips and slices rather than one by one."""
    recs, pairs, size = len(rows), table.count[rows[0]], len(ranked[0])
    starts = np.array([table.start[row] for row in rows], dtype=np.intp)
    terms = table.matrix[starts[:, None] + np.arange(pairs)]  # (recs, pairs, dim)
    flat = [pair for items in ranked for pair in items]
    columns = np.fromiter(
        map(index.positions.__getitem__, [item for item, _ in flat]), np.intp, len(flat)
    )
    vectors = index.matrix[columns.reshape(recs, size)]  # (recs, items, dim)
    scores = np.array([score for _, score in flat], dtype=np.float64).reshape(recs, size)
    valid = (scores > 0) & np.isfinite(scores)
    # (recs, pairs, items); each slice is the float32 product ``terms @ vectors.T``.
    products = np.matmul(terms, vectors.transpose(0, 2, 1))
    shares = products / np.where(valid, scores, 1.0)[:, None, :]
    order = np.argsort(-shares, axis=1, kind="stable")[:, :top, :]
    best = np.take_along_axis(shares, order, axis=1)  # (recs, top, items), largest first
    # Listed up to the first share <= 0 (as a loop that stops there would).
    listed = (np.cumprod(~(best <= 0), axis=1).sum(axis=1) * valid).ravel()  # (recs * items)
    taken = np.arange(order.shape[1]) < listed.reshape(recs, size)[:, :, None]
    picked = (order.transpose(0, 2, 1) + starts[:, None, None])[taken]  # table rows
    contributions = list(
        zip(
            table.item_ids[picked].tolist(),
            table.domains[picked].tolist(),
            round_shares(best).transpose(0, 2, 1)[taken].tolist(),
            strict=True,
        )
    )
    ends = np.cumsum(listed)
    per_item = list(
        map(contributions.__getitem__, map(slice, (ends - listed).tolist(), ends.tolist()))
    )
    return [per_item[rec * size : (rec + 1) * size] for rec in range(recs)]


def round_shares(values: np.ndarray) -> np.ndarray:
    """``round(value, 4)`` of Python for every element, vectorized.

    Python rounds the exact binary value half-to-even and returns the double nearest to the
    decimal; ``rint(value * 1e4) / 1e4`` gives the same double unless the product's own
    rounding moves it across a half, so values within a hair of a half (and non-finite or
    large ones) are rounded by Python itself.
    """
    scaled = values * _SCALE
    rounded = np.rint(scaled) / _SCALE
    with np.errstate(invalid="ignore"):  # inf - inf: caught by the first test
        ambiguous = ~(np.abs(scaled) < 1e9) | (np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6)
    if ambiguous.any():
        for where in zip(*np.nonzero(ambiguous), strict=True):
            rounded[where] = round(float(values[where]), _DIGITS)
    return rounded
