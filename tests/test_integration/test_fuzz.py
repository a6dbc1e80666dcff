"""Hostile input, fuzzed: over 10,000 malformed or hostile events, interleaved with valid ones,
through the real broker into one real worker process.

The promise under test: no hostile record crashes or stalls the worker, each one lands in the
dead-letter topic exactly once with a reason, and every valid event around them is applied.

The records come from hypothesis strategies, one family per kind of hostility (invalid UTF-8,
deep nesting, huge strings, NaN and infinities, negative and far-future timestamps, unknown
fields, wrong types, unknown domains, ...). Each family knows the dead-letter reason its records
must get, from the contract alone (``schemas.contracts`` and the order of checks documented in
``schemas.validation``), never from running the validator. Generation is derandomized, so every
run sends the same corpus and a failure names a record that can be looked at again.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
import random
import re
import string
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas import DeadLetter
from schemas.contracts import DeadLetterReason
from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.data.sample import sample_items, write_sample_dataset
from stream.kafka.transport import OutgoingMessage
from stream.settings import LimitSettings, Settings
from testkit.deployment import WorkerProcess, produce_tracked, read_topic, user_event

pytestmark = pytest.mark.integration

HOSTILE_COUNT = 10_000
PER_EXAMPLE = 50  # records drawn per hypothesis example; examples stay small and fast
VALID_COUNT = 300

T0 = 1_704_067_200.0  # 2024-01-01
DAY = 86_400.0
FAR_FUTURE = 4_102_444_800.0  # 2100-01-01: beyond any clock skew for this test's lifetime

LIMITS = LimitSettings()  # the deployment under test runs with the default limits
DOMAINS = ("books", "music", "movies")
CATALOG = {
    domain: tuple(item["item_id"] for item in sample_items() if item["domain"] == domain)
    for domain in DOMAINS
}
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "review", "rating")
FIELDS = (
    "schema_version",
    "event_id",
    "user_id",
    "domain",
    "item_id",
    "event_type",
    "timestamp",
    "rating",
    "title",
    "text",
)
ID_FIELDS = ("event_id", "user_id", "item_id")


@dataclass(frozen=True, slots=True)
class Record:
    """One record to send: the domain whose events topic gets it, key, value, and the
    dead-letter reasons it may be given (empty for a valid event)."""

    family: str
    domain: str
    key: bytes | None
    value: bytes | None
    reasons: frozenset[str]
    event_id: str | None = None


# --- building blocks -------------------------------------------------------------------------
# Strategies are built once, here: hypothesis draws are cheap, building strategies per draw is not.

# Characters an identifier or text may hold: no control characters, no lone surrogates.
printable = st.characters(exclude_categories=("Cs", "Cc"))
some_text = st.text(printable, max_size=20)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | some_text
)
json_lists = st.lists(json_scalars, max_size=3)
json_objects = st.dictionaries(st.text(max_size=6), json_scalars, max_size=3)
json_values = json_scalars | json_lists | json_objects
numbers = st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
domains = st.sampled_from(DOMAINS)
percent = st.integers(0, 99)


def sizes(low: int, high: int) -> st.SearchStrategy[int]:
    """Log-uniform in [low, high]: most huge values are just over a limit, some far over."""
    top = (high - low + 1).bit_length() - 1
    return st.tuples(st.integers(0, top), st.integers(0, 2**30)).map(
        lambda pair: min(high, low + (1 << pair[0]) - 1 + pair[1] % (1 << pair[0]))
    )


def huge_strings(low: int, high_bytes: int) -> st.SearchStrategy[str]:
    """A short drawn pattern repeated to at least ``low`` characters, and to at most
    ``high_bytes`` bytes however it is serialized (cheap to draw at any size)."""

    def build(pattern: str, length: int) -> str:
        per_char = (len(json.dumps(pattern)) - 2) / len(pattern)  # worst case: \u escapes
        length = max(low, min(length, int(high_bytes / per_char)))
        return (pattern * (length // len(pattern) + 1))[:length]

    return st.builds(build, st.text(printable, min_size=1, max_size=4), sizes(low, high_bytes))


class Raw:
    """A JSON token written verbatim (NaN, 1e999, deep nesting, ...)."""

    def __init__(self, text: str) -> None:
        self.text = text


STYLES = st.sampled_from(
    [(ascii, separators) for ascii in (True, False) for separators in ((",", ":"), (", ", ": "))]
)


def dump(draw: st.DrawFn, body: Any) -> bytes:
    """``body`` as JSON bytes in a drawn style (ASCII-escaped or raw UTF-8, compact or spaced);
    :class:`Raw` values are spliced in as written."""
    raws: list[str] = []

    def placeholder(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(value, dict):
            return {key: placeholder(item) for key, item in value.items()}
        if isinstance(value, list):
            return [placeholder(item) for item in value]
        return value

    ascii, separators = draw(STYLES)
    text = json.dumps(placeholder(body), ensure_ascii=ascii, separators=separators)
    for index, raw in enumerate(raws):
        text = text.replace(f'"\\u0000raw{index}\\u0000"', raw)
    return text.encode("utf-8")


def _base_bodies(count: int = 600) -> dict[str, tuple[dict[str, Any], ...]]:
    """Valid event bodies for catalog items, per domain: what hostile families break.

    They come from a seeded generator, so that each hostile record spends its hypothesis draws
    on the hostile part."""
    rng = random.Random(1990)
    users = [f"h-{n}" for n in range(40)] + ["Zoë", "用户", "🙂", "a b", "x" * 200, "ID\u00a0"]
    by_domain: dict[str, list[dict[str, Any]]] = {domain: [] for domain in DOMAINS}
    for n in range(count):
        domain = DOMAINS[n % len(DOMAINS)]
        body: dict[str, Any] = {
            "schema_version": 1,
            "event_id": f"{rng.getrandbits(128):032x}",
            "user_id": rng.choice(users),
            "domain": domain,
            "item_id": rng.choice(CATALOG[domain]),
            "event_type": rng.choice(EVENT_TYPES),
            "timestamp": rng.uniform(LIMITS.min_timestamp, T0 + 30 * DAY),
        }
        if rng.random() < 0.5:
            body["rating"] = rng.choice([0, 5, 2.5, rng.uniform(0.0, 5.0)])
        by_domain[domain].append(body)
    return {domain: tuple(bodies) for domain, bodies in by_domain.items()}


BASES = _base_bodies()
ALL_BASES = st.sampled_from([body for domain in DOMAINS for body in BASES[domain]])
BASES_OF = {domain: st.sampled_from(BASES[domain]) for domain in DOMAINS}


def body(draw: st.DrawFn, domain: str | None = None) -> dict[str, Any]:
    """A fresh copy of a valid base body (of ``domain`` if given)."""
    return dict(draw(BASES_OF[domain] if domain else ALL_BASES))


def keys_for(draw: st.DrawFn, value: Any) -> bytes | None:
    """The key a well-behaved producer would use (the user id), or sometimes none at all."""
    user = value.get("user_id") if isinstance(value, dict) else None
    if isinstance(user, str) and draw(percent) >= 20:
        return user.encode("utf-8")[:1024]
    return None


def finish(
    family: str, domain: str, key: bytes | None, value: bytes | None, *reasons: str
) -> Record:
    """The size check comes first (schemas.validation), so anything too big is 'oversized'."""
    if value is not None and len(value) > LIMITS.max_event_bytes:
        reasons = ("oversized",)
    return Record(family, domain, key, value, frozenset(reasons))


def broken(
    draw: st.DrawFn,
    family: str,
    value: Any,
    *reasons: str,
    domain: str | None = None,
    keyed: bool = True,
) -> Record:
    """A record from ``value`` serialized, keyed like a real producer would key it."""
    topic_domain = domain or (value.get("domain") if isinstance(value, dict) else None)
    if topic_domain not in DOMAINS:
        topic_domain = draw(domains)
    key = keys_for(draw, value) if keyed else None
    return finish(family, topic_domain, key, dump(draw, value), *reasons)


def _decodes(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


# --- hostile families ------------------------------------------------------------------------

BAD_UTF8 = st.sampled_from(
    [
        b"\xff",
        b"\xfe\xff",
        b"\xc3\x28",  # a two-byte start without its continuation
        b"\xa0\xa1",  # continuations without a start
        b"\xe2\x28\xa1",
        b"\xf0\x28\x8c\xbc",
        b"\xed\xa0\x80",  # an encoded UTF-16 surrogate
        b"\xc0\xaf",  # an overlong '/'
        b"\xf8\x88\x80\x80\x80",  # five-byte sequences do not exist
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"\xe2\x82",  # a truncated three-byte sequence
    ]
)
UTF8_HOW = st.sampled_from(["spliced", "latin-1", "utf-16", "binary"])
STRING_FIELDS = st.sampled_from(["event_id", "user_id", "item_id", "title", "text"])
WIDE_ENCODINGS = st.sampled_from(["utf-16", "utf-16-be", "utf-32"])
SHORT_ASCII = st.text(string.ascii_letters, max_size=20)
SHORT_TEXT = st.text(printable, max_size=5)
SHORT_BINARY = st.binary(max_size=300)


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Record:
    event = body(draw)
    how = draw(UTF8_HOW)
    if how == "spliced":
        event[draw(STRING_FIELDS)] = "\x01splice\x01"
        value = dump(draw, event)
        bad = draw(SHORT_TEXT).encode() + draw(BAD_UTF8)
        value = value.replace(b"\\u0001splice\\u0001", bad)
    elif how == "latin-1":  # a producer in the wrong encoding
        event["text"] = "Café crème " + draw(SHORT_ASCII)
        value = json.dumps(event, ensure_ascii=False).encode("latin-1", errors="replace")
    elif how == "utf-16":
        value = json.dumps(event).encode(draw(WIDE_ENCODINGS))
        if _decodes(value):  # UTF-16-BE of ASCII is, byte for byte, valid UTF-8
            value = b"\xff" + value
    else:
        value = b"\xff" + draw(SHORT_BINARY)
    return finish("invalid_utf8", event["domain"], keys_for(draw, event), value, "invalid_utf8")


DEPTHS = sizes(2, 20_000)
NESTINGS = st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")])
NEST_PLACES = st.sampled_from(["text", "title", "user_id", "unknown", "whole"])


@st.composite
def deep_nesting(draw: st.DrawFn) -> Record:
    """Deep arrays or objects where a string belongs, in an unknown field, or as the whole
    value. Shallow ones violate the schema; deep ones must hit the parser's depth limit."""
    depth = draw(DEPTHS)
    opener, closer = draw(NESTINGS)
    nested = opener * depth + ("0" if opener.endswith(":") else "") + closer * depth
    event = body(draw)
    where = draw(NEST_PLACES)
    if where == "whole":  # an array: a whole object would also lack every field
        whole = nested if opener.startswith("[") else f"[{nested}]"
        return broken(draw, "deep_nesting", Raw(whole), "invalid_json", "schema_violation")
    event["nested" if where == "unknown" else where] = Raw(nested)
    return broken(draw, "deep_nesting", event, "invalid_json", "schema_violation")


