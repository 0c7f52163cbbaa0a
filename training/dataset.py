"""The training data: users, items and interactions, from files or PostgreSQL.

Every source ends in the same in-memory shape (Dataset), checked on the way in so
that a bad row fails here, naming its file and column, instead of deep in training.
docs/data-format.md describes the file format.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

INTERACTION_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "like")
ITEM_STATUSES = ("active", "out_of_stock", "retired")
USER_COLUMNS = ["user_id", "demographics", "preferences"]
ITEM_COLUMNS = ["item_id", "title", "description", "categories", "brand", "price", "attributes", "status"]
INTERACTION_COLUMNS = ["user_id", "item_id", "type", "value", "ts"]
TABLES = ("users", "items", "interactions")

# Flattened dict columns in CSV (and allowed in parquet): demo_age -> demographics["age"].
FLAT_PREFIXES = {"demographics": "demo_", "preferences": "pref_", "attributes": "attr_"}


class DataError(ValueError):
    """Bad input data; the message names the file (or table), the column and the rows."""


@dataclass
class Dataset:
    users: pd.DataFrame  # user_id (str), demographics (dict), preferences (dict)
    # item_id, title, description, categories (list[str]), brand, price (NaN if unknown), attributes, status
    items: pd.DataFrame
    interactions: pd.DataFrame  # user_id, item_id, type, value (float), ts (datetime64[ns, UTC])

    def summary(self) -> str:
        return f"{len(self.users)} users, {len(self.items)} items, {len(self.interactions)} interactions"


# ---------------------------------------------------------------------------- sources


def load_files(folder: Path) -> Dataset:
    """Read users, items and interactions from CSV or parquet files in `folder`.

    users.* is optional (users without a row simply have no demographics); items.* and
    interactions.* are required, and every interaction must name a known item.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; expected users, items and interactions files in it")
    users = _read_table(folder, "users", required=False)
    items = _read_table(folder, "items", required=True)
    interactions = _read_table(folder, "interactions", required=True)
    assert items is not None and interactions is not None
    dataset = Dataset(
        users=_normalize_users(*users) if users else pd.DataFrame(columns=USER_COLUMNS),
        items=_normalize_items(*items),
        interactions=_normalize_interactions(*interactions),
    )
    _check_references(dataset, items_source=items[1].name, interactions_source=interactions[1].name)
    return dataset


def load_postgres(database_url: str) -> Dataset:
    """Read the users, items and interactions tables (storage/migrations/0001_initial.sql)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        users = pd.DataFrame(
            conn.execute("SELECT user_id, demographics, preferences FROM users ORDER BY user_id").fetchall(),
            columns=USER_COLUMNS,
        )
        items = pd.DataFrame(
            conn.execute(
                "SELECT item_id, title, description, categories, brand, price, attributes, status "
                "FROM items ORDER BY item_id"
            ).fetchall(),
            columns=ITEM_COLUMNS,
        )
        # COPY streams millions of rows far faster than fetching Python tuples; ts travels
        # as integer microseconds so no time zone or text format gets in the way.
        buf = io.BytesIO()
        query = (
            "COPY (SELECT user_id, item_id, type, value, (extract(epoch FROM ts) * 1000000)::bigint "
            "FROM interactions ORDER BY ts, interaction_id) TO STDOUT (FORMAT csv)"
        )
        with conn.cursor().copy(query) as copy:
            for block in copy:
                buf.write(block)
    names = ["user_id", "item_id", "type", "value", "ts"]
    if buf.tell() == 0:
        interactions = pd.DataFrame(columns=names)
    else:
        buf.seek(0)
        interactions = pd.read_csv(
            buf, header=None, names=names, keep_default_na=False,
            dtype={"user_id": str, "item_id": str, "type": str, "value": float, "ts": np.int64},
        )
    interactions["ts"] = pd.to_datetime(interactions["ts"].astype(np.int64), unit="us", utc=True)
    return Dataset(
        users=_normalize_users(users, _Source("table users")),
        items=_normalize_items(items, _Source("table items")),
        interactions=_normalize_interactions(interactions, _Source("table interactions")),
    )


def save_files(dataset: Dataset, folder: Path, fmt: str = "csv") -> Path:
    """Write `dataset` in the file format load_files reads (csv or parquet)."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    users, items, inter = dataset.users.copy(), dataset.items.copy(), dataset.interactions.copy()
    if fmt == "csv":
        users = _flatten(users, ["demographics", "preferences"])
        items = _flatten(items, ["attributes"])
        items["categories"] = items["categories"].map(lambda cs: "|".join(cs))
        inter["ts"] = inter["ts"].map(lambda t: t.isoformat())
        for name, frame in zip(TABLES, (users, items, inter), strict=True):
            frame.to_csv(folder / f"{name}.csv", index=False)
    else:
        # dicts as JSON text: pyarrow would infer a struct per column and reject mixed value types
        for frame, cols in ((users, ["demographics", "preferences"]), (items, ["attributes"])):
            for col in cols:
                frame[col] = frame[col].map(json.dumps)
        for name, frame in zip(TABLES, (users, items, inter), strict=True):
            frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


