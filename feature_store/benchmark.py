"""Online read latency of the feature store, printed as a table.

    python -m feature_store.benchmark        # uses DATABASE_URL / REDIS_URL / RECSYS_* settings

Reads what the last materialize() wrote: one user per call (the per-request read) and
all items in bulk (the ranking service's in-memory cache load).
"""

from __future__ import annotations

import random
import statistics
import time

import psycopg

from core.config import Settings
from feature_store.schema import ITEM_TABLE, USER_TABLE
from feature_store.store import OnlineFeatures


def _ms(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1] * 1e3 if len(samples) > 1 else samples[0] * 1e3


def run(settings: Settings, user_calls: int = 500, bulk_calls: int = 5) -> list[tuple[str, float, float]]:
    with psycopg.connect(settings.database_url) as conn:
        users = [r[0] for r in conn.execute(f"SELECT user_id FROM {USER_TABLE}")]
        items = [r[0] for r in conn.execute(f"SELECT item_id FROM {ITEM_TABLE}")]
    online = OnlineFeatures(settings)
    rng = random.Random(0)
    for user in rng.sample(users, min(20, len(users))):  # warm-up
        online.user_features(user)
    user_s = []
    for _ in range(user_calls):
        start = time.perf_counter()
        online.user_features(rng.choice(users))
        user_s.append(time.perf_counter() - start)
    bulk_s = []
    for _ in range(bulk_calls):
        start = time.perf_counter()
        online.all_item_features(items)
        bulk_s.append(time.perf_counter() - start)
    version_s = []
    for _ in range(200):
        start = time.perf_counter()
        online.version()
        version_s.append(time.perf_counter() - start)
    online.close()
    return [
        (f"user_features, 1 of {len(users)} users (x{user_calls})", _ms(user_s, 50), _ms(user_s, 99)),
        (f"all_item_features, {len(items)} items (x{bulk_calls})", _ms(bulk_s, 50), max(bulk_s) * 1e3),
        ("version() (x200)", _ms(version_s, 50), _ms(version_s, 99)),
    ]


def main() -> None:
    rows = run(Settings.from_env())
    print(f"{'read':<48} {'p50 ms':>9} {'p99/max ms':>11}")
    for name, p50, p99 in rows:
        print(f"{name:<48} {p50:>9.2f} {p99:>11.2f}")


if __name__ == "__main__":
    main()
