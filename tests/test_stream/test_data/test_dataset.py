"""The dataset reader: any folder in the normalized format reads, whatever its domain names
and rating scale, and names its domains as topics and metric labels need them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.cli.main import main
from stream.data.dataset import Dataset, DatasetError, domain_name
from stream.model.item_space import ItemSpace
from tests.datasets import write_clustered_dataset


def test_an_item_space_refuses_an_item_twice_in_a_domain() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        ItemSpace.from_ids({"books": ["b1", "b2", "b1"]})


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("food", "food"),
        ("Movies_and_TV", "movies_and_tv"),
        ("CDs & Vinyl", "cds_vinyl"),
        ("  Home-Kitchen ", "home-kitchen"),
        ("2023 Books", "d_2023_books"),
        ("Électronique", "electronique"),
        ("x" * 40, "x" * 32),
    ],
)
def test_domain_names_become_topic_safe(raw: str, name: str) -> None:
    assert domain_name(raw) == name


def test_a_domain_without_a_letter_or_digit_is_refused() -> None:
    with pytest.raises(DatasetError, match="no letter or digit"):
        domain_name("&&&")


def _rewrite_domains(folder: Path, names: dict[str, str], rating: float) -> None:
    """Renames the domains in the files, and gives the first event ``rating``."""
    for file in ("items.jsonl", "interactions.jsonl"):
        rows = [json.loads(line) for line in (folder / file).read_text().splitlines()]
        for row in rows:
            row["domain"] = names[row["domain"]]
        if file == "interactions.jsonl":
            rows[0]["rating"] = rating
        (folder / file).write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_the_reader_renames_domains_and_drops_ratings_off_the_scale(tmp_path: Path) -> None:
    folder = write_clustered_dataset(tmp_path / "data", users=20)
    _rewrite_domains(folder, {"left": "Movies_and_TV", "right": "CDs & Vinyl"}, rating=9.0)
    dataset = Dataset(folder)
    assert {item.domain for item in dataset.items()} == {"movies_and_tv", "cds_vinyl"}
    events = list(dataset.interactions())
    assert {event.domain for event in events} == {"movies_and_tv", "cds_vinyl"}
    assert events[0].rating is None


def test_two_domains_that_would_share_a_name_are_refused(tmp_path: Path) -> None:
    folder = write_clustered_dataset(tmp_path / "data", users=20)
    _rewrite_domains(folder, {"left": "Books", "right": "books"}, rating=4.0)
    with pytest.raises(DatasetError, match="would both be named 'books'"):
        list(Dataset(folder).items())


def test_evaluate_and_train_on_capitalized_domains_and_repeated_item_rows(tmp_path: Path) -> None:
    folder = write_clustered_dataset(tmp_path / "data", users=60)
    _rewrite_domains(folder, {"left": "Movies_and_TV", "right": "CDs & Vinyl"}, rating=10.0)
    items = (folder / "items.jsonl").read_text().splitlines(keepends=True)
    (folder / "items.jsonl").write_text("".join(items + items[:5]))  # five rows repeated
    out = tmp_path / "report"
    code = main(
        ["evaluate", "--dataset", str(folder), "--out", str(out), "--train-epochs", "1"]
        + ["--methods", "popularity", "cooccurrence_knn", "--cache-dir", str(tmp_path / "c")]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["skipped"]["repeated_item_rows"] == 5
    assert metrics["meta"]["training"]["examples"] > 0
    per_domain = metrics["methods"]["cooccurrence_knn"]["warm"]["per_domain"]
    assert set(per_domain) == {"movies_and_tv", "cds_vinyl"}
    assert sum(domain["users"] for domain in per_domain.values()) > 0