HUGE_FIELDS = st.sampled_from(["text", "title", *ID_FIELDS, "domain", "unknown"])
HUGE_TEXT = huge_strings(LIMITS.max_text_chars + 1, 2 * LIMITS.max_event_bytes)
HUGE_ID = huge_strings(LIMITS.max_id_chars + 1, 2 * LIMITS.max_event_bytes)


@st.composite
def huge_values(draw: st.DrawFn) -> Record:
    event = body(draw)
    field = draw(HUGE_FIELDS)
    if field in ("text", "title"):
        event[field] = draw(HUGE_TEXT)
        return broken(draw, "huge_string", event, "text_too_long")
    event["blob" if field == "unknown" else field] = draw(HUGE_ID)
    return broken(draw, "huge_string", event, "schema_violation", keyed=False)


NON_FINITE_FIELDS = st.sampled_from(["timestamp", "rating"])
NON_FINITE = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "4E400"])
NOT_EVEN_LENIENT = st.sampled_from(["nan", "inf", "-inf", "+Infinity", "NAN"])


@st.composite
def non_finite(draw: st.DrawFn) -> Record:
    event = body(draw)
    field = draw(NON_FINITE_FIELDS)
    if draw(percent) < 15:  # not JSON at all, not even in the lenient dialect
        event[field] = Raw(draw(NOT_EVEN_LENIENT))
        return broken(draw, "non_finite", event, "invalid_json")
    event[field] = Raw(draw(NON_FINITE))
    return broken(draw, "non_finite", event, "schema_violation")


