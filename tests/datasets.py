"""Small datasets in the normalized folder format, written by tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

T0 = 1_704_067_200.0
SYLLABLES = ("ka", "zo", "mi", "ru", "te", "lo", "ba", "ni", "vu", "se", "po", "di")


def write_clustered_dataset(
    folder: Path,
    domains: tuple[str, str] = ("left", "right"),
    users: int = 240,
    clusters: int = 8,
    per_cluster: int = 6,
    events: int = 8,
    seed: int = 0,
) -> Path:
    """Users of a cluster buy that cluster's items in both domains, while item titles are
    random syllables: behaviour predicts across domains, text does not. A trained model can
    learn what the zero-shot text model cannot, so the trainer's gate has something to find."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "items.jsonl").open("w", encoding="utf-8") as out:
        for domain in domains:
            for cluster in range(clusters):
                for number in range(per_cluster):
                    title = " ".join(
                        "".join(rng.choice(SYLLABLES) for _ in range(3)) for _ in range(2)
                    )
                    item = {"item_id": f"{domain}-{cluster}-{number}", "domain": domain}
                    out.write(json.dumps({**item, "title": title, "text": ""}) + "\n")
    rows = []
    for user in range(users):
        home = rng.randrange(clusters)
        for step in range(events):
            domain = domains[step % 2] if rng.random() < 0.8 else rng.choice(domains)
            cluster = home if rng.random() < 0.9 else rng.randrange(clusters)
            rows.append(
                {
                    "user_id": f"u{user}",
                    "item_id": f"{domain}-{cluster}-{rng.randrange(per_cluster)}",
                    "domain": domain,
                    "ts": T0 + user * 60 + step * 3600,
                    "rating": None,
                    "event_type": "purchase",
                }
            )
    rows.sort(key=lambda row: row["ts"])
    with (folder / "interactions.jsonl").open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    splits = {f"u{user}": "test" if user % 5 == 0 else "train" for user in range(users)}
    (folder / "splits.json").write_text(json.dumps(splits), encoding="utf-8")
    return folder
