"""A small filter expression language over item attributes and the user's interactions,
in the spirit of AWS Personalize filters.

    EXCLUDE category IN ("kids") AND price > 100
    INCLUDE (brand = "acme" OR price <= 20) AND NOT status = "out_of_stock"
    EXCLUDE interaction IN ("purchase", "add_to_cart")
    INCLUDE year >= 1990 AND year < 2000

Grammar (keywords are case-insensitive):

    filter     := ("INCLUDE" | "EXCLUDE") expr
    expr       := term ("OR" term)*
    term       := factor ("AND" factor)*
    factor     := "NOT" factor | "(" expr ")" | comparison
    comparison := field ("=" | "!=" | "<" | "<=" | ">" | ">=") value
                | field ["NOT"] "IN" "(" value ("," value)* ")"
    value      := "string" | number

Fields: item_id, title, brand, status, price, category (any of the item's categories),
interaction (any type of interaction the user had with the item: view, click, ...), and
any other name, read from the item's attributes (year, color, ...; a list-valued attribute
matches when any of its entries does). An expression is parsed once (cached) and validated
with an error naming the position and what was expected; parentheses and NOT nest at most
MAX_DEPTH deep. Evaluation is a plain function of (item, the user's interaction types) and
never raises: comparisons are typed (text with text, numbers with numbers), and one that
does not apply to the value's type (a map, a boolean, text against a number, a missing
attribute) is false; != and NOT IN are the negations of = and IN.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Set
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from core.errors import InvalidArgument
from storage.records import ItemRecord

Predicate = Callable[[ItemRecord, Set[str]], bool]

MAX_LENGTH = 2000
MAX_DEPTH = 32  # nested parentheses and NOTs; the parser and the predicates recurse per level
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*") |
        (?P<number>-?\d+(?:\.\d+)?) |
        (?P<op><=|>=|!=|=|<|>) |
        (?P<punct>[(),]) |
        (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"INCLUDE", "EXCLUDE", "AND", "OR", "NOT", "IN"}
_COMPARE = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}
_MULTI = {"category", "interaction"}  # fields holding several values: a comparison matches any


@dataclass(frozen=True)
class Token:
    kind: str  # string, number, op, punct, word, keyword, end
    value: Any
    pos: int


@dataclass(frozen=True)
class Filter:
    include: bool  # True: keep matching items; False: drop them
    predicate: Predicate
    text: str

    def keep(self, item: ItemRecord, interactions: Set[str]) -> bool:
        return self.predicate(item, interactions) == self.include


def _tokens(text: str, field: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            at = len(text) - len(text[pos:].lstrip())
            raise InvalidArgument(field, f"unexpected character {text[at]!r} at position {at}")
        kind = m.lastgroup or ""
        raw = m.group(kind)
        start = m.start(kind)
        if kind == "string":
            out.append(Token("string", re.sub(r"\\(.)", r"\1", raw[1:-1]), start))
        elif kind == "number":
            out.append(Token("number", float(raw), start))
        elif kind == "word" and raw.upper() in _KEYWORDS:
            out.append(Token("keyword", raw.upper(), start))
        else:
            out.append(Token(kind, raw, start))
        pos = m.end()
    out.append(Token("end", None, len(text)))
    return out


class _Parser:
    def __init__(self, text: str, field: str) -> None:
        self.field = field
        self.toks = _tokens(text, field)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.toks[self.i]

    def take(self) -> Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, expected: str) -> InvalidArgument:
        tok = self.peek()
        found = "the end" if tok.kind == "end" else repr(tok.value)
        return InvalidArgument(self.field, f"expected {expected} at position {tok.pos}, found {found}")

    def accept(self, kind: str, value: str | None = None) -> bool:
        tok = self.peek()
        if tok.kind == kind and (value is None or tok.value == value):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, value: str, expected: str) -> None:
        if not self.accept(kind, value):
            raise self.fail(expected)

    def parse(self) -> tuple[bool, Predicate]:
        head = self.take()
        if head.kind != "keyword" or head.value not in ("INCLUDE", "EXCLUDE"):
            self.i -= 1
            raise self.fail("INCLUDE or EXCLUDE")
        pred = self.expr()
        if self.peek().kind != "end":
            raise self.fail("AND, OR or the end")
        return head.value == "INCLUDE", pred

    def expr(self) -> Predicate:
        parts = [self.term()]
        while self.accept("keyword", "OR"):
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda it, ia: any(p(it, ia) for p in parts))

    def term(self) -> Predicate:
        parts = [self.factor()]
        while self.accept("keyword", "AND"):
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda it, ia: all(p(it, ia) for p in parts))

    def factor(self) -> Predicate:
        tok = self.peek()
        if tok.kind in ("keyword", "punct") and tok.value in ("NOT", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise InvalidArgument(self.field, f"must not nest parentheses and NOT deeper than {MAX_DEPTH} "
                                                  f"levels (at position {tok.pos})")
            try:
                return self.nested()
            finally:
                self.depth -= 1
        return self.comparison()

    def nested(self) -> Predicate:
        if self.accept("keyword", "NOT"):
            inner = self.factor()
            return lambda it, ia: not inner(it, ia)
        self.expect("punct", "(", "'('")
        inner = self.expr()
        self.expect("punct", ")", "')'")
        return inner

    def comparison(self) -> Predicate:
        tok = self.peek()
        if tok.kind != "word":
            raise self.fail("a field name")
        self.take()
        name = tok.value.lower()
        get = _getter(name)
        negate = self.accept("keyword", "NOT")
        if self.accept("keyword", "IN"):
            listed = self.value_list()
            texts = frozenset(v for v in listed if isinstance(v, str))
            numbers = frozenset(v for v in listed if isinstance(v, float))
            if name in _MULTI:  # sets of text: the categories, the interaction types
                return lambda it, ia: negate != (not texts.isdisjoint(get(it, ia)))
            return lambda it, ia: negate != _any_in(get(it, ia), texts, numbers)
        if negate:
            raise self.fail("IN after NOT")
        op_tok = self.take()
        if op_tok.kind != "op":
            self.i -= 1
            raise self.fail("a comparison (=, !=, <, <=, >, >=) or IN")
        op = _COMPARE[op_tok.value]
        value = self.value()
        if name in _MULTI:
            return lambda it, ia: any(_safe(op, v, value) for v in get(it, ia))
        return lambda it, ia: _compare(op, get(it, ia), value)

    def value_list(self) -> list[Any]:
        self.expect("punct", "(", "'(' after IN")
        values = [self.value()]
        while self.accept("punct", ","):
            values.append(self.value())
        self.expect("punct", ")", "')' or ','")
        return values

    def value(self) -> Any:
        tok = self.take()
        if tok.kind not in ("string", "number"):
            self.i -= 1
            raise self.fail('a value ("text" or a number)')
        return tok.value


def _number(value: Any) -> float | None:
    """A JSON number as a float; booleans are not numbers, and an integer too large for a float is none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _safe(op: Callable[[Any, Any], bool], left: Any, right: Any) -> bool:
    """Comparisons across types (a missing price, text vs number, a map) are false, not errors."""
    if isinstance(right, str) and isinstance(left, str):
        return op(left, right)
    if isinstance(right, float) and (number := _number(left)) is not None:
        return op(number, right)
    return op is operator.ne