BAD_TIMESTAMPS = (
    st.floats(max_value=-1e-300, allow_infinity=False)
    | st.just(-0.0)
    | st.floats(0.0, LIMITS.min_timestamp, exclude_max=True)
    | st.floats(min_value=FAR_FUTURE, allow_infinity=False)
    | st.floats(T0, T0 + DAY).map(lambda seconds: seconds * 1000.0)  # milliseconds
    | st.integers(19, 300).map(lambda e: Raw("1" + "0" * e))  # integers past int64
)


@st.composite
def bad_timestamps(draw: st.DrawFn) -> Record:
    event = body(draw)
    event["timestamp"] = draw(BAD_TIMESTAMPS)
    return broken(draw, "bad_timestamp", event, "timestamp_out_of_range")


FIELD_NAMES = st.sampled_from(
    ["__proto__", "constructor", "$where", "Event_ID", "USER_ID", "domain ", ""]
) | st.text(printable, min_size=1, max_size=30).filter(lambda name: name not in FIELDS)


@st.composite
def unknown_fields(draw: st.DrawFn) -> Record:
    event = body(draw)
    event[draw(FIELD_NAMES)] = draw(json_values)
    return broken(draw, "unknown_field", event, "schema_violation")


ALL_FIELDS = st.sampled_from(FIELDS)
NOT_A_STRING = numbers | st.booleans() | st.none() | json_lists | json_objects
WRONG_VALUES = {
    **dict.fromkeys(("event_id", "user_id", "item_id", "domain", "event_type"), NOT_A_STRING),
    # null is allowed for title, text and rating
    "title": numbers | st.booleans() | json_lists | json_objects,
    "text": numbers | st.booleans() | json_lists | json_objects,
    "timestamp": some_text | st.booleans() | st.none() | json_lists | json_objects,
    "rating": some_text | st.booleans() | json_lists | json_objects,
    "schema_version": st.text(max_size=3) | st.none() | json_lists | json_objects,
}
REASON_OF_FIELD = {
    "schema_version": "unsupported_schema_version",
    "event_type": "unknown_event_type",
}


