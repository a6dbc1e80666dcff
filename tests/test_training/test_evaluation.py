"""Offline evaluation: it reproduces the dataset's reference baselines, and the zero-shot method
it scores is the worker's own model version 0."""

from __future__ import annotations

import json
import math
from pathlib import Path

from stream.data.sample import write_sample_dataset
from stream.settings import Settings
from training.evaluation.offline import evaluate_offline
from training.train import TrainConfig

# From the dataset README ("Reference baselines computed here"): test split, 999 negatives.
REFERENCE = {
    ("popularity", "food"): (300, 0.0567, 0.0333),
    ("popularity", "kitchen"): (637, 0.0455, 0.0239),
    ("cooccurrence_knn", "food"): (300, 0.3133, 0.1592),
    ("cooccurrence_knn", "kitchen"): (637, 0.3030, 0.1664),
}


def _settings(domains: list[str]) -> Settings:
    routes = {target: [d for d in domains if d != target] for target in domains}
    return Settings(domains=domains, recommendations={"routes": routes})


def test_sampled_baselines_match_the_dataset_reference(shared_dataset: Path) -> None:
    metrics = evaluate_offline(
        shared_dataset,
        _settings(["food", "kitchen"]),
        splits=("test",),
        methods=("popularity", "cooccurrence_knn"),
        progress=False,
    )
    for (method, domain), (users, hit, ndcg) in REFERENCE.items():
        ours = metrics["sampled"]["methods"][method]["warm"]["per_domain"][domain]
        assert ours["users"] == users
        # Negatives are drawn at random: allow three binomial standard errors.
        tolerance = 3 * math.sqrt(hit * (1 - hit) / users)
        assert abs(ours["hit@10"] - hit) <= tolerance, (method, domain, ours["hit@10"], hit)
        assert abs(ours["ndcg@10"] - ndcg) <= tolerance, (method, domain, ours["ndcg@10"], ndcg)


def test_zero_shot_transfers_genre_across_domains_on_the_sample(tmp_path: Path) -> None:
    """On the sample, tastes span domains by construction: text must beat popularity cold."""
    dataset = write_sample_dataset(tmp_path / "sample")
    metrics = evaluate_offline(
        dataset,
        _settings(["books", "movies", "music"]),
        cache_dir=tmp_path / "cache",
        train=TrainConfig(epochs=2, batch_size=128, sampled_negatives=32, device="cpu"),
        progress=False,
    )
    trained = metrics["methods"]["trained"]
    assert trained["warm"]["users"] == trained["cold"]["users"] > 0
    assert metrics["meta"]["training"]["examples"] > 0
    cold = {name: result["cold"] for name, result in metrics["methods"].items()}
    assert cold["zero_shot"]["users"] == cold["popularity"]["users"] > 0
    assert cold["zero_shot"]["ndcg@10"] > 2 * cold["popularity"]["ndcg@10"]
    assert 0 < cold["zero_shot"]["coverage@10"] <= 1
    assert 0 < cold["zero_shot"]["diversity@10"] < 2
    assert json.loads(json.dumps(metrics)) == metrics


def test_the_streaming_check_runs_under_the_configured_prefix_and_app_id(tmp_path: Path) -> None:
    from training.evaluation.streaming import streaming_settings

    base = Settings(app_id="team-recs", topics={"prefix": "team."})
    first = streaming_settings(base, ["books", "movies"], tmp_path, top_k=10)
    second = streaming_settings(base, ["books", "movies"], tmp_path, top_k=10)
    assert first.topics.prefix.startswith("team.eval") and first.topics.prefix.endswith(".")
    assert first.app_id.startswith("team-recs-eval")
    assert first.topics.prefix != second.topics.prefix and first.app_id != second.app_id
    assert first.recommendations.routes == {
        "books": ["books", "movies"],
        "movies": ["books", "movies"],
    }
