"""Erasure requests (right to be forgotten): one compacted record per user, keyed by user_id.

The topic is co-partitioned with the event topics, so the worker that owns a user's state
receives the request in the same stream as the user's events; the trainer reads the whole topic
to leave erased users out of every later training window.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer

from schemas import SCHEMA_VERSION, ErasureRequest, EventValidator
from stream.kafka.snapshot import read_ranges, topic_ranges
from stream.kafka.transport import OutgoingMessage, make_producer, produce_all
from stream.settings import Settings


def request_erasure(settings: Settings, user_id: str, requested_by: str = "cli") -> None:
    """What ``xdrec user forget USER_ID`` does."""
    request = ErasureRequest(
        schema_version=SCHEMA_VERSION,
        user_id=user_id,
        requested_at=time.time(),
        requested_by=requested_by,
    )
    message = OutgoingMessage(
        settings.topics.erasure(), user_id.encode("utf-8"), request.model_dump_json().encode()
    )
    produce_all(make_producer(settings), [message])


def erased_users(settings: Settings, consumer: Consumer, progress: bool = False) -> set[str]:
    """Every user with a valid erasure request on the topic (as it is now)."""
    validator = EventValidator(settings.domains)
    users: set[str] = set()
    ranges = topic_ranges(consumer, settings.topics.erasure(), None)
    for message in read_ranges(consumer, ranges, "reading erasures", progress):
        request = validator.validate_erasure(message.value())
        if isinstance(request, ErasureRequest):
            users.add(request.user_id)
    return users
