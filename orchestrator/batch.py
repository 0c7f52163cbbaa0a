"""`recsys batch precompute`: recommendations for every user (or those inactive for N days),
computed by the running Recommender itself (the serving pipeline, not a copy of it), stored
in PostgreSQL for the degraded path; each call also warms that user's cache entry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from tqdm import tqdm

from core import tls
from core.config import Settings
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from storage.precomputed import save_precomputed

BATCH = 200


def users_to_refresh(database_url: str, inactive_days: int | None) -> list[str]:
    with psycopg.connect(database_url) as conn:
        if inactive_days is None:
            rows = conn.execute("SELECT user_id FROM users ORDER BY user_id")
        else:
            since = datetime.now(UTC) - timedelta(days=inactive_days)
            rows = conn.execute("SELECT user_id FROM users WHERE last_active_at IS NULL OR last_active_at < %s "
                                "ORDER BY user_id", (since,))
        return [r[0] for r in rows]


async def _recommend_all(addr: str, users: list[str], k: int, surface: str, concurrency: int,
                         settings: Settings, metadata: Sequence[tuple[str, str]] = ()) -> list[tuple]:
    out: list[tuple] = []
    gate = asyncio.Semaphore(concurrency)
    async with tls.aio_channel(addr, settings) as channel:
        stub = pb_grpc.RecommenderStub(channel)

        async def one(user_id: str) -> None:
            async with gate:
                resp = await stub.Recommend(pb.RecommendRequest(
                    user_id=user_id, k=k, context=pb.Context(surface=surface), request_id=f"batch-{user_id}"),
                    timeout=10, metadata=tuple(metadata))
            if not resp.degraded:  # a degraded answer is no better than what the fallback has
                out.append((user_id, surface, [i.item_id for i in resp.items], [i.score for i in resp.items],
                            resp.model_version))
            bar.update()

        with tqdm(total=len(users), desc=f"precompute {surface}", unit="user") as bar:
            await asyncio.gather(*(one(u) for u in users))
    return out


def precompute(database_url: str, addr: str, surface: str = "home", k: int = 50,
               inactive_days: int | None = None, concurrency: int = 8, users: list[str] | None = None,
               settings: Settings | None = None, metadata: Sequence[tuple[str, str]] = ()) -> int:
    """Returns how many users got a stored answer. `users` (default: by inactivity) limits the run;
    `settings` give the channel's TLS (None: plaintext); `metadata` goes with every call (an API key, for
    a Recommender that asks for one)."""
    users = users if users is not None else users_to_refresh(database_url, inactive_days)
    written = 0
    with psycopg.connect(database_url) as conn:
        for start in range(0, len(users), BATCH):
            rows = asyncio.run(_recommend_all(addr, users[start : start + BATCH], k, surface, concurrency,
                                              settings or Settings(), metadata))
            save_precomputed(conn, rows)
            conn.commit()
            written += len(rows)
    return written