@st.composite
def wrong_types(draw: st.DrawFn) -> Record:
    event = body(draw)
    field = draw(ALL_FIELDS)
    event[field] = draw(WRONG_VALUES[field])
    reason = REASON_OF_FIELD.get(field, "schema_violation")
    if field == "event_type" and event[field] is None:
        reason = "schema_violation"  # a null event type is a missing one
    return broken(draw, "wrong_type", event, reason, domain=draw(domains))


REQUIRED = st.sampled_from(["schema_version", "event_type", "timestamp", "domain", *ID_FIELDS])


@st.composite
def null_or_missing(draw: st.DrawFn) -> Record:
    event = body(draw)
    field = draw(REQUIRED)
    missing = draw(percent) < 50
    if missing:
        del event[field]
    else:
        event[field] = None
    if field == "schema_version" and not missing:
        reason = "unsupported_schema_version"
    else:
        reason = "schema_violation"
    return broken(draw, "null_or_missing", event, reason, domain=draw(domains))


DOMAIN_KINDS = st.sampled_from(["unknown", "other", "malformed"])
UNKNOWN_DOMAINS = st.sampled_from(
    ["podcasts", "games", "astrology", "book", "movies2", "b-o-o-k-s"]
) | st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True).filter(lambda name: name not in DOMAINS)
MALFORMED_DOMAINS = st.sampled_from(
    ["Books", "", "books ", "bööks", "1books", "x" * 33, "books\n", "_books"]
) | st.text(printable, max_size=40).filter(
    lambda name: not (name[:1].islower() and name.isascii() and len(name) < 33)
)


@st.composite
def unknown_domains(draw: st.DrawFn) -> Record:
    """A record on a known domain's topic whose body names a domain the deployment lacks, another
    known domain, or something that is no domain name at all."""
    topic_domain = draw(domains)
    event = body(draw, topic_domain)
    kind = draw(DOMAIN_KINDS)
    if kind == "unknown":
        event["domain"] = draw(UNKNOWN_DOMAINS)
        reason = "unknown_domain"
    elif kind == "other":
        other = draw(domains.filter(lambda name: name != topic_domain))
        event = {**body(draw, other), "user_id": event["user_id"]}
        reason = "domain_mismatch"
    else:
        event["domain"] = draw(MALFORMED_DOMAINS)
        reason = "schema_violation"
    return broken(draw, "unknown_domain", event, reason, domain=topic_domain)


EXCESS = sizes(1, LIMITS.max_event_bytes)
OVERSIZED_HOW = st.sampled_from(["whitespace", "text", "garbage"])
PATTERN = st.binary(min_size=1, max_size=16)


@st.composite
def oversized(draw: st.DrawFn) -> Record:
    limit = LIMITS.max_event_bytes
    event = body(draw)
    size = limit + draw(EXCESS)
    how = draw(OVERSIZED_HOW)
    if how == "whitespace":  # otherwise a perfectly valid event
        compact = dump(draw, event)
        value = compact[:-1] + b" " * (size - len(compact)) + b"}"
    elif how == "text":
        event["text"] = "x" * size
        value = dump(draw, event)
    else:
        value = (draw(PATTERN) * size)[:size]
    return finish("oversized", event["domain"], keys_for(draw, event), value, "oversized")


