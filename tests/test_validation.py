"""The validation layer in process: the generic checks (core/validation.py) and what the orchestrator
builds on them (items, users, interactions), the exposure buffer's handling of a row PostgreSQL
refuses, the bounded answer, and the common server's error mapping (malformed bytes, bugs)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from datetime import UTC, datetime

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import InvalidArgument
from core.grpc_server import RejectMalformed, handles_errors
from core.log_limit import RateLimitedLog
from core.validation import (
    check_id,
    check_ids,
    check_string_map,
    check_struct,
    check_text,
    check_timestamp,
    check_user_context,
)
from orchestrator.convert import from_struct, item_from_pb, user_from_pb
from orchestrator.exposures import ExposureLog
from orchestrator.interactions import interaction_from_pb
from orchestrator.recommend import bound_response
from protos import internal_pb2 as ipb
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from tests.conftest import free_port

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FAST = settings(max_examples=150, deadline=None)


def _struct(d: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def _nested(depth: int) -> dict:
    d: dict = {"leaf": 1}
    for _ in range(depth - 1):
        d = {"x": d}
    return d


# ---------------------------------------------------------------------------- ids, texts, maps

@pytest.mark.parametrize(("value", "rule"), [
    ("", "must not be empty"),
    ("x" * 129, "must be at most 128 characters, got 129"),
    ("a\x00b", r"must not contain control characters \(found '\\x00' at position 1\)"),
    ("tab\there", "must not contain control characters"),
    ("del\x7f", "must not contain control characters"),
    ("c1\x85", "must not contain control characters"),
    ("lone\ud800", "must not contain control characters"),
])
def test_bad_ids_are_rejected_naming_the_field_and_rule(value: str, rule: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^user_id: {rule}"):
        check_id("user_id", value)


def test_ids_may_be_any_other_text() -> None:
    for value in ("1", "a b", "ü-ñ-日本", "x" * 128, "emoji 🎬", "quote\"'"):
        assert check_id("user_id", value) == value


def test_ids_in_bulk_name_the_entry() -> None:
    assert check_ids("exclude_item_ids", ["1", "2"], 10) == ["1", "2"]
    with pytest.raises(InvalidArgument, match=r"^exclude_item_ids\[1\]: must not contain control"):
        check_ids("exclude_item_ids", ["1", "2\x00", "3"], 10)
    with pytest.raises(InvalidArgument, match=r"^exclude_item_ids\[0\]: must be at most 128"):
        check_ids("exclude_item_ids", ["x" * 4_000_000], 10)
    with pytest.raises(InvalidArgument, match=r"^exclude_item_ids: must hold at most 2 entries, got 3"):
        check_ids("exclude_item_ids", ["1", "2", "3"], 2)
    with pytest.raises(InvalidArgument, match=r"^anchors\[1\]: must not be empty"):
        check_ids("anchors", ["1", ""], 10)
    assert check_ids("anchors", ["1", ""], 10, allow_empty=True) == ["1", ""]


def test_texts_allow_line_breaks_only_where_multiline() -> None:
    assert check_text("items[0].description", "two\nlines\tand a tab\r\n", 100, multiline=True)
    with pytest.raises(InvalidArgument, match=r"^items\[0\]\.title: must not contain control"):
        check_text("items[0].title", "two\nlines", 100)
    with pytest.raises(InvalidArgument, match=r"^items\[0\]\.description: must not contain control characters other"):
        check_text("items[0].description", "nul\x00", 100, multiline=True)
    with pytest.raises(InvalidArgument, match=r"must be at most 100 characters, got 101"):
        check_text("items[0].description", "x" * 101, 100, multiline=True)


def test_string_maps_check_keys_values_and_size() -> None:
    check_string_map("context.attributes", {"device": "ios"}, 4, 10)
    with pytest.raises(InvalidArgument, match=r"^context\.attributes key 'a\\x00': must not contain"):
        check_string_map("context.attributes", {"a\x00": "x"}, 4, 10)
    with pytest.raises(InvalidArgument, match=r"^context\.attributes\[k\]: must be at most 10 characters"):
        check_string_map("context.attributes", {"k": "x" * 11}, 4, 10)
    with pytest.raises(InvalidArgument, match=r"must hold at most 1 entries, got 2"):
        check_string_map("context.attributes", {"a": "", "b": ""}, 1, 10)


# ---------------------------------------------------------------------------- Structs

@pytest.mark.parametrize(("value", "field", "rule"), [
    ({"age": math.nan}, "user.demographics.age", "must be a finite number, got nan"),
    ({"a": [1, math.inf]}, r"user.demographics.a\[1\]", "must be a finite number, got inf"),
    ({"a\x00": 1}, "user.demographics key 'a\\\\x00'", "must not contain control characters"),
    ({"": 1}, "user.demographics key ''", "must not be empty"),
    ({"s": "nul\x00"}, "user.demographics.s", "must not contain control characters other"),
    (_nested(9), "user.demographics.x.x.x.x.x.x.x.x", "must not nest deeper than 8 levels"),
    ({"big": "x" * 5000}, "user.demographics", "must be at most 4096 bytes serialized"),
])
def test_bad_structs_are_rejected_naming_the_path(value: dict, field: str, rule: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{field}: {rule}"):
        check_struct("user.demographics", _struct(value), 4096)


def test_structs_within_the_limits_pass() -> None:
    check_struct("item.attributes", _struct({"year": 1995, "tags": ["a", {"b": [None, True]}], "n": {}}), 4096)
    check_struct("item.attributes", _struct(_nested(8)), 4096)


def test_a_struct_too_deep_to_recurse_over_is_rejected_without_recursion() -> None:
    s = value = struct_pb2.Struct()
    for _ in range(2000):  # far deeper than protobuf would parse from the wire
        value = value.fields["x"].struct_value
    with pytest.raises(InvalidArgument, match="must not nest deeper than 8 levels"):
        check_struct("item.attributes", s, 1 << 20)


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)


@FAST
@given(st.dictionaries(st.text(max_size=6), JSON, max_size=6))
def test_any_struct_passes_or_is_rejected_and_what_passes_is_stored_as_json(value: dict) -> None:
    s = _struct(value)
    try:
        check_struct("item.attributes", s, 2048)
    except InvalidArgument as exc:
        assert str(exc).startswith("item.attributes")
        return
    stored = json.dumps(from_struct(s), allow_nan=False)  # what jsonb gets: no NaN, no NUL
    assert "\\u0000" not in stored


# ---------------------------------------------------------------------------- timestamps

def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize(("ts", "rule"), [
    (_ts(2**62), "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z, got seconds=4611686018427387904"),
    (_ts(-62135596801), "must be between 1970"),  # before year 1
    (_ts(-1), "must be between 1970"),
    (_ts(0, -1), "nanos must be between 0 and 999999999, got -1"),
    (_ts(0, 10**9), "nanos must be between 0 and 999999999, got 1000000000"),
])
def test_timestamps_out_of_range_are_rejected(ts: timestamp_pb2.Timestamp, rule: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^interactions\\[0\\]\\.timestamp: {rule}"):
        check_timestamp("interactions[0].timestamp", ts)


def test_timestamps_at_the_edges_convert() -> None:
    assert check_timestamp("t", _ts(0)) == datetime(1970, 1, 1, tzinfo=UTC)
    assert check_timestamp("t", _ts(253_402_300_799, 999_999_999)).year == 9999


@FAST
@given(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**31), 2**31 - 1))
def test_an_interaction_with_any_timestamp_is_accepted_or_rejected_naming_it(seconds: int, nanos: int) -> None:
    msg = pb.Interaction(user_id="u", item_id="i", type=pb.VIEW, timestamp=_ts(seconds, nanos))
    try:
        record = interaction_from_pb(msg, "interactions[3]", NOW)
    except InvalidArgument as exc:
        assert str(exc).startswith("interactions[3].timestamp: ")
        return
    assert record.ts is not None and record.ts.tzinfo is not None


def test_an_interactions_weight_is_bounded() -> None:
    for value in (1e308, -1e7):
        with pytest.raises(InvalidArgument, match=r"^interactions\[0\]\.value: must be between -1e\+06 and 1e\+06"):
            interaction_from_pb(pb.Interaction(user_id="u", item_id="i", type=pb.PURCHASE, value=value),
                                "interactions[0]", NOW)


# ---------------------------------------------------------------------------- items and users

def test_item_limits_name_the_entry_and_field() -> None:
    ok = pb.Item(item_id="i", title="T", description="d\n" * 100, categories=["a"], brand="b",
                 attributes=_struct({"year": 1999}))
    assert item_from_pb(ok, "items[0]").title == "T"
    cases = [
        (pb.Item(item_id="i", title="x" * 501), r"items\[2\]\.title: must be at most 500 characters"),
        (pb.Item(item_id="i", title="a\x00"), r"items\[2\]\.title: must not contain control"),
        (pb.Item(item_id="i", description="x" * 10_001), r"items\[2\]\.description: must be at most 10000"),
        (pb.Item(item_id="i", brand="b\x00"), r"items\[2\]\.brand: must not contain control"),
        (pb.Item(item_id="i", categories=["c"] * 33), r"items\[2\]\.categories: must hold at most 32 entries"),
        (pb.Item(item_id="i", categories=["ok", "c\x00"]), r"items\[2\]\.categories\[1\]: must not contain"),
        (pb.Item(item_id="i", attributes=_struct({"big": "x" * 17_000})),
         r"items\[2\]\.attributes: must be at most 16384 bytes"),
        (pb.Item(item_id="i", attributes=_struct({"p": math.inf})), r"items\[2\]\.attributes\.p: must be a finite"),
    ]
    for item, message in cases:
        with pytest.raises(InvalidArgument, match=f"^{message}"):
            item_from_pb(item, "items[2]")


def test_user_limits() -> None:
    with pytest.raises(InvalidArgument, match=r"^user\.demographics\.age: must be a finite number"):
        user_from_pb(pb.User(user_id="u", demographics=_struct({"age": math.nan})))
    with pytest.raises(InvalidArgument, match=r"^user\.preferences\.preferred_categories\[0\]: must not contain"):
        user_from_pb(pb.User(user_id="u", preferences=_struct({"preferred_categories": ["a\x00"]})))
    with pytest.raises(InvalidArgument, match=r"^user\.user_id: must not contain control"):
        user_from_pb(pb.User(user_id="\x00"))


def test_the_user_context_of_internal_calls() -> None:
    check_user_context(ipb.UserContext(user_id="u", recent_item_ids=["1"], recent_timestamps=[1e9],
                                      attributes={"age": "30"}))
    for ctx, message in [
        (ipb.UserContext(recent_item_ids=["1", "x" * 200]), r"user\.recent_item_ids\[1\]: must be at most 128"),
        (ipb.UserContext(recent_timestamps=[math.nan]), r"user\.recent_timestamps\[0\]: must be a finite"),
        (ipb.UserContext(user_id="a\x00"), r"user\.user_id: must not contain"),
        (ipb.UserContext(recent_item_ids=["1"] * 1001), r"user\.recent_item_ids: must hold at most 1000"),
    ]:
        with pytest.raises(InvalidArgument, match=f"^{message}"):
            check_user_context(ctx)


# ---------------------------------------------------------------------------- the answer's size

def test_an_answer_over_the_limit_sheds_metadata_from_the_bottom() -> None:
    items = [pb.ScoredItem(item_id=str(i), reason="r", item=pb.Item(item_id=str(i), title=f"t{i}",
                                                                      description="d" * 10_000,
                                                                      attributes=_struct({"a": "x" * 5000})))
             for i in range(500)]
    response = pb.TrendingResponse(items=items)
    assert response.ByteSize() > 7_000_000
    bound_response(response)
    assert response.ByteSize() <= 2 * 1024 * 1024
    assert len(response.items) == 500
    assert response.items[0].item.description and response.items[0].item.attributes.fields  # the top keeps it
    assert not response.items[-1].item.description and response.items[-1].item.title == "t499"
    small = pb.TrendingResponse(items=items[:3])
    before = small.SerializeToString()
    bound_response(small)
    assert small.SerializeToString() == before


def test_an_answer_with_huge_titles_too_loses_whole_metadata_last_first() -> None:
    items = [pb.ScoredItem(item_id=str(i), item=pb.Item(item_id=str(i), title="t" * 20_000)) for i in range(500)]
    response = pb.RecommendResponse(items=items)
    bound_response(response)
    assert response.ByteSize() <= 2 * 1024 * 1024
    assert response.items[0].HasField("item") and not response.items[-1].HasField("item")


# ---------------------------------------------------------------------------- the exposure buffer

def _row(request_id: str, user_id: str = "u") -> tuple[str, str, str, str, list[str]]:
    return (request_id, user_id, "home", "control", ["1", "2"])


class _Counts:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


@pytest.mark.integration
def test_a_row_postgresql_refuses_is_dropped_and_counted_and_the_rest_written(database_url: str) -> None:
    from storage.db import async_pool

    async def run() -> tuple[int, list[str], int, int]:
        pool = await async_pool(database_url, min_size=1, max_size=2)
        try:
            stats = _Counts()
            log = ExposureLog(pool, stats=stats)  # type: ignore[arg-type]
            for i in range(9):
                log.add(*_row(f"bisect-{i}", "a\x00b" if i in (2, 7) else "u"))
            written = await log.flush()
            assert await log.flush() == 0  # nothing left behind to block the next flush
            log.add(*_row("bisect-after"))
            written += await log.flush()
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT request_id FROM exposures WHERE request_id LIKE 'bisect-%%'")
                ids = sorted(r["request_id"] for r in await cur.fetchall())
            return written, ids, stats.counts.get("exposures_dropped", 0), log.dropped
        finally:
            await pool.close()

    written, ids, counted, dropped = asyncio.run(run())
    assert written == 8
    assert ids == sorted([f"bisect-{i}" for i in range(9) if i not in (2, 7)] + ["bisect-after"])
    assert counted == dropped == 2


def test_on_a_connection_error_every_row_is_kept_for_the_next_flush() -> None:
    from psycopg_pool import AsyncConnectionPool

    async def run() -> list:
        pool = AsyncConnectionPool(f"postgresql://127.0.0.1:{free_port()}/none", min_size=0, max_size=1, timeout=0.5,
                                   open=False)
        await pool.open()
        try:
            log = ExposureLog(pool)
            log.add(*_row("kept-1"))
            log.add(*_row("kept-2"))
            with pytest.raises(psycopg.OperationalError):
                await log.flush()
            return list(log._rows)
        finally:
            await pool.close()

    assert [r[0] for r in asyncio.run(run())] == ["kept-1", "kept-2"]


def test_a_rate_limited_log_says_how_many_lines_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("test.limited"), interval_s=0.2)
    with caplog.at_level(logging.INFO, "test.limited"):
        assert limited.info("k", "bad %s", "one")
        assert not limited.info("k", "bad %s", "two")
        assert not limited.info("k", "bad %s", "three")
        assert limited.info("other", "another key")
        import time

        time.sleep(0.25)
        assert limited.info("k", "bad %s", "four")
    assert [r.getMessage() for r in caplog.records] == [
        "bad one", "another key", "bad four (2 more like it left out since the last)"]


# ---------------------------------------------------------------------------- the common server

class _Users(pb_grpc.RecommenderServicer):
    @handles_errors
    async def GetUser(self, request: pb.GetUserRequest, context: grpc.aio.ServicerContext) -> pb.User:
        if request.user_id == "bug":
            raise KeyError("a bug")
        return pb.User(user_id=check_id("user_id", request.user_id))


async def _call_raw(payloads: list[bytes]) -> list[tuple[grpc.StatusCode, str]]:
    server = grpc.aio.server(interceptors=[RejectMalformed()])
    pb_grpc.add_RecommenderServicer_to_server(_Users(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    out = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/recsys.v1.Recommender/GetUser", request_serializer=None,
                                       response_deserializer=None)
            for raw in payloads:
                try:
                    await call(raw, timeout=5)
                    out.append((grpc.StatusCode.OK, ""))
                except grpc.aio.AioRpcError as exc:
                    out.append((exc.code(), exc.details() or ""))
    finally:
        await server.stop(0)
    return out


def test_malformed_bytes_bad_fields_and_bugs_get_their_codes(caplog: pytest.LogCaptureFixture) -> None:
    req = pb.GetUserRequest
    with caplog.at_level(logging.INFO):
        codes = asyncio.run(_call_raw([b"\x80", b"\x0a\x02\xff\xfe", req(user_id="ok").SerializeToString(),
                                       req(user_id="a\x00").SerializeToString(),
                                       req(user_id="bug").SerializeToString()]))
    assert [c for c, _ in codes] == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT,
                                     grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL]
    assert codes[0][1].startswith("request: malformed protobuf")
    assert "bad UTF-8" in codes[1][1]
    assert codes[3][1].startswith("user_id: must not contain control characters")
    assert codes[4][1] == "internal error (KeyError)"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "GetUser failed" in tracebacks[0].getMessage()  # only the bug, once
    malformed = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(malformed) == 1  # the second is rate-limited


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=5))
def test_random_bytes_are_never_unknown(payloads: list[bytes]) -> None:
    for code, _ in asyncio.run(_call_raw(payloads)):
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
