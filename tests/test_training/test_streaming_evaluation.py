"""Streaming evaluation through the broker and a real worker gives the offline figures, for
version 0 with the popularity prior the offline evaluation fitted."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from stream.data.dataset import Dataset
from stream.model.prior import PopularityPrior
from stream.settings import Settings
from training.evaluation.offline import evaluate_offline
from training.evaluation.streaming import evaluate_streaming

pytestmark = pytest.mark.integration


def write_subset(source: Dataset, directory: Path, users: int, extra_items: int) -> Path:
    """A small folder in the same format: some test users, their items and random others."""
    rng = random.Random(1)
    splits = source.splits()
    chosen = set(rng.sample(sorted(u for u, s in splits.items() if s == "test"), users))
    interactions = [e for e in source.interactions() if e.user_id in chosen]
    used = {(e.domain, e.item_id) for e in interactions}
    items = list(source.items())
    others = [item for item in items if (item.domain, item.item_id) not in used]
    keep = used | {(i.domain, i.item_id) for i in rng.sample(others, extra_items)}
    directory.mkdir(parents=True)
    with (directory / "items.jsonl").open("w") as out:
        for item in items:
            if (item.domain, item.item_id) in keep:
                out.write(json.dumps(asdict(item)) + "\n")
    with (directory / "interactions.jsonl").open("w") as out:
        for event in interactions:
            out.write(json.dumps(asdict(event)) + "\n")
    (directory / "splits.json").write_text(json.dumps({u: "test" for u in chosen}))
    return directory


def test_streaming_and_offline_evaluation_agree(
    shared_dataset: Path,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    folder = write_subset(Dataset(shared_dataset), tmp_path / "subset", users=60, extra_items=600)
    base = make_settings(domains=["food", "kitchen"], recommendations={"routes": {}})
    priors: dict[str, PopularityPrior] = {}
    offline = evaluate_offline(
        folder,
        base,
        splits=("test",),
        methods=("zero_shot",),
        cache_dir=tmp_path / "cache",
        progress=False,
        priors=priors,
    )
    assert set(priors) == {"cold", "warm"}
    streamed = evaluate_streaming(
        folder, base, tmp_path / "streaming", splits=("test",), priors=priors
    )
    for group in ("warm", "cold"):
        stream_metrics = streamed[group]["metrics"]
        offline_metrics = offline["methods"]["zero_shot"][group]
        assert stream_metrics["missing_recommendations"] == 0
        assert stream_metrics["users"] == offline_metrics["users"] > 0
        for name in ("hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"):
            assert stream_metrics[name] == pytest.approx(offline_metrics[name], abs=1e-9), name
