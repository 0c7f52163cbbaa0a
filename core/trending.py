"""Trending: time-decayed interaction counts over recent windows, overall, per category
and per user segment, plus all-time popularity per category.

Events (item, weight, time, the user's segments) are held in memory as columns, fed
from PostgreSQL by retrieval.live (the last 7 days at start, then each new
interaction). A window's score of an item is the sum of its events' weights in the
window, each halved every `half_life_share` of the window by age, so within "24h" an
hour-old view outweighs a day-old one. Rankings are recomputed at most every
`cache_s` seconds per (window, segment).

Windows are relative to a clock: "now" (wall time), "latest" (the newest interaction:
historical data such as MovieLens's 1998 ratings), or "auto": now, unless nothing
happened within the longest window, then the newest interaction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

WINDOWS = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}
LONGEST_S = max(WINDOWS.values())
CLOCKS = ("auto", "now", "latest")


@dataclass(frozen=True)
class TrendingConfig:
    clock: str = "auto"
    half_life_share: float = 0.5  # an event loses half its weight every half window
    cache_s: float = 1.0  # rankings are recomputed at most this often

    @classmethod
    def from_env(cls) -> TrendingConfig:
        clock = os.environ.get("RECSYS_TRENDING_CLOCK", "").strip() or "auto"
        if clock not in CLOCKS:
            raise ValueError(f"RECSYS_TRENDING_CLOCK must be one of {', '.join(CLOCKS)}, got {clock!r}")
        return cls(clock=clock)


@dataclass(frozen=True)
class Event:
    interaction_id: int
    item_id: str
    weight: float
    ts: float  # unix seconds
    segments: tuple[str, ...] = ()


class Trending:
    def __init__(self, config: TrendingConfig | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config or TrendingConfig()
        self.wall_clock = wall_clock
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._seg_index: dict[str, int] = {}
        self._pending: list[Event] = []
        # events as columns; segment membership as (event, segment) pairs
        self._item = np.zeros(0, np.int32)
        self._weight = np.zeros(0, np.float64)
        self._ts = np.zeros(0, np.float64)
        self._pair_event = np.zeros(0, np.int64)
        self._pair_segment = np.zeros(0, np.int32)
        self._all_time = np.zeros(0, np.float64)
        self._categories: dict[str, set[int]] = {}
        self._item_categories: dict[int, tuple[str, ...]] = {}
        self._category_rows: dict[str, np.ndarray] = {}
        self.latest = 0.0  # newest event time seen
        self._cache: dict[tuple[str, str], tuple[float, int, np.ndarray]] = {}
        self._generation = 0  # bumped on every change; cached rankings of an older one are stale

    # ------------------------------------------------------------------ feeding

    def _row(self, item_id: str) -> int:
        i = self._index.get(item_id)
        if i is None:
            i = self._index[item_id] = len(self._ids)
            self._ids.append(item_id)
        return i

    def add(self, events: Iterable[Event], all_time: bool = True) -> None:
        """New interactions; all_time=False when the all-time counts already hold them."""
        for e in events:
            self._pending.append(e)
            self.latest = max(self.latest, e.ts)
            if all_time:
                i = self._row(e.item_id)
                self._grow_all_time()
                self._all_time[i] += 1.0  # all time counts interactions, as `popular` does
        self._generation += 1

    def add_all_time(self, counts: Iterable[tuple[str, float]]) -> None:
        """All-time interaction counts (the "" window), e.g. from one GROUP BY at start."""
        for item_id, n in counts:
            i = self._row(item_id)
            self._grow_all_time()
            self._all_time[i] += n
        self._generation += 1

    def set_categories(self, item_id: str, categories: Iterable[str]) -> None:
        i = self._row(item_id)
        cats = tuple(categories)
        if self._item_categories.get(i) == cats:
            return
        for c in self._item_categories.get(i, ()):
            self._categories[c].discard(i)
            self._category_rows.pop(c, None)
        for c in cats:
            self._categories.setdefault(c, set()).add(i)
            self._category_rows.pop(c, None)
        self._item_categories[i] = cats

    def in_category(self, item_id: str, category: str) -> bool:
        i = self._index.get(item_id)
        return i is not None and category in self._item_categories.get(i, ())

    def _grow_all_time(self) -> None:
        if len(self._all_time) < len(self._ids):
            grown = np.zeros(max(len(self._ids), 2 * len(self._all_time)), np.float64)
            grown[: len(self._all_time)] = self._all_time
            self._all_time = grown

    def _consolidate(self, now: float) -> None:
        """Move pending events into the columns; drop events older than the longest window."""
        keep = self._ts > now - LONGEST_S
        if not self._pending and keep.all():
            return
        new = self._pending
        self._pending = []
        item = np.array([self._row(e.item_id) for e in new], np.int32)
        recent = [j for j, e in enumerate(new) if e.ts > now - LONGEST_S]
        old_index = np.flatnonzero(keep)
        renumber = np.full(len(self._ts), -1, np.int64)
        renumber[old_index] = np.arange(len(old_index))
        pair_keep = keep[self._pair_event] if len(self._pair_event) else np.zeros(0, bool)
        pair_event = [renumber[self._pair_event[pair_keep]]]
        pair_segment = [self._pair_segment[pair_keep]]
        base = len(old_index)
        ev, sg = [], []
        for n, j in enumerate(recent):
            for s in new[j].segments:
                ev.append(base + n)
                sg.append(self._seg_index.setdefault(s, len(self._seg_index)))
        self._item = np.concatenate([self._item[keep], item[recent]])
        self._weight = np.concatenate([self._weight[keep], np.array([new[j].weight for j in recent], np.float64)])
        self._ts = np.concatenate([self._ts[keep], np.array([new[j].ts for j in recent], np.float64)])
        self._pair_event = np.concatenate([*pair_event, np.array(ev, np.int64)])
        self._pair_segment = np.concatenate([*pair_segment, np.array(sg, np.int32)])

    # ------------------------------------------------------------------ reading

    def now(self) -> float:
        wall = self.wall_clock()
        if self.config.clock == "now" or not self.latest:
            return wall
        if self.config.clock == "latest":
            return self.latest
        return wall if self.latest >= wall - LONGEST_S else self.latest

    def _scores(self, window: str, segment: str) -> np.ndarray:
        """Scores of every known item for a window ("" = all time) and segment ("" = everyone)."""
        now = self.now()
        cached = self._cache.get((window, segment))
        if cached and cached[1] == self._generation and now - cached[0] < self.config.cache_s:
            return cached[2]
        self._consolidate(now)
        self._grow_all_time()
        if not window:
            scores = self._all_time[: len(self._ids)].copy()
        else:
            span = WINDOWS[window]
            mask = self._ts > now - span
            if segment:
                in_segment = np.zeros(len(self._ts), bool)
                sid = self._seg_index.get(segment, -1)
                in_segment[self._pair_event[self._pair_segment == sid]] = True
                mask &= in_segment
            age = np.clip(now - self._ts[mask], 0.0, None)
            decay = np.exp2(-age / (span * self.config.half_life_share))
            scores = np.bincount(self._item[mask], weights=self._weight[mask] * decay, minlength=len(self._ids))
        self._cache[(window, segment)] = (now, self._generation, scores)
        return scores

    def top(self, window: str, category: str, segment: str, k: int,
            keep: Callable[[str], bool]) -> list[tuple[str, float]]:
        """The k best (item id, score) in scope, best first, among items that `keep` accepts."""
        scores = self._scores(window, segment)
        if category:
            rows = self._category_rows.get(category)
            if rows is None:
                rows = self._category_rows[category] = np.array(sorted(self._categories.get(category, ())), np.int64)
            rows = rows[rows < len(scores)]
        else:
            rows = np.arange(len(scores))
        sub = scores[rows]
        order = np.argsort(-sub, kind="stable")
        out: list[tuple[str, float]] = []
        for j in order.tolist():
            if sub[j] <= 0:
                break
            item_id = self._ids[int(rows[j])]
            if keep(item_id):
                out.append((item_id, float(sub[j])))
                if len(out) == k:
                    break
        return out

    @property
    def n_events(self) -> int:
        return len(self._ts) + len(self._pending)
