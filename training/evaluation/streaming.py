"""Streaming ("test-then-learn") evaluation of the running system.

The evaluation users' events are replayed through a real broker into a real worker. For each
case, the recommendation the worker published after the user's last history event — the one a
downstream service would have shown when the target event happened — is scored against the
target. ``cold`` replays a variant of the folder without the users' earlier target-domain events.
Only the top ``top_k`` items are published, so ranks beyond it count as misses (no MRR).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np

from schemas import ZERO_SHOT_VERSION
from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.devtools.consume import follow
from stream.devtools.supervisor import WorkerProcess
from stream.kafka.topics import create_topics
from stream.model.artifacts import save_prior
from stream.model.prior import PopularityPrior
from stream.model.store import ModelStore
from stream.settings import Settings
from training.evaluation.cases import EVALUATION_SPLITS, EvalCase, load_cases
from training.evaluation.ranking import rank_metrics
from training.publisher import model_update_for, publish_update

log = logging.getLogger(__name__)


def write_cold_variant(dataset: Dataset, directory: Path, splits: tuple[str, ...]) -> Path:
    """The folder with every evaluation user's earlier target-domain events removed."""
    directory.mkdir(parents=True, exist_ok=True)
    data = load_cases(dataset, splits)
    removed = {
        (case.user_id, event.domain, event.item_id, event.ts)
        for case in data.cases["warm"]
        for event in case.history
        if event.domain == case.domain
    }
    with (directory / "interactions.jsonl").open("w", encoding="utf-8") as out:
        for event in dataset.interactions():
            if (event.user_id, event.domain, event.item_id, event.ts) in removed:
                continue
            out.write(json.dumps(asdict(event)) + "\n")
    (directory / "items.jsonl").write_bytes((dataset.directory / "items.jsonl").read_bytes())
    (directory / "splits.json").write_text(json.dumps(dataset.splits()))
    return directory


def streaming_settings(base: Settings, domains: list[str], work_dir: Path, top_k: int) -> Settings:
    """An isolated deployment that recommends every domain after every event. Its topics sit
    under the configured prefix and its consumer group starts with the configured app id, so
    a broker whose ACLs grant those prefixes lets it run."""
    namespace = f"eval{uuid.uuid4().hex[:8]}"
    return base.model_copy(
        update={
            "app_id": f"{base.app_id}-{namespace}"[-64:],
            "domains": domains,
            "topics": base.topics.model_copy(
                update={"prefix": f"{base.topics.prefix}{namespace}."}
            ),
            "recommendations": base.recommendations.model_copy(
                update={
                    "routes": {t: list(domains) for t in domains},
                    "top_k": top_k,
                    "every_n_events": 1,
                }
            ),
            "worker": base.worker.model_copy(update={"state_dir": work_dir / "state"}),
            "models": base.models.model_copy(update={"store": str(work_dir / "models")}),
            "metrics": base.metrics.model_copy(update={"port": 0}),
        }
    )


def collect_recommendations(
    settings: Settings, cases: list[EvalCase], timeout: float
) -> dict[str, dict]:
    """user_id → the recommendation for its target's domain triggered by its last history event."""
    wanted = {(case.user_id, case.domain): case.history[-1].ts for case in cases if case.history}
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    topics = [settings.topics.recs(domain) for domain in settings.domains]
    for rec in follow(
        settings,
        topics,
        from_beginning=True,
        idle_timeout=timeout,
        should_stop=lambda: len(found) == len(wanted) or time.monotonic() > deadline,
    ):
        key = (rec["user_id"], rec["target_domain"])
        if wanted.get(key) == rec["trigger"]["event_time"]:
            found[rec["user_id"]] = rec
    return found


def streamed_ranks(cases: list[EvalCase], recs: dict[str, dict], top_k: int) -> np.ndarray:
    """1-based rank of each case's target in its streamed list; ``top_k + 1`` when absent."""
    ranks = []
    for case in cases:
        items = [item["item_id"] for item in recs.get(case.user_id, {}).get("items", [])]
        ranks.append(
            items.index(case.target.item_id) + 1 if case.target.item_id in items else top_k + 1
        )
    return np.array(ranks)


def evaluate_streaming(
    dataset_dir: Path,
    base: Settings,
    work_dir: Path,
    *,
    splits: tuple[str, ...] = EVALUATION_SPLITS,
    top_k: int = 20,
    rate: float = 300.0,
    timeout: float = 900.0,
    priors: dict[str, PopularityPrior] | None = None,
) -> dict:
    """Replay, run a worker, score what it published; returns per group metrics and lists.

    Events are replayed in event-time order at ``rate`` per second, as live traffic arrives,
    so that the worker sees each user's domains interleaved as they happened. With
    ``priors`` (group → version 0's popularity prior, as the offline evaluation fitted it),
    each group's prior is published as the serving version before its worker starts."""
    dataset = Dataset(dataset_dir)
    domains = sorted({item.domain for item in dataset.items()})
    results: dict = {}
    for group in ("warm", "cold"):
        group_dir = work_dir / group
        folder = (
            dataset
            if group == "warm"
            else Dataset(write_cold_variant(dataset, group_dir / "dataset", splits))
        )
        cases = [c for c in load_cases(folder, splits).cases["warm"] if c.history]
        settings = streaming_settings(base, domains, group_dir, top_k)
        create_topics(settings)
        replay_dataset(settings, folder, include_events=False, progress=False)
        if priors is not None and group in priors:
            version = f"{ZERO_SHOT_VERSION}-prior-{group}-{uuid.uuid4().hex[:6]}"
            stored = save_prior(
                priors[group],
                ModelStore(settings.models.store).path_of(version),
                version=version,
                parent_version=None,
                data_window={},
                metrics={},
                fit={"source": "offline evaluation"},
            )
            publish_update(settings, model_update_for(stored))
        worker = WorkerProcess(settings, group_dir / "worker.log")
        started = time.perf_counter()
        try:
            worker.start(timeout=timeout)
            users = {case.user_id for case in cases}
            replay_dataset(
                settings, folder, rate=rate, include_catalog=False, users=users, progress=False
            )
            recs = collect_recommendations(settings, cases, timeout)
        finally:
            worker.stop()
        ranks = streamed_ranks(cases, recs, top_k)
        metrics = {k: v for k, v in rank_metrics(ranks).items() if k != "mrr"}
        metrics["users"] = len(cases)
        metrics["missing_recommendations"] = len(cases) - len(recs)
        results[group] = {
            "metrics": metrics,
            "lists": {user: [i["item_id"] for i in rec["items"]] for user, rec in recs.items()},
            "seconds": round(time.perf_counter() - started, 2),
        }
        log.info("streaming evaluation group=%s users=%d recs=%d", group, len(cases), len(recs))
    return results