OTHER_KEYS = st.sampled_from(["upper", "space", "prefix", "other"])
SOME_BINARY = st.binary(min_size=1, max_size=64)


@st.composite
def key_mismatch(draw: st.DrawFn) -> Record:
    """A valid event whose key is not its user: it would land on another user's partition."""
    event = body(draw)
    user = event["user_id"].encode("utf-8")
    key = {
        "upper": user.upper() + b"!",
        "space": user + b" ",
        "prefix": b"\xff" + user,
        "other": draw(SOME_BINARY),
    }[draw(OTHER_KEYS)]
    if key == user:
        key = b"not-" + user
    return finish("key_mismatch", event["domain"], key, dump(draw, event), "key_mismatch")


NOT_OBJECTS = json_scalars | json_lists | st.lists(ALL_BASES, min_size=1, max_size=2)


@st.composite
def not_objects(draw: st.DrawFn) -> Record:
    """Valid JSON that is no object: scalars, arrays, a batch of events in one message."""
    return broken(draw, "not_object", draw(NOT_OBJECTS), "schema_violation")


EMPTY_VALUES = st.sampled_from([None, b"", b" ", b"\n", b"\t\r\n "])
ANY_KEY = st.none() | st.binary(min_size=1, max_size=10)


@st.composite
def empty_values(draw: st.DrawFn) -> Record:
    value = draw(EMPTY_VALUES)
    return finish("empty", draw(domains), draw(ANY_KEY), value, "invalid_json")


ID_PICK = st.sampled_from(ID_FIELDS)
CONTROL = st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f"])
BAD_ID_VALUES = (
    huge_strings(LIMITS.max_id_chars + 1, 4096)
    | st.just("")
    | st.tuples(some_text, CONTROL, some_text).map("".join)
)


@st.composite
def bad_ids(draw: st.DrawFn) -> Record:
    event = body(draw)
    event[draw(ID_PICK)] = draw(BAD_ID_VALUES)
    return broken(draw, "bad_id", event, "schema_violation", keyed=False)


TEXT_TOTALS = sizes(LIMITS.max_text_chars + 1, 4 * LIMITS.max_text_chars)


@st.composite
def long_texts(draw: st.DrawFn) -> Record:
    """Title and text together over max_text_chars, though each may be short enough."""
    event = body(draw)
    total = draw(TEXT_TOTALS)
    split = total * draw(percent) // 100
    event["title"], event["text"] = "t" * split, "é" * (total - split)
    return broken(draw, "text_too_long", event, "text_too_long")


BAD_RATINGS = (
    st.floats(max_value=-1e-9, allow_infinity=False)
    | st.floats(min_value=5.000001, allow_infinity=False)
    | st.integers(6, 10**6)
    | st.integers(-(10**6), -1)
)


@st.composite
def bad_ratings(draw: st.DrawFn) -> Record:
    event = body(draw)
    event["rating"] = draw(BAD_RATINGS)
    return broken(draw, "bad_rating", event, "schema_violation")


EVENT_TYPE_NAMES = st.sampled_from(
    ["teleport", "View", " view", "purchase ", "PURCHASE", "like", "", "view\u0000"]
) | st.text(printable, max_size=20).filter(lambda name: name not in EVENT_TYPES)


@st.composite
def unknown_event_types(draw: st.DrawFn) -> Record:
    event = body(draw)
    event["event_type"] = draw(EVENT_TYPE_NAMES)
    return broken(draw, "unknown_event_type", event, "unknown_event_type")


GHOST_IDS = st.text(printable, min_size=1, max_size=40).map(lambda name: f"ghost-{name}")
NO_TEXT = st.sampled_from(["absent", "null", "", " ", "\t\n", "\u00a0\u2003", "\r\n  "])


@st.composite
def unknown_items(draw: st.DrawFn) -> Record:
    """An item the catalog does not know, with no usable text to encode it from.

    Before refusing one, the worker catches the catalog up once per batch; that re-reads the
    end offsets of every catalog partition, about half a second each today (the request waits
    behind the reader's pending fetch), so the test sends these records in one run."""
    event = body(draw)
    event["item_id"] = draw(GHOST_IDS)
    for field in ("title", "text"):
        choice = draw(NO_TEXT)
        if choice != "absent":
            event[field] = None if choice == "null" else choice
    return broken(draw, "unknown_item", event, "unknown_item")