# ----------------------------------------------------------------------- normalizers


@dataclass(frozen=True)
class _Source:
    name: str  # "items.csv" or "table items"
    first_line: int | None = None  # CSV: file line of row 0, so errors point at the line

    def where(self, positions: np.ndarray) -> str:
        shown = [str(int(p) + (self.first_line or 0)) for p in positions[:5]]
        more = f" (and {len(positions) - 5} more)" if len(positions) > 5 else ""
        unit = ("line" if self.first_line else "row") + ("s" if len(positions) > 1 else "")
        return f"{unit} {', '.join(shown)}{more}"


def _normalize_users(raw: pd.DataFrame, source: _Source) -> pd.DataFrame:
    _require(raw, ["user_id"], source)
    out = pd.DataFrame({"user_id": _ids(raw, "user_id", source)})
    for col in ("demographics", "preferences"):
        out[col] = _dict_column(raw, col, source)
    return out.reset_index(drop=True)


def _normalize_items(raw: pd.DataFrame, source: _Source) -> pd.DataFrame:
    _require(raw, ["item_id"], source)
    out = pd.DataFrame({"item_id": _ids(raw, "item_id", source)})
    for col in ("title", "description", "brand"):
        out[col] = _text(raw, col)
    if "categories" in raw:
        out["categories"] = raw["categories"].map(_categories).to_numpy()
    else:
        out["categories"] = [[] for _ in range(len(raw))]
    out["price"] = _numbers(raw, "price", source, default=math.nan)
    out["attributes"] = _dict_column(raw, "attributes", source)
    status = _text(raw, "status").str.strip().str.lower().replace("", "active")
    _check(source, "status", ~status.isin(ITEM_STATUSES).to_numpy(), status,
           f"must be one of {', '.join(ITEM_STATUSES)}")
    out["status"] = status
    return out[ITEM_COLUMNS].reset_index(drop=True)


def _normalize_interactions(raw: pd.DataFrame, source: _Source) -> pd.DataFrame:
    _require(raw, ["user_id", "item_id", "ts"], source)
    out = pd.DataFrame({c: _text(raw, c).str.strip() for c in ("user_id", "item_id")})
    for col in ("user_id", "item_id"):
        _check(source, col, (out[col] == "").to_numpy(), out[col], "must not be empty")
    kind = _text(raw, "type").str.strip().str.lower().replace("", "view")
    _check(source, "type", ~kind.isin(INTERACTION_TYPES).to_numpy(), kind,
           f"must be one of {', '.join(INTERACTION_TYPES)}")
    out["type"] = kind
    out["value"] = _numbers(raw, "value", source, default=1.0)
    out["ts"] = _timestamps(raw["ts"], source)
    return out.reset_index(drop=True)


def _check_references(dataset: Dataset, items_source: str, interactions_source: str) -> None:
    unknown = ~dataset.interactions["item_id"].isin(dataset.items["item_id"]).to_numpy()
    if unknown.any():
        examples = ", ".join(repr(i) for i in dataset.interactions["item_id"][unknown].unique()[:5])
        raise DataError(
            f"{interactions_source}: column 'item_id': {int(unknown.sum())} rows name items missing from "
            f"{items_source} (e.g. {examples}); add those items or drop the rows"
        )


# ---------------------------------------------------------------------------- helpers


def _read_table(folder: Path, name: str, required: bool) -> tuple[pd.DataFrame, _Source] | None:
    found = [folder / f"{name}.{ext}" for ext in ("csv", "parquet") if (folder / f"{name}.{ext}").exists()]
    if len(found) > 1:
        raise DataError(f"{folder}: both {name}.csv and {name}.parquet exist; keep one")
    if not found:
        if required:
            raise DataError(f"{folder}: missing {name}.csv or {name}.parquet")
        return None
    path = found[0]
    try:
        if path.suffix == ".csv":
            # Everything as text: ids like "007" and zip codes must not turn into numbers.
            return pd.read_csv(path, dtype=str, keep_default_na=False), _Source(path.name, first_line=2)
        return pd.read_parquet(path), _Source(path.name)
    except (ValueError, OSError) as e:  # pandas' parser errors and pyarrow's are ValueErrors
        raise DataError(f"{path}: cannot read: {e}") from e


def _require(raw: pd.DataFrame, columns: list[str], source: _Source) -> None:
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise DataError(
            f"{source.name}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} (found: {', '.join(map(str, raw.columns)) or 'none'})"
        )


def _check(source: _Source, column: str, bad: np.ndarray, values: pd.Series, rule: str) -> None:
    if bad.any():
        positions = np.flatnonzero(bad)
        example = values.iloc[positions[0]]
        where = source.where(positions)
        raise DataError(f"{source.name}: column {column!r}: {rule}; {where} (e.g. {example!r})")


