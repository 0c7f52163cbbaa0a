"""The filter expression language: parsing, evaluation, and errors that name the position."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidArgument
from orchestrator.filter_expr import MAX_DEPTH, parse
from storage.records import ItemRecord

KIDS_CHEAP = ItemRecord("a", categories=["kids", "toys"], price=20, brand="acme", attributes={"year": 1995})
KIDS_DEAR = ItemRecord("b", categories=["kids"], price=150, brand="zed", attributes={"year": 2001})
DRAMA_DEAR = ItemRecord("c", categories=["drama"], price=300, status="out_of_stock", attributes={"year": 1999})
NO_PRICE = ItemRecord("d", categories=["drama"], title='say "hi"')
ITEMS = [KIDS_CHEAP, KIDS_DEAR, DRAMA_DEAR, NO_PRICE]


def kept(text: str, interactions: dict[str, set[str]] | None = None) -> list[str]:
    f = parse(text)
    return [it.item_id for it in ITEMS if f.keep(it, (interactions or {}).get(it.item_id, set()))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('EXCLUDE category IN ("kids") AND price > 100', ["a", "c", "d"]),
        ('exclude category in ("kids") and price > 100', ["a", "c", "d"]),
        ('INCLUDE category IN ("kids")', ["a", "b"]),
        ('INCLUDE category NOT IN ("kids")', ["c", "d"]),
        ('INCLUDE (brand = "acme" OR price >= 300) AND NOT status = "out_of_stock"', ["a"]),
        ("INCLUDE year >= 1995 AND year < 2000", ["a", "c"]),
        ("INCLUDE price < 100", ["a"]),  # a missing price is not below 100
        ("EXCLUDE price > 100", ["a", "d"]),  # ... nor above it
        ('INCLUDE title = "say \\"hi\\""', ["d"]),
        ('INCLUDE item_id IN ("a", "c")', ["a", "c"]),
        ('INCLUDE color = "red"', []),  # unknown attribute: no item has it
        ('INCLUDE NOT (category = "kids" OR category = "drama")', []),
    ],
)
def test_item_filters(text: str, expected: list[str]) -> None:
    assert kept(text) == expected


def test_interaction_filters_see_the_users_history() -> None:
    history = {"a": {"view"}, "b": {"view", "purchase"}, "c": {"add_to_cart"}}
    assert kept('EXCLUDE interaction IN ("purchase", "add_to_cart")', history) == ["a", "d"]
    assert kept('INCLUDE interaction = "view"', history) == ["a", "b"]


def test_parse_once() -> None:
    assert parse('EXCLUDE price > 1') is parse('EXCLUDE price > 1')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("category IN (\"kids\")", "expected INCLUDE or EXCLUDE at position 0, found 'category'"),
        ('EXCLUDE category IN ("kids"', "expected ')' or ',' at position 27, found the end"),
        ("EXCLUDE price >", 'expected a value ("text" or a number) at position 15, found the end'),
        ("EXCLUDE price ~ 3", "unexpected character '~' at position 14"),
        ('EXCLUDE price > 3 brand = "x"', "expected AND, OR or the end at position 18, found 'brand'"),
        ("EXCLUDE NOT", "expected a field name at position 11, found the end"),
        ('EXCLUDE brand NOT = "x"', "expected IN after NOT at position 18"),
        ("INCLUDE", "expected a field name at position 7, found the end"),
    ],
)
def test_errors_name_the_field_position_and_expectation(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse(text)
    assert str(err.value).startswith("filters.expression: ")
    assert message in str(err.value)


def test_oversized_expression_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="at most 2000 characters"):
        parse("EXCLUDE price > 1 " + "OR price > 1 " * 200)


# ---------------------------------------------------------------------------- hostile input

def test_nesting_deeper_than_the_limit_is_rejected_naming_the_field() -> None:
    deep = "INCLUDE " + "(" * 330 + "price > 1" + ")" * 330  # 677 characters: under the length limit
    with pytest.raises(InvalidArgument, match=r"^filters\.expression: must not nest .* deeper than 32 levels"):
        parse(deep)
    with pytest.raises(InvalidArgument, match="deeper than 32 levels"):
        parse("EXCLUDE " + "NOT " * 400 + "price > 1")
    at_limit = "INCLUDE " + "(" * MAX_DEPTH + "price > 100" + ")" * MAX_DEPTH
    assert kept(at_limit) == ["b", "c"]
    assert kept("INCLUDE " + "NOT " * MAX_DEPTH + "price > 100") == ["b", "c"]  # an even number of NOTs


TAGGED = [
    ItemRecord("list", attributes={"tags": ["red", "blue"], "sizes": [1, 2.5], "n": 3}),
    ItemRecord("map", attributes={"tags": {"red": 1}, "sizes": {"a": [1]}, "n": {"x": 1}}),
    ItemRecord("flag", attributes={"tags": True, "sizes": False, "n": True}),
    ItemRecord("huge", attributes={"tags": [[["red"]]], "sizes": 10**400, "n": 10**400}),
    ItemRecord("none", attributes={}),
    ItemRecord("odd", attributes=["not", "a", "map"]),  # type: ignore[arg-type]  # a row bulk-loaded as a list
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('INCLUDE tags IN ("red")', ["list"]),  # a list matches when an entry does; a map never
        ('INCLUDE tags NOT IN ("red")', ["map", "flag", "huge", "none", "odd"]),
        ('INCLUDE tags = "blue"', ["list"]),
        ("INCLUDE sizes IN (2.5)", ["list"]),
        ("INCLUDE sizes >= 2", ["list"]),
        ("INCLUDE n IN (1)", []),  # true is not the number 1
        ("INCLUDE n = 1", []),
        ("INCLUDE n > 1", ["list"]),  # an integer too large for a float compares as nothing
        ('INCLUDE n IN ("3", 3)', ["list"]),
        ('INCLUDE tags != "red"', ["list", "map", "flag", "huge", "none", "odd"]),
    ],
)
def test_comparisons_are_typed_and_never_raise(text: str, expected: list[str]) -> None:
    f = parse(text)
    assert [it.item_id for it in TAGGED if f.keep(it, set())] == expected


# Tokens of the language and some that are not, so generated texts reach deep into the parser.
_WORDS = ["INCLUDE", "EXCLUDE", "AND", "OR", "NOT", "IN", "(", ")", ",", "=", "!=", "<", "<=", ">", ">=",
          "price", "category", "interaction", "tags", "title", "n", '"red"', '"a\\"b"', "1", "-2.5", "1e9",
          "~", '"', "\x00", "9" * 400]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)
_ITEMS = st.builds(
    ItemRecord, item_id=st.text(max_size=3), title=st.text(max_size=5),
    categories=st.lists(st.sampled_from(["kids", "drama", "red"]), max_size=3),
    price=st.none() | st.floats(), attributes=st.dictionaries(st.sampled_from(["tags", "n", "title", "x"]), _JSON),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=40).map(" ".join) | st.text(max_size=60))
def test_any_text_parses_or_is_rejected_naming_the_field(text: str) -> None:
    try:
        parse(text)
    except InvalidArgument as exc:
        assert str(exc).startswith("filters.expression: ")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_WORDS[:20]), min_size=2, max_size=30).map(" ".join), st.lists(_ITEMS, max_size=4),
       st.sets(st.sampled_from(["view", "purchase"])))
def test_a_parsed_filter_never_raises_on_any_item(text: str, items: list[ItemRecord], interactions: set[str]) -> None:
    try:
        f = parse(text)
    except InvalidArgument:
        return
    for it in items:
        assert isinstance(f.keep(it, interactions), bool)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["price > 1", 'tags IN ("red", 2)', 'category = "kids"', "n <= -1"]), _ITEMS)
def test_generated_valid_filters_evaluate_on_hostile_attributes(comparison: str, item: ItemRecord) -> None:
    for head in ("INCLUDE", "EXCLUDE"):
        assert isinstance(parse(f"{head} NOT ({comparison} OR {comparison})").keep(item, set()), bool)
