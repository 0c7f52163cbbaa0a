"""A synthetic shop at any scale: users, items and sessions of interactions, streamed.

    generate(out_dir, n_users, n_items, n_interactions, seed)          -> parquet (or CSV) files
    load_into_postgres(database_url, n_users, n_items, n_interactions, seed) -> COPY, block by block

Both write the same rows for the same arguments (docs/data-format.md's columns), a block
at a time, so 10M users and 1M items never sit in memory as tables; what is held is a
few bytes per item (category, popularity, status) for drawing sessions.

The shape of the data:
- items: 20 departments x 5 leaf categories of Zipf-like sizes; brand, price (log-normal
  around a department median), colour, rating, status (~90% active, 7% out of stock,
  3% retired); popularity is Zipf over a random order of the items.
- users: age, gender and location; each has two interest categories, drawn half from
  their segment's (gender x age band) own taste and half from overall category sizes.
  Activity is Zipf-like too: a few users have many sessions, most have none or one.
- sessions: a user, an intent category (one of their interests, or any), 1 + geometric
  item views mostly from that category, each view going on to click (30%), add to cart
  (30% of those) and purchase (50% of those; never for items that are out of stock or
  retired); seconds to minutes between events, sessions spread over `days` with a daily
  rhythm and more traffic lately. No session column: a user's sessions are apart in
  time, so a 30-minute gap recovers them.

Every user attribute is a hash of (seed, user index), so sessions know a user's segment
and interests without a table of 10M users; blocks draw from their own seeded
generators, so the output depends on the arguments only.

The same module makes synthetic embedding vectors for the index benchmarks
(item_vectors, user_vectors): clustered, anisotropic and noisy, calibrated against the
two-tower model's MovieLens embeddings (docs/scale.md).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from tqdm import tqdm

DEPARTMENTS: dict[str, tuple[str, ...]] = {
    "Electronics": ("Headphones", "Speakers", "Chargers", "Monitors", "Cameras"),
    "Computers": ("Laptops", "Keyboards", "Mice", "Storage", "Networking"),
    "Home": ("Lamps", "Rugs", "Curtains", "Cushions", "Clocks"),
    "Kitchen": ("Cookware", "Knives", "Coffee Makers", "Blenders", "Tableware"),
    "Garden": ("Planters", "Hoses", "Seeds", "Garden Tools", "Grills"),
    "Fashion": ("Shirts", "Dresses", "Jackets", "Jeans", "Scarves"),
    "Shoes": ("Sneakers", "Boots", "Sandals", "Running Shoes", "Slippers"),
    "Beauty": ("Skincare", "Makeup", "Fragrances", "Hair Care", "Nail Care"),
    "Health": ("Vitamins", "First Aid", "Fitness Trackers", "Massagers", "Scales"),
    "Sports": ("Yoga Mats", "Dumbbells", "Bicycles", "Tennis", "Swimwear"),
    "Outdoors": ("Tents", "Backpacks", "Sleeping Bags", "Lanterns", "Hiking Poles"),
    "Toys": ("Building Sets", "Dolls", "Puzzles", "Board Games", "Plush Toys"),
    "Baby": ("Strollers", "Diapers", "Baby Monitors", "Car Seats", "Bottles"),
    "Books": ("Fiction", "Cookbooks", "Travel Guides", "Comics", "Science Books"),
    "Music": ("Guitars", "Pianos", "Drums", "Vinyl Records", "Microphones"),
    "Games": ("Consoles", "Controllers", "Video Games", "Gaming Chairs", "Headsets"),
    "Office": ("Notebooks", "Pens", "Desk Chairs", "Desks", "Printers"),
    "Pets": ("Dog Food", "Cat Litter", "Pet Beds", "Aquariums", "Leashes"),
    "Automotive": ("Car Care", "Tyres", "Dash Cams", "Car Audio", "Roof Boxes"),
    "Tools": ("Drills", "Saws", "Screwdrivers", "Ladders", "Tool Boxes"),
}
LEAVES: list[tuple[str, str]] = [(dept, leaf) for dept, leaves in DEPARTMENTS.items() for leaf in leaves]
ADJECTIVES = ("Classic", "Compact", "Deluxe", "Eco", "Essential", "Premium", "Pro", "Smart", "Ultra", "Vintage",
              "Wireless", "Lightweight", "Portable", "Heavy-Duty", "Modern", "Soft")
COLORS = ("black", "white", "grey", "red", "blue", "green", "yellow", "brown", "pink", "silver")
SYLLABLES = ("ka", "lo", "mi", "ra", "ven", "tor", "zi", "no", "bel", "qua", "dex", "ori", "sun", "mar", "tek", "lu")
LOCATIONS = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "ES", "IT", "MX", "AU")
LOCATION_WEIGHTS = (30, 9, 9, 7, 12, 7, 6, 5, 4, 4, 4, 3)
AGE_BANDS = (25, 35, 50)  # upper bounds: <25, 25-34, 35-49, 50+
INTERACTION_TYPES = ("view", "click", "add_to_cart", "purchase")
STATUSES = ("active", "out_of_stock", "retired")
BRANDS_PER_DEPARTMENT = 40
USER_RANK_OFFSET = 10  # flattens the head: no single user holds percents of all traffic
DEFAULT_END = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so a seed always means the same data

# Rows per block: a block is one parquet row group and one COPY chunk.
ITEM_BLOCK = 100_000
USER_BLOCK = 200_000
SESSION_BLOCK = 25_000  # ~100k interactions


@dataclass
class SyntheticConfig:
    n_users: int = 10_000
    n_items: int = 10_000
    n_interactions: int = 200_000
    seed: int = 0
    days: int = 90  # sessions spread over the days before `end`
    end: datetime = DEFAULT_END
    item_zipf: float = 1.0  # popularity of the item at rank r ~ (r + 1) ** -item_zipf
    user_zipf: float = 0.7  # sessions of the user at activity rank r ~ (r + 10) ** -user_zipf
    views_per_session: float = 3.5  # mean; geometric
    intent_share: float = 0.8  # share of a session's views from its intent category
    interest_share: float = 0.7  # share of sessions whose intent is one of the user's interests
    funnel: tuple[float, float, float] = (0.3, 0.3, 0.5)  # view->click, click->cart, cart->purchase

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_interactions < 0:
            raise ValueError(f"n_interactions must be >= 0, got {self.n_interactions}")
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if self.end.tzinfo is None:
            raise ValueError("end must be timezone-aware (e.g. datetime(2026, 1, 1, tzinfo=UTC))")


# ---------------------------------------------------------------------------- public API


def generate(
    out_dir: Path, n_users: int, n_items: int, n_interactions: int, seed: int = 0, fmt: str = "parquet",
    progress: bool = True, **options: object,
) -> dict[str, int]:
    """Write users, items and interactions (.parquet or .csv) into out_dir; returns the row counts.

    options: the other SyntheticConfig fields (days, end, item_zipf, ...).
    Parquet files hold one row group per block and load with training.dataset.load_files.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    config = SyntheticConfig(n_users, n_items, n_interactions, seed, **options)  # type: ignore[arg-type]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("users", "items", "interactions"):
        for ext in ("parquet", "csv"):
            (out_dir / f"{name}.{ext}").unlink(missing_ok=True)  # load_files refuses a folder holding both
    counts: dict[str, int] = {}
    with _bar(config, progress) as bar:
        for name, tables in _tables(config, "csv" if fmt == "csv" else "parquet"):
            counts[name] = _write(out_dir / f"{name}.{fmt}", tables, fmt, bar)
    return counts


