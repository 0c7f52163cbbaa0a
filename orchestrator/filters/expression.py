"""expression: the request's filter expression (orchestrator/filter_expr.py), which may look at the
user's interaction types per item; parsed once by the validation layer."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.pipeline import Candidate, Filter
from orchestrator.query import RequestQuery


class Expression(Filter):
    name = "expression"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.expression is not None else "no expression"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        expression, types, none = q.expression, q.types_by_item, frozenset()
        assert expression is not None
        return lambda c: expression.keep(c.item, types.get(c.item_id, none))
