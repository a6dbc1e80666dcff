"""Evaluation cases from a dataset folder: who is evaluated, on which target, with what history.

Evaluation users are those whose split is ``valid`` or ``test``; each one's last event is the
target and everything before it the history. ``warm`` keeps the full history; ``cold`` removes
every earlier event in the target's domain, so only other domains can explain the target.
The training signal of a group is every other user's full sequence plus the group's histories.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from stream.data.dataset import Dataset, DatasetInteraction, DatasetItem
from stream.model.item_space import ItemSpace

EVALUATION_SPLITS = ("valid", "test")
GROUPS = ("cold", "warm")


@dataclass(frozen=True, slots=True)
class EvalCase:
    user_id: str
    split: str
    target: DatasetInteraction
    history: tuple[DatasetInteraction, ...]

    @property
    def domain(self) -> str:
        return self.target.domain


@dataclass
class EvalData:
    """Everything the methods need, loaded once."""

    items: dict[str, list[DatasetItem]]  # domain -> items in file order
    cases: dict[str, list[EvalCase]]  # group -> cases
    training: dict[str, list[list[DatasetInteraction]]]  # group -> sequences
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def domains(self) -> list[str]:
        return sorted(self.items)

    def item_space(self) -> ItemSpace:
        """Rows for every item of the dataset's catalog, in file order per domain."""
        return ItemSpace.from_ids(
            {domain: [item.item_id for item in self.items[domain]] for domain in self.domains}
        )


def load_cases(
    dataset: Dataset, splits: tuple[str, ...] = EVALUATION_SPLITS, max_users: int | None = None
) -> EvalData:
    """Read the folder and build cold and warm cases for the users of ``splits``."""
    # A catalog topic keeps an item's last record: so does the evaluation, at its first row.
    rows: dict[str, dict[str, DatasetItem]] = defaultdict(dict)
    repeated = 0
    for item in dataset.items():
        repeated += item.item_id in rows[item.domain]
        rows[item.domain][item.item_id] = item
    items = {domain: list(by_id.values()) for domain, by_id in rows.items()}
    sequences: dict[str, list[DatasetInteraction]] = defaultdict(list)
    for interaction in dataset.interactions():
        sequences[interaction.user_id].append(interaction)
    split_of = dataset.splits()

    evaluated = sorted(
        user for user in sequences if split_of.get(user) in splits and len(sequences[user]) >= 2
    )
    if max_users is not None:
        evaluated = evaluated[:max_users]
    evaluation_users = {user for user in sequences if split_of.get(user) in EVALUATION_SPLITS}

    cases: dict[str, list[EvalCase]] = {"cold": [], "warm": []}
    skipped = {"cold_without_history": 0, "repeated_item_rows": repeated}
    histories: dict[str, dict[str, list[DatasetInteraction]]] = {"cold": {}, "warm": {}}
    for user in sorted(evaluation_users):
        sequence = sequences[user]
        if len(sequence) < 2:
            continue
        target, history = sequence[-1], sequence[:-1]
        cold_history = [event for event in history if event.domain != target.domain]
        histories["warm"][user] = history
        histories["cold"][user] = cold_history
    for user in evaluated:
        sequence = sequences[user]
        target = sequence[-1]
        warm_history = tuple(histories["warm"][user])
        cold_history = tuple(histories["cold"][user])
        cases["warm"].append(EvalCase(user, split_of[user], target, warm_history))
        if cold_history:
            cases["cold"].append(EvalCase(user, split_of[user], target, cold_history))
        else:
            skipped["cold_without_history"] += 1

    others = [sequence for user, sequence in sequences.items() if user not in evaluation_users]
    training = {group: others + list(histories[group].values()) for group in GROUPS}
    return EvalData(items=items, cases=cases, training=training, skipped=skipped)
