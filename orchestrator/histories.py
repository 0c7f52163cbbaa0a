"""Users' histories kept hot in the orchestrator's memory: a cache miss of a user seen lately skips
the PostgreSQL read of their row and history.

An entry is the user's row and history as PostgreSQL gave them, tagged with the user's cache
generation (storage/cache.py) read before that read. Every accepted interaction bumps the
generation, and the cache lookup reads it in the same Redis call that looks for a cached answer,
so an entry is used only while the generation is the one it was read at: the next miss after
LogInteractions (in any process or replica) reads PostgreSQL again, exactly as the cached answers
go stale. Nothing polls and nothing extra is sent over the network.

What else makes an entry go:
- age: an entry older than `max_age_s` is read again. The generation lives in the user's cache
  hash, which expires after the cache TTL without writes and then counts from 0 again; an entry
  younger than the TTL cannot outlive a generation it missed (any bump it missed renewed the hash's
  expiry past the entry's own age limit). The age also bounds what a change made outside the API
  (`recsys data load`, SQL) or an interaction whose generation bump failed (Redis away) leaves stale.
- this process's own writes: LogInteractions and UpsertUser drop their users' entries at once
  (UpsertUser also bumps the generation, so other processes read the new row too).
- size: least recently used users go first once the entries hold more than `max_entries` history
  items (an entry counts its history's length plus one).

No generation (Redis away, or a cache-less deployment): no entry is used or kept.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from storage.interactions import HistoryEntry
from storage.records import UserRecord


class _Entry(NamedTuple):
    generation: int
    read_at: float  # time.monotonic() of the read
    user: UserRecord | None
    history: list[HistoryEntry]


class HotHistories:
    def __init__(self, max_entries: int, max_age_s: float) -> None:
        self.max_entries = max_entries  # 0: off
        self.max_age_s = max_age_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._size = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_age_s > 0

    @property
    def size(self) -> int:
        """History items held (each entry counts its history's length plus one)."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: str, generation: int | None) -> tuple[UserRecord | None, list[HistoryEntry]] | None:
        """The user's row and history when an entry read at this generation, and young enough, is held."""
        if generation is None or not self.enabled:
            return None
        entry = self._entries.get(user_id)
        if entry is None:
            self.misses += 1
            return None
        if entry.generation != generation or time.monotonic() - entry.read_at > self.max_age_s:
            self._drop(user_id)
            self.misses += 1
            return None
        self._entries.move_to_end(user_id)
        self.hits += 1
        return entry.user, entry.history

    def put(self, user_id: str, generation: int | None, read_at: float, user: UserRecord | None,
            history: list[HistoryEntry]) -> None:
        """Keep what a read at `generation`, started at `read_at` (time.monotonic()), returned."""
        if generation is None or not self.enabled or len(history) + 1 > self.max_entries:
            return
        self._drop(user_id)
        self._entries[user_id] = _Entry(generation, read_at, user, history)
        self._size += len(history) + 1
        while self._size > self.max_entries:
            self._drop(next(iter(self._entries)))

    def forget(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            self._drop(user_id)

    def _drop(self, user_id: str) -> None:
        entry = self._entries.pop(user_id, None)
        if entry is not None:
            self._size -= len(entry.history) + 1