def load_into_postgres(
    database_url: str, n_users: int, n_items: int, n_interactions: int, seed: int = 0, replace: bool = False,
    progress: bool = True, **options: object,
) -> dict[str, int]:
    """COPY the same rows generate() writes into users, items and interactions, in one transaction.

    replace=True empties the tables first (as storage.bulk.load_frames does); without it, ids
    that already exist make the load fail and nothing is written.
    """
    import psycopg

    config = SyntheticConfig(n_users, n_items, n_interactions, seed, **options)  # type: ignore[arg-type]
    counts: dict[str, int] = {}
    with psycopg.connect(database_url) as conn, _bar(config, progress) as bar:
        if replace:
            conn.execute(
                "TRUNCATE interactions, exposures, precomputed_recommendations, items, users RESTART IDENTITY"
            )
        for name, tables in _tables(config, "copy"):
            columns = ", ".join(COPY_COLUMNS[name])
            counts[name] = 0
            with conn.cursor() as cur, cur.copy(f"COPY {name} ({columns}) FROM STDIN (FORMAT csv)") as copy:
                for table in tables:
                    buf = io.BytesIO()
                    pa_csv.write_csv(table, buf, pa_csv.WriteOptions(include_header=False))
                    copy.write(buf.getbuffer())
                    counts[name] += table.num_rows
                    bar.update(table.num_rows)
        # as storage.bulk.load_frames: users' last activity follows from the log just loaded
        conn.execute(
            "UPDATE users u SET last_active_at = m.ts FROM "
            "(SELECT user_id, max(ts) AS ts FROM interactions GROUP BY user_id) m WHERE u.user_id = m.user_id"
        )
        conn.execute("ANALYZE users; ANALYZE items; ANALYZE interactions")
    return counts


