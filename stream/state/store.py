"""User states in a local RocksDB (rocksdict), with the changelog offset each partition reached.

The store is a cache of the changelog topic: a batch is first written to the changelog and
acknowledged, then to RocksDB together with the changelog offsets in one atomic write batch.
After a crash or a partition move, :mod:`stream.state.changelog` replays the changelog from the
stored offset, so the store never lags behind what was published.

Decoded states of recently written users are also kept in memory (a bounded, least recently
used cache), so a user active in consecutive batches is not read back and decoded each time.
The cache is write-through: :meth:`UserStateStore.write` is the only way states change, and it
updates or drops their cache entries in the same step; :meth:`UserStateStore.get` takes a state
out of the cache until it is written back, so nothing but written states is ever served.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from stream.core.state import UserState

log = logging.getLogger(__name__)

_USER_PREFIX = b"u:"
_OFFSET_PREFIX = b"changelog-offset:"


class StateStoreError(RuntimeError):
    """The local state folder cannot be opened; the message says what to do."""


class UserStateStore:
    """RocksDB-backed user states for the partitions this worker owns, with a bounded
    in-memory cache of decoded states in front."""

    def __init__(self, path: Path, cache_users: int = 0) -> None:
        """``cache_users``: how many decoded states to keep in memory (0: none; the worker
        passes ``worker.state_cache_users``)."""
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
        self.cache_users = cache_users
        # user_id -> decoded state, least recently used first. Guarded by a lock because
        # clear_cache() is called from the event loop while a batch may run on its thread.
        self._cache: dict[str, UserState] = {}
        self._cache_lock = threading.Lock()

    @staticmethod
    def _user_key(user_id: str) -> bytes:
        return _USER_PREFIX + user_id.encode("utf-8")

    def get(self, user_id: str) -> UserState | None:
        """The user's state as last written: taken out of the cache when there, else read
        and decoded.

        The caller may change the state in place (the batch processor does) and hands it back
        with :meth:`write` (``decoded``). A cached state leaves the cache when it is taken, so
        a batch that fails before writing (the worker then exits, but a caller might go on)
        never leaves changes in memory that RocksDB does not have: the next read decodes the
        stored state again.
        """
        if self.cache_users:
            with self._cache_lock:
                state = self._cache.pop(user_id, None)
            if state is not None:
                return state
        return self.read(user_id)

    def read(self, user_id: str) -> UserState | None:
        """The user's state as last written, decoded afresh from RocksDB for a reader beside
        the batch thread (a request): the cache and the states a batch holds stay its own."""
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
        decoded: Mapping[str, UserState] | None = None,
    ) -> None:
        """Atomically store serialized states (None deletes) and the changelog offsets.

        ``decoded`` holds the states the values were serialized from (the processor's): they
        are cached once RocksDB has them, as the most recently used. A user written without
        one (a changelog restore) or deleted leaves the cache, so the next :meth:`get`
        decodes what RocksDB now holds.
        """
        batch = WriteBatch(raw_mode=True)
        written: list[tuple[str, bool]] = []  # (user_id, stored rather than deleted)
        for user_id, value in states:
            written.append((user_id, value is not None))
            if value is None:
                batch.delete(self._user_key(user_id))
            else:
                batch.put(self._user_key(user_id), value)
        for partition, offset in changelog_offsets.items():
            batch.put(_OFFSET_PREFIX + str(partition).encode(), str(offset).encode())
        self._db.write(batch)
        if self.cache_users:
            self._update_cache(written, decoded or {})

    def _update_cache(
        self, written: list[tuple[str, bool]], decoded: Mapping[str, UserState]
    ) -> None:
        cache = self._cache
        with self._cache_lock:
            for user_id, stored in written:
                cache.pop(user_id, None)
                state = decoded.get(user_id) if stored else None
                if state is not None:
                    cache[user_id] = state  # the most recently used
            overflow = len(cache) - self.cache_users
            if overflow > 0:
                for user_id in list(itertools.islice(cache, overflow)):
                    del cache[user_id]

    def clear_cache(self) -> None:
        """Forget every cached state (partitions were revoked: their users may change
        elsewhere); later reads decode from RocksDB."""
        with self._cache_lock:
            self._cache.clear()

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