BAD_VERSIONS = (
    st.integers().filter(lambda version: version != 1)
    | st.sampled_from(["1", "v1", 2, 99, -1, 0])
    | st.just(Raw("1" + "0" * 30))
)


@st.composite
def bad_schema_versions(draw: st.DrawFn) -> Record:
    event = body(draw)
    event["schema_version"] = draw(BAD_VERSIONS)
    return broken(draw, "schema_version", event, "unsupported_schema_version")


JSON_DAMAGE = st.sampled_from(
    ["truncated", "python_repr", "trailing", "concatenated", "bom", "comma", "garbage"]
)
TRAILERS = st.sampled_from([b"x", b",", b"}", b"]", b"\x00", b"//", b"\n}"])
CUT = st.floats(0.0, 1.0, exclude_max=True)
GARBAGE = st.text(printable, min_size=1, max_size=80).filter(_not_json)


@st.composite
def invalid_json(draw: st.DrawFn) -> Record:
    event = body(draw)
    compact = dump(draw, event)
    reason = "invalid_json"
    how = draw(JSON_DAMAGE)
    if how == "truncated":
        value = compact[: 1 + int(draw(CUT) * (len(compact) - 1))]
        if not _decodes(value):  # cut inside a multi-byte character
            reason = "invalid_utf8"
    elif how == "python_repr":
        value = repr(event).encode("utf-8")
    elif how == "trailing":
        value = compact + draw(TRAILERS)
    elif how == "concatenated":
        value = compact + compact
    elif how == "bom":
        value = b"\xef\xbb\xbf" + compact
    elif how == "comma":
        value = compact[:-1] + b",}"
    else:
        value = draw(GARBAGE).encode("utf-8")
    return finish("invalid_json", event["domain"], keys_for(draw, event), value, reason)


BAD_ESCAPES = st.sampled_from(
    [b"\\ud800", b"\\udfff", b"a\\udc00b", b"\\ud83d", b"\\ude00\\ud83d", b"\\u12", b"\\x41"]
    + [b"a" + bytes([c]) + b"b" for c in range(0x20)]
)
ESCAPE_FIELDS = st.sampled_from(["user_id", "item_id", "text", "title"])


@st.composite
def escapes(draw: st.DrawFn) -> Record:
    """Lone surrogate escapes, bad escapes and raw control characters inside JSON strings."""
    event = body(draw)
    event[draw(ESCAPE_FIELDS)] = "\x01mark\x01"
    value = dump(draw, event).replace(b"\\u0001mark\\u0001", draw(BAD_ESCAPES))
    return finish("escapes", event["domain"], keys_for(draw, event), value, "invalid_json")


FAMILIES = (
    invalid_utf8,
    deep_nesting,
    huge_values,
    non_finite,
    bad_timestamps,
    unknown_fields,
    wrong_types,
    null_or_missing,
    unknown_domains,
    oversized,
    key_mismatch,
    not_objects,
    empty_values,
    bad_ids,
    long_texts,
    bad_ratings,
    unknown_event_types,
    unknown_items,
    bad_schema_versions,
    invalid_json,
    escapes,
)
# The big ones (tens of kilobytes each) share one slot, so the corpus stays some tens of MB
# (flatmap keeps one_of from flattening the slot into its siblings).
BIG = (huge_values, oversized, long_texts)
HOSTILE = st.one_of(
    st.sampled_from([family() for family in BIG]).flatmap(lambda family: family),
    *(family() for family in FAMILIES if family not in BIG),
)