COPY_COLUMNS = {
    "users": ("user_id", "demographics", "preferences"),
    "items": ("item_id", "title", "description", "categories", "brand", "price", "attributes", "status"),
    "interactions": ("user_id", "item_id", "type", "value", "ts"),
}


# ------------------------------------------------------------------------ the catalogue


@dataclass
class _Catalogue:
    """What every block needs: the config and a few bytes per item, drawn once from the seed."""

    config: SyntheticConfig
    item_leaf: np.ndarray  # int16 [n_items]
    item_status: np.ndarray  # int8 [n_items], index into STATUSES
    item_weight: np.ndarray  # float64 [n_items], Zipf popularity
    global_cdf: np.ndarray  # [n_items] cumulative popularity, ends at 1
    leaf_order: np.ndarray  # item indices sorted by leaf
    leaf_cdf: np.ndarray  # [n_items] leaf l's items cover (l, l + 1]: leaf + cumulative share in the leaf
    leaf_cdf_global: np.ndarray  # [n_leaves] cumulative leaf shares of overall popularity
    segment_cdf: np.ndarray  # [n_segments, n_leaves] cumulative taste of each gender x age band
    brands: list[list[str]]  # per department
    department_price: np.ndarray  # median price per department
    user_a: int = 1  # activity rank r -> user (a * r + c) % n_users, a bijection since gcd(a, n) = 1
    user_c: int = 0
    leaf_names: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, config: SyntheticConfig) -> _Catalogue:
        rng = np.random.default_rng([config.seed, 0])
        n = config.n_items
        n_leaves = len(LEAVES)
        leaf_size = rng.permutation((np.arange(n_leaves) + 1.0) ** -0.7)  # some categories are much larger
        item_leaf = rng.choice(n_leaves, size=n, p=leaf_size / leaf_size.sum()).astype(np.int16)
        item_status = rng.choice(3, size=n, p=[0.90, 0.07, 0.03]).astype(np.int8)
        rank = rng.permutation(n)
        weight = (rank + 1.0) ** -config.item_zipf
        global_cdf = np.cumsum(weight)
        global_cdf /= global_cdf[-1]
        order = np.argsort(item_leaf, kind="stable")
        w = weight[order]
        leaves = item_leaf[order].astype(np.int64)
        starts = np.searchsorted(leaves, np.arange(n_leaves))
        cum = np.cumsum(w)
        before = np.concatenate([[0.0], cum])[starts]  # popularity mass of all earlier leaves
        totals = np.bincount(leaves, weights=w, minlength=n_leaves)
        leaf_cdf = leaves + (cum - before[leaves]) / np.where(totals > 0, totals, 1.0)[leaves]
        leaf_share = totals / totals.sum()
        n_segments = 2 * (len(AGE_BANDS) + 1)
        taste = rng.dirichlet(np.full(n_leaves, 0.3), size=n_segments)
        brand_names = [[_brand(rng) for _ in range(BRANDS_PER_DEPARTMENT)] for _ in DEPARTMENTS]
        a = int(rng.integers(1, max(2, config.n_users)))
        while math.gcd(a, config.n_users) != 1:
            a += 1
        return cls(
            config=config, item_leaf=item_leaf, item_status=item_status, item_weight=weight,
            global_cdf=global_cdf, leaf_order=order, leaf_cdf=leaf_cdf, leaf_cdf_global=np.cumsum(leaf_share),
            segment_cdf=np.cumsum(taste, axis=1), brands=brand_names,
            department_price=np.exp(rng.uniform(math.log(5), math.log(400), len(DEPARTMENTS))),
            user_a=a, user_c=int(rng.integers(0, config.n_users)),
            leaf_names=[leaf for _, leaf in LEAVES],
        )

    # -- users: pure functions of the user index, so sessions can ask for any user

    def user_attributes(self, users: np.ndarray) -> dict[str, np.ndarray]:
        seed = self.config.seed
        bell = (_uniform(seed, 1, users) + _uniform(seed, 4, users) + _uniform(seed, 5, users)) / 3
        age = (16 + np.floor(60 * bell**1.3)).astype(np.int64)  # 16..75, median ~40
        female = _uniform(seed, 2, users) < 0.52
        loc_cdf = np.cumsum(LOCATION_WEIGHTS) / sum(LOCATION_WEIGHTS)
        location = np.minimum(np.searchsorted(loc_cdf, _uniform(seed, 3, users), side="right"), len(LOCATIONS) - 1)
        return {"age": age, "female": female, "location": location}

    def user_interests(self, users: np.ndarray, which: int) -> np.ndarray:
        """Leaf of interest `which` (0 or 1) of each user: half their segment's taste, half overall sizes."""
        seed = self.config.seed
        attrs = self.user_attributes(users)
        segment = np.searchsorted(AGE_BANDS, attrs["age"], side="right") * 2 + attrs["female"]
        u = _uniform(seed, 10 + which, users)
        from_segment = _uniform(seed, 20 + which, users) < 0.5
        seg_leaf = _rows_searchsorted(self.segment_cdf, segment, u)
        all_leaf = np.searchsorted(self.leaf_cdf_global, u, side="right")
        return np.minimum(np.where(from_segment, seg_leaf, all_leaf), len(LEAVES) - 1)

    def active_users(self, u: np.ndarray) -> np.ndarray:
        """Users drawn by Zipf-like activity: inverse CDF of a power law over ranks, then a bijection."""
        n, s, r0 = self.config.n_users, self.config.user_zipf, USER_RANK_OFFSET
        if abs(s - 1.0) < 1e-9:
            x = r0 * np.exp(u * math.log((n + r0) / r0))
        else:
            lo, hi = r0 ** (1 - s), (n + r0) ** (1 - s)
            x = (lo + u * (hi - lo)) ** (1 / (1 - s))
        rank = np.minimum((x - r0).astype(np.int64), n - 1)
        return (self.user_a * rank + self.user_c) % n

    # -- items drawn by popularity

    def popular_items(self, u: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(self.global_cdf, u, side="right"), self.config.n_items - 1)

    def items_in_leaf(self, leaf: np.ndarray, u: np.ndarray) -> np.ndarray:
        """An item of each leaf by popularity; a leaf without items gives a popular item instead."""
        pos = np.searchsorted(self.leaf_cdf, leaf + u, side="left")
        pos = np.minimum(pos, self.config.n_items - 1)
        found = self.leaf_order[pos]
        empty = self.item_leaf[found] != leaf
        return np.where(empty, self.popular_items(u), found)


