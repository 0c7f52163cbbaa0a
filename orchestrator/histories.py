"""Users' histories kept hot in the orchestrator's memory: a cache miss of a user seen lately skips
the PostgreSQL read of their row and history.

An entry is the user's row and history as PostgreSQL gave them, tagged with the user's history
generation (storage/cache.py) read before that read. Every accepted interaction and every
UpsertUser bumps it, and the cache lookup reads it in the same Redis call that looks for a cached
answer, so an entry is used only while the generation is the one it was read at. Nothing polls
and nothing extra is sent over the network.

LogInteractions in this process updates the entry instead of dropping it: the bump returns the new
generation, and when that is exactly one past the entry's (no other change in between, from any
process or replica) the stored rows (with the times PostgreSQL gave them) are merged into the
history as the read would order them, and the entry is tagged with the new generation. The next
miss of that user skips PostgreSQL too. Logged elsewhere: the generation moved past the entry,
which is read again.

What else makes an entry go:
- age: an entry older than `max_age_s` is read again. The generation lives in the user's cache
  hash, which expires after the cache TTL without writes and then counts from 0 again; an entry
  younger than the TTL cannot outlive a generation it missed (any bump it missed renewed the hash's
  expiry past the entry's own age limit). The age also bounds what a change made outside the API
  (`recsys data load`, SQL) or an interaction whose generation bump failed (Redis away) leaves stale.
- this process's own writes that cannot be merged: UpsertUser, a history that reached the read's
  limit (its older items are not held), a bump that failed (Redis away) or that skipped a generation.
- size: least recently used users go first once the entries hold more than `max_entries` history
  items (an entry counts its history's length plus one).

No generation (Redis away, or a cache-less deployment): no entry is used or kept.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from storage.interactions import HistoryEntry
from storage.interactions import interned_types as _types
from storage.records import UserRecord


def _order(h: HistoryEntry) -> tuple[float, str]:
    return -h.ts, h.item_id


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
        held = self._entries.get(user_id)
        if held is not None and held.generation > generation:  # updated since this read began
            return
        self._hold(user_id, _Entry(generation, read_at, user, history))

    def logged(self, user_id: str, generation: int, rows: Iterable[tuple[str, str, float]], limit: int) -> bool:
        """Merge interactions (item id, type, unix seconds as stored) the user's history generation moved to
        `generation` for; True when the entry is now at that generation, else it is dropped."""
        held = self._entries.get(user_id)
        if held is None:
            return False
        if (held.generation != generation - 1 or held.user is None or len(held.history) >= limit
                or time.monotonic() - held.read_at > self.max_age_s):
            self._drop(user_id)  # another change came between (or the row is new), or older items are not held
            return False
        history = list(held.history)  # a copy: requests in flight hold the old list
        latest = {h.item_id: h for h in history}
        for item_id, kind, ts in rows:
            before = latest.get(item_id)
            latest[item_id] = HistoryEntry(item_id, _types((before.types | {kind}) if before else {kind}),
                                           max(before.ts, ts) if before else ts)
        changed = {item_id for item_id, _, _ in rows}
        history = [h for h in history if h.item_id not in changed]
        for item_id in changed:  # the read's order: latest time first, then item id
            bisect.insort(history, latest[item_id], key=_order)
        self._hold(user_id, _Entry(generation, held.read_at, held.user, history[:limit]))
        return True

    def forget(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            self._drop(user_id)

    def _hold(self, user_id: str, entry: _Entry) -> None:
        """Keep `entry` as the user's, most recently used; the least recently used go past the budget."""
        self._drop(user_id)
        self._entries[user_id] = entry
        self._size += len(entry.history) + 1
        while self._size > self.max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, user_id: str) -> None:
        entry = self._entries.pop(user_id, None)
        if entry is not None:
            self._size -= len(entry.history) + 1
