"""Reads a dataset folder in xdrec's normalized format (items.jsonl, interactions.jsonl[.gz],
splits.json). Any such folder works: domain, user and split names come from the files.

Domain names become topic names and metric labels, so the reader hands out a name of the form
``settings.DOMAIN_PATTERN`` asks for: ``Movies_and_TV`` reads as ``movies_and_tv`` and
``Books & More`` as ``books_more`` (see :func:`domain_name`). Ratings outside the contract's
0-5 scale read as absent, so that the offline evaluation and a replay through Kafka see the
same events."""

from __future__ import annotations

import gzip
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from stream.settings import DOMAIN_PATTERN

log = logging.getLogger(__name__)

MAX_RATING = 5.0  # the contract's scale (``schemas.contracts.UserEvent.rating``)


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


def domain_name(raw: str) -> str:
    """``raw`` as an xdrec domain name: accents dropped, lower case, each run of other characters
    one ``_``, a leading ``d_`` where it would not start with a letter, at most 32 characters."""
    ascii_name = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9_-]+", "_", ascii_name.strip().lower()).strip("_-")
    if not name:
        raise DatasetError(f"domain {raw!r} has no letter or digit to name it by")
    if not name[:1].isalpha():
        name = f"d_{name}".rstrip("_")
    name = name[:32].rstrip("_-")
    if not re.match(DOMAIN_PATTERN, name):
        raise DatasetError(f"domain {raw!r} cannot be named as {DOMAIN_PATTERN} asks")
    return name


class Dataset:
    """A lazily read dataset folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not (self.directory / "items.jsonl").is_file():
            raise DatasetError(f"{self.directory} has no items.jsonl: not a dataset folder")
        self.interactions_path = self._interactions_path()
        self._domain_names: dict[str, str] = {}  # raw name in the files -> xdrec name
        self._ratings_dropped = 0

    def _domain(self, raw: str) -> str:
        """The xdrec name of a raw domain name; two raw names may not share one."""
        name = self._domain_names.get(raw)
        if name is None:
            name = domain_name(raw)
            clash = [other for other, known in self._domain_names.items() if known == name]
            if clash:
                raise DatasetError(f"domains {clash[0]!r} and {raw!r} would both be named {name!r}")
            if name != raw:
                log.info("dataset domain renamed raw=%r name=%s", raw, name)
            self._domain_names[raw] = name
        return name

    def _rating(self, raw: object) -> float | None:
        if raw is None:
            return None
        rating = float(raw)  # type: ignore[arg-type]
        if 0.0 <= rating <= MAX_RATING:
            return rating
        self._ratings_dropped += 1
        if self._ratings_dropped == 1:
            log.warning(
                "dataset rating outside 0-%s read as absent rating=%s file=%s",
                MAX_RATING,
                rating,
                self.interactions_path.name,
            )
        return None

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
                        self._domain(str(row["domain"])),
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
                    yield DatasetInteraction(
                        str(row["user_id"]),
                        str(row["item_id"]),
                        self._domain(str(row["domain"])),
                        float(row["ts"]),
                        self._rating(row.get("rating")),
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