def _brand(rng: np.random.Generator) -> str:
    return "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a well-spread uint64 from each uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) number per index, the same for the same (seed, stream, index)."""
    key = _mix(np.array([(seed * 1_000_003 + stream) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    x = _mix(index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _rows_searchsorted(cdf: np.ndarray, row: np.ndarray, u: np.ndarray) -> np.ndarray:
    """searchsorted of u[i] in cdf[row[i]] for every i (rows are short: one per category)."""
    return (cdf[row] <= u[:, None]).sum(axis=1)


# ------------------------------------------------------------------------------ blocks


def _users(cat: _Catalogue, start: int, stop: int) -> dict[str, pa.Array]:
    users = np.arange(start, stop)
    a = cat.user_attributes(users)
    return {
        "user_id": _ids("u", users),
        "age": pa.array(a["age"]),
        "gender": pa.array(np.where(a["female"], "F", "M")),
        "location": pa.array(np.asarray(LOCATIONS)[a["location"]]),
    }


def _items(cat: _Catalogue, block: int, start: int, stop: int) -> dict[str, pa.Array]:
    rng = np.random.default_rng([cat.config.seed, 1, block])
    items = np.arange(start, stop)
    m = len(items)
    leaf = cat.item_leaf[start:stop].astype(np.int64)
    dept = leaf // 5
    brand_rank = np.minimum(rng.zipf(1.6, m) - 1, BRANDS_PER_DEPARTMENT - 1)
    brand = np.asarray([b for bs in cat.brands for b in bs])[dept * BRANDS_PER_DEPARTMENT + brand_rank]
    price = cat.department_price[dept] * rng.lognormal(0.0, 0.6, m)
    price = np.maximum(np.round(price) - 0.01, 0.99)
    adjective = np.asarray(ADJECTIVES)[rng.integers(0, len(ADJECTIVES), m)]
    color = np.asarray(COLORS)[rng.integers(0, len(COLORS), m)]
    leaf_name = np.asarray(cat.leaf_names)[leaf]
    dept_name = np.asarray(list(DEPARTMENTS))[dept]
    model = pc.cast(pa.array(rng.integers(100, 10_000, m)), pa.string())
    title = pc.binary_join_element_wise(pa.array(brand), pa.array(adjective), pa.array(leaf_name), model, " ")
    description = pc.binary_join_element_wise(
        pa.array(adjective), " ", pc.utf8_lower(pa.array(leaf_name)), " by ", pa.array(brand), " in ",
        pa.array(color), ", from our ", pa.array(dept_name), " range.", "",
    )
    return {
        "item_id": _ids("i", items),
        "title": title,
        "description": description,
        "department": pa.array(dept_name),
        "leaf": pa.array(leaf_name),
        "brand": pa.array(brand),
        "price": pa.array(price),
        "color": pa.array(color),
        "rating": pa.array(np.round(np.clip(rng.normal(4.1, 0.6, m), 1.0, 5.0), 1)),
        "status": pa.array(np.asarray(STATUSES)[cat.item_status[start:stop]]),
    }


def _sessions(cat: _Catalogue, block: int) -> dict[str, pa.Array]:
    """SESSION_BLOCK sessions, event by event, in session order."""
    c = cat.config
    rng = np.random.default_rng([c.seed, 3, block])
    s = SESSION_BLOCK
    user = cat.active_users(rng.random(s))
    interest = np.where(rng.random(s) < 0.5, cat.user_interests(user, 0), cat.user_interests(user, 1))
    any_leaf = np.minimum(np.searchsorted(cat.leaf_cdf_global, rng.random(s), side="right"), len(LEAVES) - 1)
    intent = np.where(rng.random(s) < c.interest_share, interest, any_leaf)
    n_views = rng.geometric(1.0 / c.views_per_session, s)
    session_of_view = np.repeat(np.arange(s), n_views)
    v = len(session_of_view)
    u = rng.random(v)
    item = np.where(rng.random(v) < c.intent_share, cat.items_in_leaf(intent[session_of_view], u),
                    cat.popular_items(u))
    # funnel depth per view: 0 view, 1 click, 2 add_to_cart, 3 purchase (only for active items)
    depth = np.zeros(v, dtype=np.int64)
    go_on = np.ones(v, dtype=bool)
    for p in c.funnel:
        go_on &= rng.random(v) < p
        depth += go_on
    depth = np.where(cat.item_status[item] == 0, depth, np.minimum(depth, 2))
    view_of_event = np.repeat(np.arange(v), depth + 1)
    event_type = np.arange(len(view_of_event)) - np.repeat(np.cumsum(depth + 1) - (depth + 1), depth + 1)
    session = session_of_view[view_of_event]
    # time: a day (more sessions lately), an hour from a daily rhythm, then gaps between events
    day = np.floor(c.days * rng.random(s) ** 0.8)
    hour = np.searchsorted(_HOUR_CDF, rng.random(s), side="right")
    start = c.end.timestamp() - (c.days - day) * 86400 + hour * 3600 + rng.random(s) * 3600
    gap = rng.exponential(_GAP_S[event_type]) + 1.0
    gap[np.r_[True, session[1:] != session[:-1]]] = 0.0  # a session's first event is at its start
    elapsed = np.cumsum(gap)
    first = np.searchsorted(session, np.arange(s))
    elapsed -= elapsed[first][session]
    ts = np.minimum(start[session] + elapsed, c.end.timestamp() - 1).astype(np.int64)
    quantity = np.where(event_type == 3, rng.choice([1.0, 2.0, 3.0], len(ts), p=[0.85, 0.1, 0.05]), 1.0)
    return {
        "user_id": _ids("u", user[session]),
        "item_id": _ids("i", item[view_of_event]),
        "type": pa.array(np.asarray(INTERACTION_TYPES)[event_type]),
        "value": pa.array(quantity),
        "ts": pa.array(ts).cast(pa.timestamp("s", tz="UTC")),
    }


_HOUR_WEIGHTS = np.array([2, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 7, 6, 5, 5, 6, 7, 9, 10, 10, 8, 6, 4], dtype=float)
_HOUR_CDF = np.cumsum(_HOUR_WEIGHTS)[:-1] / _HOUR_WEIGHTS.sum()
_GAP_S = np.array([45.0, 10.0, 30.0, 90.0])  # mean seconds before a view, click, add_to_cart, purchase


def _ids(prefix: str, index: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(index), pa.string()), "")


# ------------------------------------------------------------------------------ tables


def _tables(config: SyntheticConfig, form: str) -> Iterator[tuple[str, Iterator[pa.Table]]]:
    """(name, its blocks as pa.Tables) for users, items, interactions, in the given form.

    form: "parquet" (dicts as JSON text, categories a list), "csv" (flattened demo_/attr_ columns,
    categories pipe-joined, ts in unix seconds) or "copy" (PostgreSQL's jsonb and text[] text).
    """
    cat = _Catalogue.build(config)
    users = (_users(cat, s, min(s + USER_BLOCK, config.n_users)) for s in range(0, config.n_users, USER_BLOCK))
    items = (_items(cat, b, s, min(s + ITEM_BLOCK, config.n_items))
             for b, s in enumerate(range(0, config.n_items, ITEM_BLOCK)))
    yield "users", (_user_table(cols, form) for cols in users)
    yield "items", (_item_table(cols, form) for cols in items)
    yield "interactions", (_interaction_table(cols, form) for cols in _interaction_blocks(cat))


def _interaction_blocks(cat: _Catalogue) -> Iterator[dict[str, pa.Array]]:
    left, block = cat.config.n_interactions, 0
    while left > 0:
        cols = _sessions(cat, block)
        n = min(left, len(cols["ts"]))
        yield {k: v.slice(0, n) for k, v in cols.items()}
        left, block = left - n, block + 1


def _json(*parts: object) -> pa.Array:
    """JSON object text from alternating literal pieces and string arrays."""
    return pc.binary_join_element_wise(*parts, "")


def _user_table(c: dict[str, pa.Array], form: str) -> pa.Table:
    if form == "csv":
        return pa.table({"user_id": c["user_id"], "demo_age": c["age"], "demo_gender": c["gender"],
                         "demo_location": c["location"]})
    demographics = _json('{"age": ', pc.cast(c["age"], pa.string()), ', "gender": "', c["gender"],
                         '", "location": "', c["location"], '"}')
    empty = pa.array(["{}"] * len(c["user_id"]))
    return pa.table({"user_id": c["user_id"], "demographics": demographics, "preferences": empty})


def _item_table(c: dict[str, pa.Array], form: str) -> pa.Table:
    base = {k: c[k] for k in ("item_id", "title", "description")}
    tail = {"brand": c["brand"], "price": c["price"]}
    if form == "csv":
        categories = pc.binary_join_element_wise(c["department"], c["leaf"], "|")
        return pa.table({**base, "categories": categories, **tail, "attr_color": c["color"],
                         "attr_rating": c["rating"], "status": c["status"]})
    attributes = _json('{"color": "', c["color"], '", "rating": ', pc.cast(c["rating"], pa.string()), "}")
    if form == "copy":  # a PostgreSQL text[] literal; names hold no quotes or backslashes
        categories = _json('{"', c["department"], '","', c["leaf"], '"}')
    else:
        n = len(c["item_id"])
        categories = pa.ListArray.from_arrays(
            pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
            pc.take(pa.concat_arrays([c["department"], c["leaf"]]),
                    pa.array(np.stack([np.arange(n), np.arange(n) + n], axis=1).ravel())),
        )
    return pa.table({**base, "categories": categories, **tail, "attributes": attributes, "status": c["status"]})


def _interaction_table(c: dict[str, pa.Array], form: str) -> pa.Table:
    ts = pc.cast(c["ts"], pa.int64()) if form == "csv" else c["ts"]
    return pa.table({"user_id": c["user_id"], "item_id": c["item_id"], "type": c["type"], "value": c["value"],
                     "ts": ts})


def _write(path: Path, tables: Iterator[pa.Table], fmt: str, bar: tqdm) -> int:
    rows = 0
    writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
    try:
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema) if fmt == "parquet" else pa_csv.CSVWriter(
                    path, table.schema)
            writer.write_table(table)
            rows += table.num_rows
            bar.update(table.num_rows)
    finally:
        if writer is not None:
            writer.close()
    return rows


def _bar(config: SyntheticConfig, progress: bool) -> tqdm:
    total = config.n_users + config.n_items + config.n_interactions
    return tqdm(total=total, desc="synthetic", unit="rows", unit_scale=True, disable=not progress)


# ------------------------------------------------------------------------------ vectors


def item_vectors(
    n: int, dim: int = 64, seed: int = 0, n_clusters: int | None = None, cone: float = 0.75,
    spectrum: float = 0.5, spread: float = 0.8, tail: float = 0.5, chunk: int = 262_144,
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [n, dim] unit rows, int [n] cluster labels): embedding-like item vectors.

    A mixture of Gaussians whose centres sit in a cone around one mean direction (trained
    embeddings share one: |mean| ~ 0.6), with a decaying spectrum (effective rank ~30 of 64),
    per-cluster anisotropic spread, heavy-tailed distance from the centre (log-normal), and
    Pareto cluster sizes. The defaults match the MovieLens two-tower model's embeddings on
    effective rank and neighbourhood LID and are harder for IVF than them (docs/scale.md).
    """
    rng = np.random.default_rng([seed, 100])
    k = n_clusters or int(min(8192, max(8, n // 500)))
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    scales = np.arange(1, dim + 1, dtype=np.float64) ** -spectrum
    scales /= np.sqrt((scales**2).sum())
    mean = rng.standard_normal(dim)
    mean /= np.linalg.norm(mean)
    centers = (rng.standard_normal((k, dim)) * scales) @ rotation.T
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    centers = (cone * mean + math.sqrt(1 - cone**2) * centers).astype(np.float32)
    cluster_scales = (rng.lognormal(0.0, 0.5, (k, dim)) * scales).astype(np.float32)
    sizes = rng.pareto(1.2, k) + 1.0
    labels = rng.choice(k, size=n, p=sizes / sizes.sum())
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        noise = rng.standard_normal((len(lab), dim), dtype=np.float32) * cluster_scales[lab]
        radius = rng.lognormal(0.0, tail, (len(lab), 1)).astype(np.float32)
        x = centers[lab] + spread * radius * (noise @ rotation.T)
        out[start : start + chunk] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, labels


def user_histories(labels: np.ndarray, n_users: int, seed: int = 1, max_len: int = 20) -> list[np.ndarray]:
    """Per user, 1..max_len item rows (most recent first) from 1-3 interest clusters."""
    rng = np.random.default_rng([seed, 101])
    n = len(labels)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(int(labels.max()) + 2))
    out = []
    for _ in range(n_users):
        interests = labels[rng.integers(0, n, rng.integers(1, 4))]  # clusters of random items: big ones more
        cluster = interests[rng.integers(0, len(interests), rng.integers(1, max_len + 1))]
        lo, hi = bounds[cluster], bounds[cluster + 1]
        out.append(order[lo + (rng.random(len(cluster)) * (hi - lo)).astype(np.int64)])
    return out


def user_vectors(
    items: np.ndarray, histories: list[np.ndarray], noise: float = 0.8, decay: float = 0.9, seed: int = 2,
) -> np.ndarray:
    """float32 [len(histories), dim] unit query vectors: a recency-weighted mean of each history plus noise.

    noise (relative to the unit mean) stands for what a user tower adds and for users not being
    items; 0.8 puts the median top-1 inner product where the MovieLens user tower's is (~0.72).
    """
    rng = np.random.default_rng([seed, 102])
    dim = items.shape[1]
    out = np.empty((len(histories), dim), dtype=np.float32)
    for i, rows in enumerate(histories):
        w = decay ** np.arange(len(rows))
        q = (w[:, None] * items[rows]).sum(axis=0) / w.sum()
        q = q / np.linalg.norm(q) + noise * rng.standard_normal(dim) / math.sqrt(dim)
        out[i] = q / np.linalg.norm(q)
    return out


__all__ = ["SyntheticConfig", "generate", "item_vectors", "load_into_postgres", "user_histories", "user_vectors"]
