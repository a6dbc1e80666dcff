"""A global index over (domain, item_id): the row numbers shared by the baselines, the
trained model and its artifacts. Domains are laid out one after another, sorted by name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ItemSpace:
    """A global index over (domain, item_id), domains laid out one after another."""

    domains: list[str]
    item_ids: dict[str, list[str]]
    offsets: dict[str, int]
    index: dict[tuple[str, str], int]

    @classmethod
    def from_ids(cls, item_ids: dict[str, list[str]]) -> ItemSpace:
        offsets, index = {}, {}
        position = 0
        for domain in sorted(item_ids):
            offsets[domain] = position
            for item_id in item_ids[domain]:
                if (domain, item_id) in index:
                    raise ValueError(f"item {item_id!r} appears twice in domain {domain!r}")
                index[(domain, item_id)] = position
                position += 1
        return cls(sorted(item_ids), dict(item_ids), offsets, index)

    def domain_of(self) -> list[int]:
        """The domain number of every row."""
        return [n for n, domain in enumerate(self.domains) for _ in self.item_ids[domain]]

    @property
    def size(self) -> int:
        return len(self.index)

    def domain_slice(self, domain: str) -> slice:
        start = self.offsets[domain]
        return slice(start, start + len(self.item_ids[domain]))

    def local(self, domain: str, item_id: str) -> int | None:
        position = self.index.get((domain, item_id))
        return None if position is None else position - self.offsets[domain]
