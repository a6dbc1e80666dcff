"""Reads a dataset folder in xdrec's normalized format (items.jsonl, interactions.jsonl[.gz],
splits.json). Any such folder works: domain, user and split names come from the files."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True, slots=True)
class DatasetItem:
    item_id: str
    domain: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class DatasetInteraction:
    user_id: str
    item_id: str
    domain: str
    ts: float
    rating: float | None
    event_type: str


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """One JSON object a line, as the format's items.jsonl and interactions.jsonl are."""
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


class DatasetError(ValueError):
    """The folder is not in the normalized format; the message names the file and line."""


class Dataset:
    """A lazily read dataset folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not (self.directory / "items.jsonl").is_file():
            raise DatasetError(f"{self.directory} has no items.jsonl: not a dataset folder")
        self.interactions_path = self._interactions_path()

    def _interactions_path(self) -> Path:
        for name in ("interactions.jsonl.gz", "interactions.jsonl"):
            path = self.directory / name
            if path.is_file():
                return path
        raise DatasetError(f"{self.directory} has no interactions.jsonl[.gz]")

    def _open_interactions(self) -> IO[str]:
        if self.interactions_path.suffix == ".gz":
            return gzip.open(self.interactions_path, "rt", encoding="utf-8")
        return self.interactions_path.open(encoding="utf-8")

    def items(self) -> Iterator[DatasetItem]:
        with (self.directory / "items.jsonl").open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    yield DatasetItem(
                        str(row["item_id"]),
                        str(row["domain"]),
                        str(row.get("title") or ""),
                        str(row.get("text") or ""),
                    )
                except (KeyError, ValueError) as exc:
                    raise DatasetError(f"items.jsonl line {number}: {exc}") from exc

    def interactions(self) -> Iterator[DatasetInteraction]:
        with self._open_interactions() as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    rating = row.get("rating")
                    yield DatasetInteraction(
                        str(row["user_id"]),
                        str(row["item_id"]),
                        str(row["domain"]),
                        float(row["ts"]),
                        float(rating) if rating is not None else None,
                        str(row.get("event_type") or "view"),
                    )
                except (KeyError, ValueError, TypeError) as exc:
                    raise DatasetError(
                        f"{self.interactions_path.name} line {number}: {exc}"
                    ) from exc

    def splits(self) -> dict[str, str]:
        path = self.directory / "splits.json"
        if not path.is_file():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))

    def count_interactions(self) -> int:
        with self._open_interactions() as lines:
            return sum(1 for line in lines if line.strip())
