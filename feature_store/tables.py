"""Feature tables computed in PostgreSQL from users, items and interactions.

They are the batch sources of the Feast feature views. Each build replaces both tables
in one transaction, so a reader sees the old snapshot or the new one, never a mix.
Every row carries the same `event_timestamp`: the build time (see definitions.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row

from feature_store.schema import (
    INTERACTION_TYPES,
    ITEM_TABLE,
    RECENT_ITEMS_LIMIT,
    RECENT_POPULARITY_DAYS,
    TIMESTAMP_FIELD,
    USER_TABLE,
)

_LOCK_ID = 727275  # serializes concurrent builds (migrations use 727274)

_COUNT_COLUMNS = ",\n    ".join(f"count_{t} bigint NOT NULL" for t in INTERACTION_TYPES)
_COUNT_EXPRS = ",\n        ".join(f"count(*) FILTER (WHERE type = '{t}') AS count_{t}" for t in INTERACTION_TYPES)
_COUNT_SELECT = ",\n    ".join(f"coalesce(c.count_{t}, 0) AS count_{t}" for t in INTERACTION_TYPES)

_CREATE_USER = f"""
CREATE TABLE {USER_TABLE} (
    user_id text PRIMARY KEY,
    recent_item_ids text[] NOT NULL,
    n_interactions bigint NOT NULL,
    {_COUNT_COLUMNS},
    avg_rating double precision NOT NULL,
    {TIMESTAMP_FIELD} timestamptz NOT NULL
)"""

# An item seen several times appears once, at the position of its latest interaction;
# ties on ts go to the later-inserted row. {only} restricts to a set of users (the
# real-time push worker recomputes just the users it saw events for).
_USER_SELECT = f"""
WITH last_touch AS (
    SELECT DISTINCT ON (user_id, item_id) user_id, item_id, ts, interaction_id
    FROM interactions {{only}}
    ORDER BY user_id, item_id, ts DESC, interaction_id DESC
), ranked AS (
    SELECT user_id, item_id,
           row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, interaction_id DESC) AS rn
    FROM last_touch
), recent AS (
    SELECT user_id, array_agg(item_id ORDER BY rn) AS item_ids
    FROM ranked WHERE rn <= %(limit)s GROUP BY user_id
), counts AS (
    SELECT user_id,
        count(*) AS n_interactions,
        {_COUNT_EXPRS},
        avg(value) FILTER (WHERE type = 'rating') AS avg_rating
    FROM interactions {{only}} GROUP BY user_id
)
SELECT u.user_id,
    coalesce(r.item_ids, '{{{{}}}}'::text[]) AS recent_item_ids,
    coalesce(c.n_interactions, 0) AS n_interactions,
    {_COUNT_SELECT},
    coalesce(c.avg_rating, 0.0) AS avg_rating,
    %(as_of)s::timestamptz AS {TIMESTAMP_FIELD}
FROM users u
LEFT JOIN recent r USING (user_id)
LEFT JOIN counts c USING (user_id)
{{only_users}}
"""
_FILL_USER = f"INSERT INTO {USER_TABLE} " + _USER_SELECT.format(only="", only_users="")
_SELECT_SOME_USERS = _USER_SELECT.format(
    only="WHERE user_id = ANY(%(users)s)", only_users="WHERE u.user_id = ANY(%(users)s)"
)


def user_feature_rows(conn: psycopg.Connection, user_ids: list[str], as_of: datetime) -> list[dict[str, object]]:
    """The user feature rows of some users, computed as materialization computes them."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(_SELECT_SOME_USERS, {"users": user_ids, "limit": RECENT_ITEMS_LIMIT, "as_of": as_of})
    return cur.fetchall()


_CREATE_ITEM = f"""
CREATE TABLE {ITEM_TABLE} (
    item_id text PRIMARY KEY,
    popularity bigint NOT NULL,
    recent_popularity bigint NOT NULL,
    avg_rating double precision NOT NULL,
    n_ratings bigint NOT NULL,
    categories text[] NOT NULL,
    {TIMESTAMP_FIELD} timestamptz NOT NULL
)"""

# "Recent" is relative to the newest interaction in the data, not to the wall clock,
# so replayed historical data (MovieLens is from 1997-98) still has a trend signal.
_FILL_ITEM = f"""
INSERT INTO {ITEM_TABLE}
WITH newest AS (
    SELECT max(ts) AS ts FROM interactions
), stats AS (
    SELECT item_id,
        count(*) AS popularity,
        count(*) FILTER (
            WHERE ts > (SELECT ts FROM newest) - make_interval(days => %(recent_days)s)
        ) AS recent_popularity,
        avg(value) FILTER (WHERE type = 'rating') AS avg_rating,
        count(*) FILTER (WHERE type = 'rating') AS n_ratings
    FROM interactions GROUP BY item_id
)
SELECT i.item_id,
    coalesce(s.popularity, 0),
    coalesce(s.recent_popularity, 0),
    coalesce(s.avg_rating, 0.0),
    coalesce(s.n_ratings, 0),
    i.categories,
    %(as_of)s
FROM items i
LEFT JOIN stats s USING (item_id)
"""


def build_feature_tables(database_url: str, as_of: datetime | None = None) -> dict[str, int]:
    """(Re)build the feature tables; returns the row count of each, by table name.

    `as_of` becomes every row's event timestamp (default: now, UTC). Tables are
    dropped and recreated, so a changed schema here needs no migration.
    """
    as_of = as_of or datetime.now(UTC)
    counts: dict[str, int] = {}
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        for table, create, fill in (
            (USER_TABLE, _CREATE_USER, _FILL_USER),
            (ITEM_TABLE, _CREATE_ITEM, _FILL_ITEM),
        ):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(create)
            cur = conn.execute(
                fill,
                {"limit": RECENT_ITEMS_LIMIT, "recent_days": RECENT_POPULARITY_DAYS, "as_of": as_of},
            )
            counts[table] = cur.rowcount
    return counts
