"""What the worker serves is what the evaluator measured: for a fused model (text and ID
towers), the recommendations the worker's batch pipeline makes after a user's events are the
evaluator's ``Trained`` ranking of the same history, with the same scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from memory_catalog import MemoryCatalog

from stream.catalog.encoder import TextEncoder
from stream.core.items import item_text
from stream.core.processor import BatchProcessor
from stream.core.records import SourceRecord
from stream.data.dataset import DatasetInteraction
from stream.data.sample import sample_items
from stream.model.artifacts import load_artifact
from stream.model.fusion import FusedModel
from stream.model.scorer import ModelScorer
from stream.settings import Settings
from testkit.artifacts import space_text, train_sample_artifact
from training.evaluation.cases import EvalCase
from training.evaluation.methods import Trained

T0 = 1_704_067_200.0


def _served(
    settings: Settings, catalog: MemoryCatalog, scorer: ModelScorer, history: list[tuple[str, str]]
) -> list[tuple[str, float]]:
    """The movies recommendation the pipeline makes after the user's last event."""
    processor = BatchProcessor(settings, catalog, encoder=None, clock=lambda: T0 + 10**6)  # type: ignore[arg-type]
    processor.scorer = scorer
    records = [
        SourceRecord(
            settings.topics.events(domain),
            0,
            offset,
            b"u1",
            json.dumps(
                {
                    "schema_version": 1,
                    "event_id": f"e{offset}",
                    "user_id": "u1",
                    "domain": domain,
                    "item_id": item,
                    "event_type": "purchase",
                    "timestamp": T0 + offset * 3600,
                }
            ).encode(),
        )
        for offset, (domain, item) in enumerate(history)
    ]
    output = processor.process(records, lambda _: None)
    return [r for r in output.recommendations if r.target_domain == "movies"][-1].items


@pytest.mark.parametrize("with_movies", [False, True], ids=["cold", "warm"])
def test_the_worker_and_the_evaluator_score_a_fused_model_alike(
    tmp_path: Path, with_movies: bool
) -> None:
    items = sample_items()
    vectors = TextEncoder().encode([item_text(i["title"], i["text"]) for i in items])
    by_key = {(i["domain"], i["item_id"]): v for i, v in zip(items, vectors, strict=True)}
    catalog = MemoryCatalog(by_key)
    text = space_text(by_key)
    artifact = train_sample_artifact(tmp_path, "v1", text=text, epochs=2)
    loaded = load_artifact(artifact, text)
    assert isinstance(loaded.model, FusedModel)
    settings = Settings()
    scorer = ModelScorer(load_artifact(artifact), catalog, list(settings.domains))  # type: ignore[arg-type]

    ids = {d: [i["item_id"] for i in items if i["domain"] == d] for d in ("books", "movies")}
    history = [("books", b) for b in ids["books"][:3]]
    if with_movies:  # a warm user (the ID tower gets the warm weight); books trigger the rec
        history = [("movies", m) for m in ids["movies"][:2]] + history
    served = _served(settings, catalog, scorer, history)

    case = EvalCase(
        "u1",
        "test",
        DatasetInteraction("u1", ids["movies"][-1], "movies", T0 + 10**5, None, "purchase"),
        tuple(
            DatasetInteraction("u1", item, domain, T0 + n * 3600, None, "purchase")
            for n, (domain, item) in enumerate(history)
        ),
    )
    scores = Trained(loaded.model, loaded.space).scores([case], "movies")[0]
    movies = loaded.space.item_ids["movies"]
    seen = {item for domain, item in history if domain == "movies"}
    ranked = [(movies[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]
    expected = [pair for pair in ranked if pair[0] not in seen][: len(served)]
    assert [item for item, _ in served] == [item for item, _ in expected]
    assert [score for _, score in served] == pytest.approx([s for _, s in expected], abs=1e-5)
