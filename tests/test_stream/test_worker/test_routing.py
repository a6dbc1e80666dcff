"""Which records a worker applies and which it moves to their user's partition."""

from __future__ import annotations

from stream.core.records import ORIGIN_HEADER, SourceRecord, origin_of
from stream.kafka.topics import key_partition
from stream.settings import Settings
from stream.worker.routing import PartitionRouter

PARTITIONS = 4


def _settings(**worker: object) -> Settings:
    return Settings(domains=["books", "movies"], topics={"partitions": PARTITIONS}, worker=worker)


def _users() -> tuple[bytes, bytes]:
    """A user id whose murmur2 partition is 0 and one whose partition is not."""
    keys = [f"user-{n}".encode() for n in range(100)]
    home = next(k for k in keys if key_partition(k, PARTITIONS) == 0)
    away = next(k for k in keys if key_partition(k, PARTITIONS) != 0)
    return home, away


def test_records_on_their_users_partition_stay_and_the_others_move_there() -> None:
    settings = _settings()
    router = PartitionRouter(settings)
    books = settings.topics.events("books")
    home, away = _users()
    kept = SourceRecord(books, 0, 5, home, b"{}")
    misrouted = SourceRecord(books, 0, 6, away, b"payload")
    keyless = SourceRecord(books, 0, 7, None, b"{}")
    catalog = SourceRecord(settings.topics.catalog("books"), 0, 8, away, b"{}")
    routed = router.split([kept, misrouted, keyless, catalog])
    assert routed.own == [kept, keyless, catalog]
    assert routed.misrouted == {books: 1}
    (copy,) = routed.moved
    assert (copy.topic, copy.partition, copy.key, copy.value) == (
        books,
        key_partition(away, PARTITIONS),
        away,
        b"payload",
    )
    assert origin_of(copy.headers) == (books, 0, 6)


def test_a_copy_moved_again_keeps_its_first_origin() -> None:
    settings = _settings()
    books = settings.topics.events("books")
    _, away = _users()
    moved_before = SourceRecord(books, 0, 9, away, b"{}", origin=(books, 2, 3))
    (copy,) = PartitionRouter(settings).split([moved_before]).moved
    assert origin_of(copy.headers) == (books, 2, 3)


def test_with_rerouting_off_misrouted_records_are_applied_where_they_land_but_counted() -> None:
    settings = _settings(reroute_misrouted=False)
    erasures = settings.topics.erasure()
    _, away = _users()
    record = SourceRecord(erasures, 0, 1, away, b"{}")
    routed = PartitionRouter(settings).split([record])
    assert routed.own == [record] and not routed.moved
    assert routed.misrouted == {erasures: 1}


def test_origin_headers_are_read_from_either_shape_and_malformed_ones_ignored() -> None:
    assert origin_of([(ORIGIN_HEADER, b"events.books:2:17")]) == ("events.books", 2, 17)
    assert origin_of({ORIGIN_HEADER: b"a.b:c:0:1"}) == ("a.b:c", 0, 1)
    assert origin_of([("other", b"x"), (ORIGIN_HEADER, "t:1:2")]) == ("t", 1, 2)
    for bad in (b"events.books:2", b"t:-1:3", b"t:x:3", b":1:2", b"\xff:1:2"):
        assert origin_of([(ORIGIN_HEADER, bad)]) is None, bad
    assert origin_of(None) is None and origin_of([]) is None