def _compare(op: Callable[[Any, Any], bool], left: Any, right: Any) -> bool:
    """An attribute against a value; a list-valued attribute compares entry by entry (any matches)."""
    if isinstance(left, list):
        return any(_safe(op, v, right) for v in left)
    return _safe(op, left, right)


def _any_in(value: Any, texts: Set[str], numbers: Set[float]) -> bool:
    """IN, typed: text among the listed texts, a number among the listed numbers, a list when any entry is."""
    if isinstance(value, str):
        return value in texts
    if isinstance(value, list):
        return any(_any_in(v, texts, numbers) for v in value if not isinstance(v, list))
    number = _number(value)
    return number is not None and number in numbers


def _getter(name: str) -> Callable[[ItemRecord, Set[str]], Any]:
    if name in ("category", "categories"):
        return lambda it, ia: it.categories
    if name in ("interaction", "interactions"):
        return lambda it, ia: ia
    if name in ("item_id", "title", "brand", "status", "price"):
        return lambda it, ia: getattr(it, name)
    key = name.removeprefix("attributes.")
    return lambda it, ia: it.attributes.get(key) if isinstance(it.attributes, dict) else None


@lru_cache(maxsize=1024)
def _parse_cached(text: str, field: str) -> Filter:
    include, predicate = _Parser(text, field).parse()
    return Filter(include, predicate, text)


def parse(text: str, field: str = "filters.expression") -> Filter:
    """Parse and validate; raises InvalidArgument naming `field`, the position and what was expected."""
    if len(text) > MAX_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_LENGTH} characters, got {len(text)}")
    return _parse_cached(text.strip(), field)