def _generate(count: int) -> tuple[Record, ...]:
    """``count`` hostile records, the same ones on every run (derandomized hypothesis)."""
    collected: list[Record] = []

    @settings(
        derandomize=True,
        database=None,
        max_examples=math.ceil(count / PER_EXAMPLE) + 2,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(st.lists(HOSTILE, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def collect(batch: list[Record]) -> None:
        collected.extend(batch)

    collect()
    return tuple(collected[:count])


hostile_corpus = functools.lru_cache(maxsize=2)(_generate)


# --- valid events ----------------------------------------------------------------------------


def valid_events(settings: Settings, count: int) -> list[Record]:
    """Plain events for catalog items, plus events at the edges of what is allowed."""
    users = [f"valid-{n}" for n in range(40)]
    items = [item_id for domain in DOMAINS for item_id in CATALOG[domain]]
    records = []
    for i in range(count):
        event_id, message = user_event(
            settings, users[i % len(users)], items[(i * 7) % len(items)], T0 + i * 60
        )
        records.append(_valid(message, event_id))
    return records + edge_events(settings)


def _valid(message: OutgoingMessage, event_id: str) -> Record:
    domain = message.topic.rsplit(".", 1)[1]
    return Record("valid", domain, message.key, message.value, frozenset(), event_id)


def edge_events(settings: Settings) -> list[Record]:
    """Valid, but only just: longest ids, rating bounds, the oldest timestamp, the most text,
    exactly max_event_bytes bytes, inline items, unicode users, integer times, explicit nulls."""
    limits = settings.limits
    long_id = "L" * limits.max_id_chars
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"user_id": long_id, "event_id": "e" * limits.max_id_chars}, None),
        ({"item_id": "new-" + "i" * (limits.max_id_chars - 4), "title": "A brand new book"}, None),
        ({"rating": 0.0, "event_type": "rating"}, None),
        ({"rating": 5, "event_type": "rating"}, None),
        ({"timestamp": limits.min_timestamp}, None),
        ({"timestamp": 1_700_000_000}, None),
        ({"user_id": "ユーザー🙂", "rating": None, "title": None, "text": None}, None),
        ({"item_id": "new-inline-1", "title": "T" * 100, "text": "x" * (8192 - 100)}, None),
        ({"item_id": "new-inline-2", "text": "é" * 2000}, "pretty"),
        ({"user_id": "padded-user"}, "padded"),
        ({"user_id": "nul\u00a0user", "text": "a\u0000b"}, None),
    ]
    records = []
    for n, (changes, style) in enumerate(cases):
        event_id, message = user_event(settings, f"edge-{n}", "books-0001", T0 + n)
        body = {**json.loads(message.value), **changes}
        body["event_id"] = changes.get("event_id", event_id)
        if style == "pretty":
            value = json.dumps(body, indent=2, ensure_ascii=False).encode() + b"\n"
        elif style == "padded":
            compact = json.dumps(body).encode()
            value = compact[:-1] + b" " * (limits.max_event_bytes - len(compact)) + b"}"
            assert len(value) == limits.max_event_bytes
        else:
            value = json.dumps(body).encode()
        key = body["user_id"].encode("utf-8")
        records.append(Record("edge", "books", key, value, frozenset(), body["event_id"]))
    return records


