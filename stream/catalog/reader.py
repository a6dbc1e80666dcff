"""Reads the compacted ``catalog.<domain>`` topics into the item catalog, encoding new text.

Every worker reads every catalog partition (the catalog is global, users are partitioned), so
it uses ``assign()`` without a consumer group. Items whose text was encoded before under the
same encoder are skipped, so a restart re-reads the topic but encodes nothing twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from schemas import CatalogItem, DeadLetter, EventValidator, Rejection
from stream.catalog.encoder import TextEncoder
from stream.catalog.store import ItemCatalog
from stream.core.items import item_text, text_digest
from stream.core.records import SourceRecord, dead_letter
from stream.kafka.transport import end_offsets, make_admin, make_consumer, retry_transient
from stream.settings import Settings

log = logging.getLogger(__name__)

_POLL_BATCH = 2_000


class CatalogReader:
    """Keeps an :class:`ItemCatalog` up to date with the catalog topics."""

    def __init__(
        self,
        settings: Settings,
        catalog: ItemCatalog,
        encoder: TextEncoder,
        validator: EventValidator,
        publish_dead_letters: Callable[[list[DeadLetter]], None],
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.encoder = encoder
        self.validator = validator
        self.publish_dead_letters = publish_dead_letters
        self.topic_domains = {settings.topics.catalog(d): d for d in settings.domains}
        self.items_encoded = 0
        self._consumer = make_consumer(settings)
        self._admin = make_admin(settings)  # end offsets without waiting behind our fetches
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._partitions: list[TopicPartition] = []

    def assign(self) -> None:
        """Read every partition of every catalog topic from the beginning."""
        metadata = retry_transient(
            lambda: self._consumer.list_topics(timeout=10.0).topics,
            operation="catalog_assign",
            timeout=self.settings.kafka.retry_timeout_seconds,
        )
        partitions = []
        for topic in self.topic_domains:
            if topic not in metadata:
                raise RuntimeError(
                    f"catalog topic {topic} does not exist: run `xdrec topics create`"
                )
            partitions.extend(
                TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata[topic].partitions
            )
        self._partitions = partitions
        self._consumer.assign(partitions)

    def catch_up(self, timeout: float = 600.0) -> int:
        """Read until the end as of now; returns items encoded. Logs progress on long catalogs.

        While the broker is unreachable (a restart), the attempt is retried for up to
        ``kafka.retry_timeout_seconds`` (then BrokerUnavailableError): repeating it is safe,
        since reading resumes from the consumer's position and encoded text is skipped.
        """
        return retry_transient(
            lambda: self._catch_up_once(timeout),
            operation="catalog_catch_up",
            timeout=self.settings.kafka.retry_timeout_seconds,
        )

    def _catch_up_once(self, timeout: float) -> int:
        with self._lock:  # released between retries, so the follower thread can go on
            ends = self._end_offsets()
            total = sum(ends.values())
            started = time.perf_counter()
            encoded_before = self.items_encoded
            last_report = started
            while time.perf_counter() - started < timeout:
                positions = self._consumer.position([TopicPartition(topic, p) for topic, p in ends])
                behind = [
                    tp for tp in positions if ends[(tp.topic, tp.partition)] > max(tp.offset, 0)
                ]
                if not behind:
                    break
                self._poll_once(0.2)
                if time.perf_counter() - last_report > 5.0:
                    last_report = time.perf_counter()
                    done = sum(max(tp.offset, 0) for tp in positions)
                    log.info(
                        "catalog loading read=%d/%d encoded=%d items_per_second=%.0f",
                        done,
                        total,
                        self.items_encoded - encoded_before,
                        (self.items_encoded - encoded_before) / (last_report - started),
                    )
            encoded = self.items_encoded - encoded_before
            log.info(
                "catalog caught up messages=%d encoded=%d items=%s seconds=%.2f",
                total,
                encoded,
                self.catalog.counts(),
                time.perf_counter() - started,
            )
            return encoded

    def _end_offsets(self) -> dict[tuple[str, int], int]:
        try:
            return end_offsets(self._admin, self._partitions)
        except KafkaException:
            # An admin client that saw the broker restart keeps asking with the leader epochs
            # it knew (FENCED_LEADER_EPOCH until its timeout): the retry gets a fresh one.
            self._admin = make_admin(self.settings)
            raise

    def _poll_once(self, timeout: float) -> int:
        messages = self._consumer.consume(_POLL_BATCH, timeout=timeout)
        latest: dict[tuple[str, str], CatalogItem | None] = {}
        rejected: list[DeadLetter] = []
        now = time.time()
        for message in messages:
            if message.error():
                log.warning("catalog read error error=%s", message.error().str())
                continue
            domain = self.topic_domains[message.topic()]
            value = message.value()
            key = message.key()
            if value is None:  # tombstone: the item was withdrawn
                if key is not None:
                    latest[(domain, key.decode("utf-8", "replace"))] = None
                continue
            result = self.validator.validate_catalog_item(value, domain)
            if isinstance(result, Rejection):
                record = SourceRecord(
                    message.topic(), message.partition(), message.offset(), key, value
                )
                rejected.append(dead_letter(record, result, now))
                continue
            latest[(domain, result.item_id)] = result
        if rejected:
            self.publish_dead_letters(rejected)
        self._apply(latest)
        return len(messages)

    def _apply(self, latest: dict[tuple[str, str], CatalogItem | None]) -> None:
        todo: dict[str, list[tuple[str, str, bytes]]] = {}
        for (domain, item_id), item in latest.items():
            if item is None:
                self.catalog.remove(domain, item_id)
                continue
            text = item_text(item.title, item.text)
            digest = text_digest(text)
            if self.catalog.needs_encoding(domain, item_id, digest):
                todo.setdefault(domain, []).append((item_id, text, digest))
        for domain, rows in todo.items():
            vectors = self.encoder.encode([text for _, text, _ in rows])
            self.catalog.add(domain, [r[0] for r in rows], [r[2] for r in rows], vectors)
            self.items_encoded += len(rows)

    def start(self) -> None:
        """Follow the catalog topics in a background thread."""
        self._thread = threading.Thread(target=self._run, name="catalog-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self._poll_once(0.2)
            except Exception:
                log.exception("catalog reader failed; retrying in 1s")
                time.sleep(1.0)
            time.sleep(0.05)  # let catch_up() take the lock between polls

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._consumer.close()
