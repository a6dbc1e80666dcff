"""User states in a local RocksDB (rocksdict), with the changelog offset each partition reached.

The store is a cache of the changelog topic: a batch is first written to the changelog and
acknowledged, then to RocksDB together with the changelog offsets in one atomic write batch.
After a crash or a partition move, :mod:`stream.changelog` replays the changelog from the
stored offset, so the store never lags behind what was published.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from stream.state import UserState

log = logging.getLogger(__name__)

_USER_PREFIX = b"u:"
_OFFSET_PREFIX = b"changelog-offset:"


class StateStoreError(RuntimeError):
    """The local state folder cannot be opened; the message says what to do."""


class UserStateStore:
    """RocksDB-backed user states for the partitions this worker owns."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        try:
            self._db = Rdict(str(path), options=options)
        except Exception as exc:
            raise StateStoreError(
                f"cannot open state store {path}: {exc}. Another worker may hold it: give each "
                "worker its own XDREC_WORKER__STATE_DIR or XDREC_WORKER__NAME"
            ) from exc
        self.path = path

    @staticmethod
    def _user_key(user_id: str) -> bytes:
        return _USER_PREFIX + user_id.encode("utf-8")

    def get(self, user_id: str) -> UserState | None:
        raw = self._db.get(self._user_key(user_id))
        return UserState.from_bytes(raw) if raw is not None else None

    def changelog_offset(self, partition: int) -> int | None:
        """The last changelog offset applied for ``partition``, or None if never."""
        raw = self._db.get(_OFFSET_PREFIX + str(partition).encode())
        return int(raw) if raw is not None else None

    def write(
        self,
        states: Iterable[tuple[str, bytes | None]],
        changelog_offsets: Mapping[int, int],
    ) -> None:
        """Atomically store serialized states (None deletes) and the changelog offsets."""
        batch = WriteBatch(raw_mode=True)
        for user_id, value in states:
            if value is None:
                batch.delete(self._user_key(user_id))
            else:
                batch.put(self._user_key(user_id), value)
        for partition, offset in changelog_offsets.items():
            batch.put(_OFFSET_PREFIX + str(partition).encode(), str(offset).encode())
        self._db.write(batch)

    def users(self) -> Iterator[UserState]:
        """Every stored user state (for checks and tools, not the hot path)."""
        iterator = self._db.iter()
        iterator.seek(_USER_PREFIX)
        while iterator.valid() and iterator.key().startswith(_USER_PREFIX):
            yield UserState.from_bytes(iterator.value())
            iterator.next()

    def estimates(self) -> tuple[int, int]:
        """RocksDB's own estimates of (keys, live data bytes): cheap, for gauges."""
        keys = self._db.property_int_value("rocksdb.estimate-num-keys") or 0
        size = self._db.property_int_value("rocksdb.estimate-live-data-size") or 0
        memtables = self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        return int(keys), int(size) + int(memtables)

    def close(self) -> None:
        self._db.close()
