"""LogInteractions: validate each interaction, store the valid ones durably, publish them
to the interactions stream, and make the users' cached recommendations stale (any accepted
interaction: the next Recommend shows it).

Per-interaction status: a batch with some bad entries still stores every valid one;
each entry's result says accepted, or why not (naming the field). The call fails as
a whole only for a malformed batch (empty or over the size limit), or with UNAVAILABLE when
PostgreSQL cannot take it; an entry's event_id makes the client's retry idempotent.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from core.errors import InvalidArgument, Unavailable
from orchestrator.convert import INTERACTION_TYPES, from_timestamp
from orchestrator.dependencies import Breakers
from orchestrator.histories import HotHistories
from orchestrator.hydrators import HISTORY_LIMIT
from orchestrator.validation import check_batch, check_finite, check_id
from protos import recsys_pb2 as pb
from storage import cache, streams
from storage.interactions import insert_interactions
from storage.items import existing_item_ids
from storage.records import InteractionRecord
from storage.streams import Event
from storage.users import ensure_users

log = logging.getLogger(__name__)

MAX_RATING = 10.0
MAX_WEIGHT = 1e6  # a quantity or weight; features sum them, so 1e308 would overflow to inf
FUTURE_TOLERANCE = timedelta(minutes=5)  # clock skew between callers and us


def interaction_from_pb(msg: pb.Interaction, field: str, now: datetime) -> InteractionRecord:
    check_id(f"{field}.user_id", msg.user_id)
    check_id(f"{field}.item_id", msg.item_id)
    kind = INTERACTION_TYPES.get(msg.type)
    if kind is None:
        known = ", ".join(pb.InteractionType.Name(t) for t in INTERACTION_TYPES)
        raise InvalidArgument(f"{field}.type", f"unknown interaction type {msg.type}; use one of {known}")
    value = check_finite(f"{field}.value", msg.value)
    if kind == "rating" and not 0 <= value <= MAX_RATING:
        raise InvalidArgument(f"{field}.value", f"a rating must be between 0 and {MAX_RATING:g}, got {value:g}")
    if kind != "rating" and abs(value) > MAX_WEIGHT:
        raise InvalidArgument(f"{field}.value", f"must be between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}, got {value:g}")
    if kind != "rating" and value == 0:
        value = 1.0  # unset weight/quantity
    if msg.request_id:
        check_id(f"{field}.request_id", msg.request_id)
    ts = from_timestamp(msg.timestamp, msg.HasField("timestamp"), f"{field}.timestamp")
    if ts is not None and ts > now + FUTURE_TOLERANCE:
        raise InvalidArgument(f"{field}.timestamp", f"is in the future ({ts.isoformat()})")
    if msg.event_id:
        check_id(f"{field}.event_id", msg.event_id)
    return InteractionRecord(msg.user_id, msg.item_id, kind, value, msg.request_id or None, ts,
                             event_id=msg.event_id or None)


async def log_interactions(
    pool: AsyncConnectionPool, redis: Redis, batch: list[pb.Interaction], cache_ttl_s: int = 1800,
    breakers: Breakers | None = None, histories: HotHistories | None = None,
) -> pb.LogInteractionsResponse:
    """PostgreSQL unavailable (down, or no connection within the checkout timeout): Unavailable, the
    whole batch; a retry with the same event ids stores nothing twice. `histories`: this process's held
    histories, which take the stored rows (orchestrator/histories.py)."""
    check_batch("interactions", len(batch))
    breakers = breakers or Breakers()
    now = datetime.now(UTC)
    results = [pb.InteractionResult(index=i) for i in range(len(batch))]
    valid: list[tuple[int, InteractionRecord]] = []
    for i, msg in enumerate(batch):
        try:
            valid.append((i, interaction_from_pb(msg, f"interactions[{i}]", now)))
        except InvalidArgument as exc:
            results[i].error_code, results[i].error = "INVALID_ARGUMENT", str(exc)

    stored: list[tuple[int, InteractionRecord]] = []
    times: dict[str, float] = {}  # interaction id -> unix seconds as stored
    if valid:
        try:
            async with pool.connection() as conn:
                known = await existing_item_ids(conn, [r.item_id for _, r in valid])
                for i, r in valid:
                    if r.item_id in known:
                        stored.append((i, r))
                    else:
                        results[i].error_code = "NOT_FOUND"
                        results[i].error = f"interactions[{i}].item_id: no item {r.item_id!r}"
                if stored:
                    async with conn.transaction():  # new users and their interactions together, or nothing
                        await ensure_users(conn, [r.user_id for _, r in stored])
                        rows = await insert_interactions(conn, [r for _, r in stored])
                    for (i, _), row in zip(stored, rows, strict=True):
                        results[i].accepted, results[i].duplicate = True, row.duplicate
                        results[i].interaction_id = str(row.interaction_id)
                        times[results[i].interaction_id] = row.ts
        except Unavailable as exc:
            raise Unavailable(f"interactions: {exc}; the batch may not be stored: retry it with the same "
                              "event_id per entry to store each once") from exc

    # Durable first; then the stream (the worker pushes features to Feast) and the users' cache
    # generation: the next Recommend recomputes with the new history. Redis trouble here loses
    # nothing: the worker's sweep catches up from PostgreSQL, and the cache expires.
    events = [Event(results[i].interaction_id, r.user_id, r.item_id, r.type, r.value)
              for i, r in stored if not results[i].duplicate]
    if events:
        generations: dict[str, int] = {}
        try:
            async with breakers.redis_guard():
                generations = await cache.bump(redis, {e.user_id for e in events}, cache_ttl_s)
                await streams.publish(redis, events)
        except Exception as exc:  # noqa: BLE001 - see above
            log.debug("interactions stored; the stream and cache bump skipped: %s", exc)
        if histories is not None:
            _hold(histories, generations, events, times)
    n_ok = len(stored)
    return pb.LogInteractionsResponse(accepted=n_ok, rejected=len(batch) - n_ok, results=results)


def _hold(histories: HotHistories, generations: dict[str, int], events: list[Event], times: dict[str, float]) -> None:
    """The stored rows into this process's held histories, for users whose generation the bump moved (the
    rest are dropped: a failed bump leaves the generation where the held entry was read)."""
    rows: dict[str, list[tuple[str, str, float]]] = {}
    for e in events:
        rows.setdefault(e.user_id, []).append((e.item_id, e.type, times[e.interaction_id]))
    for user_id, added in rows.items():
        generation = generations.get(user_id)
        if generation is None:
            histories.forget([user_id])
        else:
            histories.logged(user_id, generation, added, HISTORY_LIMIT)
