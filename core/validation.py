"""The checks every service runs on what a request carries, one rule per kind of field: ids, names,
texts, counts, numbers, Structs, string maps, timestamps. Each failure is InvalidArgument naming the
field and the rule (INVALID_ARGUMENT). The orchestrator (the public API) and the internal Retrieval
and Ranking services check with the same functions, so what one accepts the next one accepts too.
The limits are documented in docs/api-limits.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from google.protobuf import struct_pb2, timestamp_pb2

from core.errors import InvalidArgument
from protos import internal_pb2 as ipb
from storage.records import MAX_ID_LEN

MAX_NAME_LEN = 128  # categories, brands, surfaces, segments, map and Struct keys: as ids
MAX_STRUCT_DEPTH = 8  # a Struct inside a Struct is level 2
MAX_MAP_VALUE_LEN = 4096  # a string map's values (UserContext.attributes)
MAX_RECENT = 1000  # UserContext.recent_item_ids / recent_timestamps (the orchestrator's history window)
MAX_USER_ATTRIBUTES = 1024
MAX_SHOWN = 48  # characters of a bad value quoted in an error

# Timestamp: protobuf's own range ends at 9999-12-31; before 1970 no interaction of ours happened.
EARLIEST_S = 0
LATEST_S = 253_402_300_799  # 9999-12-31T23:59:59Z

# Ids and names: no control characters at all (C0, DEL, C1), nor lone surrogates (psycopg cannot encode
# them); PostgreSQL text cannot hold NUL. Texts may hold tabs and line breaks.
_NOT_IN_IDS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def shown(value: str) -> str:
    """A value quoted in an error message, shortened: a 4 MB id is not echoed back."""
    return repr(value) if len(value) <= MAX_SHOWN else f"{value[:MAX_SHOWN]!r}... ({len(value)} characters)"


def _no_bad_chars(field: str, value: str, pattern: re.Pattern[str], what: str) -> None:
    m = pattern.search(value)
    if m is not None:
        raise InvalidArgument(field, f"must not contain {what} (found {m.group()!r} at position {m.start()})")


def check_id(field: str, value: str, max_len: int = MAX_ID_LEN) -> str:
    """A required id or name: 1..max_len characters, no control characters."""
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > max_len:
        raise InvalidArgument(field, f"must be at most {max_len} characters, got {len(value)}")
    _no_bad_chars(field, value, _NOT_IN_IDS, "control characters")
    return value


def check_name(field: str, value: str, max_len: int = MAX_NAME_LEN) -> str:
    """An optional id or name: empty, or as check_id."""
    return check_id(field, value, max_len) if value else value


def check_ids(field: str, values: Sequence[str], max_n: int, allow_empty: bool = False) -> Sequence[str]:
    """Up to max_n ids, checked in bulk (internal calls carry thousands); the error names the entry."""
    check_count(field, len(values), max_n)
    if not values:
        return values
    if max(map(len, values)) > MAX_ID_LEN or _NOT_IN_IDS.search("".join(values)) or (
            not allow_empty and min(map(len, values)) == 0):
        for i, v in enumerate(values):
            if v or not allow_empty:
                check_id(f"{field}[{i}]", v)
    return values


def check_text(field: str, value: str, max_len: int, multiline: bool = False) -> str:
    """Free text (may be empty): at most max_len characters; no control characters but, when multiline,
    tab and line breaks."""
    if len(value) > max_len:
        raise InvalidArgument(field, f"must be at most {max_len} characters, got {len(value)}")
    if multiline:
        _no_bad_chars(field, value, _NOT_IN_TEXT, "control characters other than tab and line breaks")
    else:
        _no_bad_chars(field, value, _NOT_IN_IDS, "control characters")
    return value


def check_count(field: str, n: int, max_n: int, min_n: int = 0) -> int:
    if not min_n <= n <= max_n:
        rule = f"must hold at most {max_n}" if min_n == 0 else f"must hold {min_n} to {max_n}"
        raise InvalidArgument(field, f"{rule} entries, got {n}")
    return n


def check_finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, f"must be a finite number, got {value}")
    return value


def check_all_finite(field: str, values: Sequence[float]) -> Sequence[float]:
    if not all(map(math.isfinite, values)):
        i = next(i for i, v in enumerate(values) if not math.isfinite(v))
        raise InvalidArgument(f"{field}[{i}]", f"must be a finite number, got {values[i]}")
    return values


def check_range(field: str, value: float, lo: float, hi: float) -> float:
    if not lo <= check_finite(field, value) <= hi:
        raise InvalidArgument(field, f"must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def check_struct(field: str, value: struct_pb2.Struct, max_bytes: int, max_depth: int = MAX_STRUCT_DEPTH) -> None:
    """A JSON object: at most max_bytes serialized and max_depth levels; keys as names; strings as
    multiline text; numbers finite (NaN and Infinity have no JSON, and jsonb refuses them). Walked
    with a stack, not recursion: a deep Struct cannot exhaust the interpreter's."""
    size = value.ByteSize()
    if size > max_bytes:
        raise InvalidArgument(field, f"must be at most {max_bytes} bytes serialized, got {size}")
    stack: list[tuple[str, struct_pb2.Struct | struct_pb2.ListValue, int]] = [(field, value, 1)]
    while stack:
        path, node, depth = stack.pop()
        if depth > max_depth:
            raise InvalidArgument(path, f"must not nest deeper than {max_depth} levels")
        entries: list[tuple[str, struct_pb2.Value]]
        if isinstance(node, struct_pb2.Struct):
            entries = []
            for key, v in node.fields.items():
                check_id(f"{path} key {shown(key)}", key, MAX_NAME_LEN)
                entries.append((f"{path}.{key}", v))
        else:
            entries = [(f"{path}[{i}]", v) for i, v in enumerate(node.values)]
        for at, v in entries:
            kind = v.WhichOneof("kind")
            if kind == "number_value":
                check_finite(at, v.number_value)
            elif kind == "string_value":
                check_text(at, v.string_value, max_bytes, multiline=True)
            elif kind == "struct_value":
                stack.append((at, v.struct_value, depth + 1))
            elif kind == "list_value":
                stack.append((at, v.list_value, depth + 1))


