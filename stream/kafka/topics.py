"""Creates xdrec's topics through confluent-kafka's AdminClient; running it twice is harmless."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from stream.kafka.transport import make_admin, unreachable_hint
from stream.settings import Settings

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}

# Keys on the compacted model-updates topic: the version every worker serves, and the one
# served to a share of users only (online comparison; a tombstone ends it).
UPDATE_KEY = b"serving"
CANDIDATE_KEY = b"candidate"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of ``key`` under Kafka's Java default (murmur2), which xdrec's producers
    use too (``murmur2_random``): the one a user's state lives on. librdkafka's own default
    (``consistent_random``, CRC32), and so kcat's and most non-Java clients', differs for most
    keys."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes, with its partitions and configuration.

    Event topics and the state changelog share one partition count: a user's events of every
    domain and their state must land on the same partition number.
    """
    topics = settings.topics
    partitions = topics.partitions
    specs = []
    event_log = {"retention.ms": str(topics.events_retention_ms)}
    for domain in settings.domains:
        specs.append(TopicSpec(topics.events(domain), partitions, event_log))
        specs.append(TopicSpec(topics.catalog(domain), partitions, COMPACTED))
        specs.append(TopicSpec(topics.recs(domain), partitions, {}))
    specs.append(TopicSpec(topics.dead_letters(), partitions, {}))
    # Co-partitioned with the events (keyed by user_id): the owner of a user's state sees it.
    specs.append(TopicSpec(topics.erasure(), partitions, COMPACTED))
    specs.append(TopicSpec(topics.state_changelog(settings.app_id), partitions, COMPACTED))
    specs.append(TopicSpec(topics.model_updates(), 1, COMPACTED))
    # One partition: the trainer sees requests in order and coalesces what piled up.
    specs.append(TopicSpec(topics.training_requests(), 1, {}))
    # faust's partition assignor elects its leader through this topic.
    specs.append(TopicSpec(f"{settings.app_id}-__assignor-__leader", 1, {}))
    return specs


def create_topics(settings: Settings, timeout: float = 30.0) -> dict[str, str]:
    """Create missing topics; returns ``name -> "created" | "exists"``.

    An existing topic with a different partition count is reported, not changed: changing it
    would move users between partitions and split their state.
    """
    admin = make_admin(settings)
    specs = topic_specs(settings)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise ConnectionError(unreachable_hint(settings)) from exc
    outcome: dict[str, str] = {}
    to_create = []
    for spec in specs:
        if spec.name in existing:
            actual = len(existing[spec.name].partitions)
            if actual != spec.partitions:
                log.warning(
                    "topic partition count differs topic=%s configured=%d actual=%d",
                    spec.name,
                    spec.partitions,
                    actual,
                )
            outcome[spec.name] = "exists"
        else:
            to_create.append(
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=settings.topics.replication_factor,
                    config=spec.config,
                )
            )
    if to_create:
        futures = admin.create_topics(to_create, operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result()
                outcome[name] = "created"
                log.info("topic created topic=%s", name)
            except KafkaException as exc:
                error = exc.args[0]
                if (
                    isinstance(error, KafkaError)
                    and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
                ):
                    outcome[name] = "exists"
                else:
                    raise
    return outcome