# --- the test --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(
    make_settings: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Settings, WorkerProcess]:
    """A deployment with the sample catalog published and one running worker; the corpus is
    generated meanwhile (the worker starts in its own process)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        corpus = pool.submit(hostile_corpus, HOSTILE_COUNT)
        settings = make_settings()
        assert settings.limits == LIMITS and tuple(settings.domains) == DOMAINS
        sample = write_sample_dataset(tmp_path_factory.mktemp("sample"))
        replay_dataset(settings, Dataset(sample), include_events=False, progress=False)
        worker = worker_factory(settings).start()
        corpus.result()
    return settings, worker


def test_hostile_events_go_to_dead_letters_and_valid_ones_are_applied(
    deployment: tuple[Settings, WorkerProcess],
) -> None:
    settings, worker = deployment
    started = time.monotonic()
    hostile = hostile_corpus(HOSTILE_COUNT)
    valid = valid_events(settings, VALID_COUNT)
    generated = time.monotonic()

    # Valid events in their own order (a user's events must stay in order), hostile ones in
    # between. Unknown-item records go first, in one run: each batch holding one makes the
    # worker re-read the catalog ends, which is slow (see unknown_items) and not tested here.
    records = sorted(hostile, key=lambda record: record.family != "unknown_item")
    rng = random.Random(20240101)
    slots = sorted(rng.sample(range(len(records) + len(valid)), len(valid)))
    for slot, record in zip(slots, valid, strict=True):
        records.insert(slot, record)
    placed = produce_tracked(
        settings,
        [OutgoingMessage(settings.topics.events(r.domain), r.key, r.value) for r in records],
    )
    produced = time.monotonic()
    by_place = dict(zip(placed, records, strict=True))

    # Every valid event produced its recommendation: books and music feed movies, movies
    # feeds books (default routes).
    for target, sources in (("movies", {"books", "music"}), ("books", {"movies"})):
        wanted = {r.event_id for r in valid if r.domain in sources}
        recs = read_topic(
            settings,
            settings.topics.recs(target),
            lambda got, wanted=wanted: wanted <= {rec["trigger"]["event_id"] for rec in got},
            timeout=120,
        )
        triggers = Counter(rec["trigger"]["event_id"] for rec in recs)
        assert all(triggers[event_id] == 1 for event_id in wanted)

    raw_letters = read_topic(
        settings,
        settings.topics.dead_letters(),
        lambda got: len(got) >= len(hostile),
        timeout=120,
        decode=False,
    )
    processed = time.monotonic()
    letters = [DeadLetter.model_validate_json(message.value()) for message in raw_letters]
    assert len(letters) == len(hostile)

    seen: Counter[tuple[str, int, int]] = Counter()
    wrong: list[str] = []
    for letter in letters:
        place = (letter.topic, letter.partition, letter.offset)
        seen[place] += 1
        record = by_place.get(place)
        assert record is not None, f"dead letter for a record never sent: {place}"
        assert record.reasons, f"valid {record.family} event dead-lettered: {letter}"
        assert letter.detail.strip()
        original = record.value or b""
        assert letter.original_bytes == len(original)
        if letter.truncated:  # oversized: the letter keeps a prefix, never the whole
            assert letter.reason == "oversized"
            assert original.startswith(base64.b64decode(letter.original))
        else:
            assert base64.b64decode(letter.original) == original
        expected_key = None if record.key is None else base64.b64encode(record.key).decode()
        assert letter.key == expected_key
        if letter.reason not in record.reasons:
            wrong.append(
                f"{record.family}: got {letter.reason} ({letter.detail[:120]}), expected "
                f"{sorted(record.reasons)} for {(record.value or b'')[:160]!r}"
            )
    assert not wrong, f"{len(wrong)} wrong reasons, e.g.\n" + "\n".join(wrong[:20])
    assert max(seen.values()) == 1
    assert {place for place, record in by_place.items() if record.reasons} == set(seen)

    log = worker.log_file.read_text(errors="replace")
    assert worker.alive(), log[-3000:]
    assert log.count("worker ready") == 1, log[-3000:]
    # Before "ready" the group coordinator may not be up yet (logged as an error, retried).
    serving = log.split("worker ready", 1)[1]
    assert not re.search(r"Traceback|\bERROR\b|\bCRITICAL\b|Crashed", serving), serving[-3000:]
    print(
        f"\nfuzz: {len(hostile)} hostile + {len(valid)} valid records; generate "
        f"{generated - started:.1f}s, produce {produced - generated:.1f}s, processed "
        f"{processed - produced:.1f}s; families {dict(Counter(r.family for r in hostile))}"
    )


def test_corpus_is_hostile_enough_and_reproducible() -> None:
    """Every family is present in bulk, and generation is deterministic."""
    corpus = hostile_corpus(HOSTILE_COUNT)
    assert len(corpus) == HOSTILE_COUNT
    families = Counter(record.family for record in corpus)
    assert len(families) == len(FAMILIES) and min(families.values()) >= 100, families
    reasons = Counter(reason for record in corpus for reason in record.reasons)
    assert set(reasons) == set(get_args(DeadLetterReason)), reasons
    assert _generate(200) == _generate(200)


def test_record_near_the_broker_limit_does_not_stop_the_worker(
    make_settings: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """790 kB of incompressible bytes: under the broker's 1 MiB record limit on the way in,
    over it once base64-encoded into a dead letter. It must be dead-lettered, and the worker
    must go on serving the next event."""
    settings = make_settings()
    sample = write_sample_dataset(tmp_path / "sample")
    replay_dataset(settings, Dataset(sample), include_events=False, progress=False)
    worker = worker_factory(settings).start()

    def wait_for(topic: str, done: Callable[[list], bool]) -> None:
        """Poll ``topic`` until ``done``; fail at once if the worker's agent crashed."""
        deadline = time.monotonic() + 60
        while True:
            served = worker.log_file.read_text(errors="replace").split("worker ready", 1)[1]
            assert "Crashed" not in served, served[-2000:]
            try:
                read_topic(settings, topic, done, timeout=2, decode=False)
                return
            except AssertionError:
                assert time.monotonic() < deadline, f"nothing new on {topic}"

    try:
        big = OutgoingMessage(settings.topics.events("books"), b"near-limit", os.urandom(790_000))
        [where] = produce_tracked(settings, [big])
        wait_for(
            settings.topics.dead_letters(),
            lambda got: any(_place(json.loads(m.value())) == where for m in got),
        )
        event_id, after = user_event(settings, "near-limit", "books-0001", T0)
        produce_tracked(settings, [after])
        wait_for(
            settings.topics.recs("movies"),
            lambda got: any(json.loads(m.value())["trigger"]["event_id"] == event_id for m in got),
        )
    finally:
        worker.kill()


def _place(letter: dict) -> tuple[str, int, int]:
    return letter["topic"], letter["partition"], letter["offset"]
