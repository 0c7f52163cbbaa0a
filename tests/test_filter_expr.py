"""The filter expression language: parsing, evaluation, and errors that name the position."""

from __future__ import annotations

import pytest

from core.errors import InvalidArgument
from orchestrator.filter_expr import parse
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