def _ids(raw: pd.DataFrame, column: str, source: _Source) -> pd.Series:
    ids = _text(raw, column).str.strip()
    _check(source, column, (ids == "").to_numpy(), ids, "must not be empty")
    _check(source, column, ids.duplicated().to_numpy(), ids, "duplicate id")
    return ids


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def _text(raw: pd.DataFrame, column: str) -> pd.Series:
    if column not in raw:
        return pd.Series([""] * len(raw), index=raw.index, dtype=object)
    return raw[column].map(lambda v: "" if _missing(v) else str(v)).astype(object)


def _numbers(raw: pd.DataFrame, column: str, source: _Source, default: float) -> pd.Series:
    if column not in raw:
        return pd.Series(np.full(len(raw), default), index=raw.index, dtype=float)
    col = raw[column].map(lambda v: None if _missing(v) or (isinstance(v, str) and not v.strip()) else v)
    numbers = pd.to_numeric(col, errors="coerce").astype(float)
    _check(source, column, (numbers.isna() & col.notna()).to_numpy(), col, "must be a number")
    return numbers.fillna(default)


_NUMERIC = re.compile(r"^\s*-?\d+(\.\d*)?\s*$")


def _timestamps(col: pd.Series, source: _Source) -> pd.Series:
    """datetime64[ns, UTC] from datetimes, unix seconds or ISO-8601 text."""
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        return col.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(col):
        return col.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_numeric_dtype(col):
        _check(source, "ts", col.isna().to_numpy(), col, "must not be empty")
        return pd.to_datetime(col.astype(float), unit="s", utc=True).astype("datetime64[ns, UTC]")
    text = col.map(lambda v: "" if _missing(v) else str(v).strip())
    _check(source, "ts", (text == "").to_numpy(), text, "must not be empty")
    if len(text) and text.str.match(_NUMERIC).all():
        return pd.to_datetime(text.astype(float), unit="s", utc=True).astype("datetime64[ns, UTC]")
    ts = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    _check(source, "ts", ts.isna().to_numpy(), text,
           "must be ISO-8601 (2024-05-01T12:00:00Z) or unix seconds, the same in every row")
    return ts.astype("datetime64[ns, UTC]")


def _categories(v: Any) -> list[str]:
    if isinstance(v, str):
        return [c.strip() for c in v.split("|") if c.strip()]
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(c).strip() for c in v if not _missing(c) and str(c).strip()]
    return []


def _scalar(v: Any) -> Any:
    """A CSV cell as a number when written as one ("24", "4.5"), else text ("01234" stays text)."""
    if isinstance(v, np.generic):
        return v.item()
    if not isinstance(v, str):
        return v
    for parse in (int, float):
        try:
            x = parse(v)
        except ValueError:
            continue
        if repr(x) == v and (not isinstance(x, float) or math.isfinite(x)):
            return x
    return v


def _mapping(v: Any) -> dict[str, Any] | None:
    """A dict from a dict, JSON object text, a pyarrow map (list of pairs) or nothing; None if invalid."""
    if _missing(v) or (isinstance(v, str) and not v.strip()):
        return {}
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return None
    if isinstance(v, (list, np.ndarray)) and all(isinstance(p, tuple) and len(p) == 2 for p in v):
        v = dict(v)
    if not isinstance(v, dict):
        return None
    # typed sources (JSON, parquet, jsonb) keep their types; only numpy scalars become Python ones
    return {str(k): (x.item() if isinstance(x, np.generic) else x) for k, x in v.items() if not _missing(x)}


def _dict_column(raw: pd.DataFrame, column: str, source: _Source) -> pd.Series:
    """The dict column from its own column (dict or JSON text) and/or flattened prefix columns."""
    if column in raw:
        dicts = raw[column].map(_mapping)
        _check(source, column, dicts.isna().to_numpy(), raw[column], 'must be a JSON object like {"age": 24}')
    else:
        dicts = pd.Series([{} for _ in range(len(raw))], index=raw.index, dtype=object)
    prefix = FLAT_PREFIXES[column]
    flat = [c for c in raw.columns if isinstance(c, str) and c.startswith(prefix) and len(c) > len(prefix)]
    if flat:
        cells = raw[flat].to_numpy(dtype=object)
        keys = [c[len(prefix):] for c in flat]
        merged = []
        for base, row in zip(dicts, cells, strict=True):
            d = dict(base)
            for key, v in zip(keys, row, strict=True):
                if not (_missing(v) or (isinstance(v, str) and not v.strip())):
                    d[key] = _scalar(v.strip() if isinstance(v, str) else v)
            merged.append(d)
        dicts = pd.Series(merged, index=raw.index, dtype=object)
    return dicts


def _flatten(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Dict columns -> prefix columns (demographics["age"] -> demo_age), for CSV."""
    for col in columns:
        prefix = FLAT_PREFIXES[col]
        keys = sorted({k for d in frame[col] for k in d})
        for key in keys:
            frame[prefix + key] = frame[col].map(lambda d, k=key: d.get(k, ""))
        frame = frame.drop(columns=[col])
    return frame
