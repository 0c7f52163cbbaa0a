"""exclude_brands: a surface never shows items of these brands (a shop's own-brand page, a
competitor's products on a partner surface).

    [surface.partner]
    exclude_brands = ["acme", "globex"]
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.pipeline import Candidate, Filter, Setting, string_set
from orchestrator.query import RequestQuery


class ExcludeBrands(Filter):
    name = "exclude_brands"
    settings = (Setting("exclude_brands", frozenset(), string_set),)

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.params.setting("exclude_brands") else "no brands excluded on this surface"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        brands = q.params.setting("exclude_brands")
        return lambda c: c.item.brand not in brands