def check_string_map(field: str, value: Mapping[str, str], max_entries: int, max_value_len: int) -> None:
    """A map<string, string>: keys as names, values single-line text."""
    check_count(field, len(value), max_entries)
    for key, v in value.items():
        check_id(f"{field} key {shown(key)}", key, MAX_NAME_LEN)
        check_text(f"{field}[{key}]", v, max_value_len)


def check_timestamp(field: str, ts: timestamp_pb2.Timestamp) -> datetime:
    """A Timestamp within 1970-01-01..9999-12-31 (UTC), nanos 0..999999999, as an aware datetime."""
    if not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgument(field, f"nanos must be between 0 and 999999999, got {ts.nanos}")
    if not EARLIEST_S <= ts.seconds <= LATEST_S:
        raise InvalidArgument(field, f"must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z, "
                                     f"got seconds={ts.seconds}")
    return ts.ToDatetime(tzinfo=UTC)


def check_user_context(u: ipb.UserContext, field: str = "user") -> None:
    """What the orchestrator sends retrieval and ranking about the user (both services check it)."""
    check_name(f"{field}.user_id", u.user_id, MAX_ID_LEN)
    check_ids(f"{field}.recent_item_ids", u.recent_item_ids, MAX_RECENT)
    check_count(f"{field}.recent_timestamps", len(u.recent_timestamps), MAX_RECENT)
    check_all_finite(f"{field}.recent_timestamps", u.recent_timestamps)  # rows bulk-loaded may predate 1970
    check_string_map(f"{field}.attributes", u.attributes, MAX_USER_ATTRIBUTES, MAX_MAP_VALUE_LEN)
