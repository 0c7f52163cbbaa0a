"""The retrieval sources in one place: their names, what each takes, how a request naming one is
checked, and the default mix. The retrieval service (core/retrieve.py: what a Retrieve call may
name) and the orchestrator's configuration (orchestrator/source_config.py: what a surface may
list, and its default list) both read it, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.segments import parse_segment

WINDOWS = ("1h", "24h", "7d")  # trending windows; "" = all time
MAX_K = 1000


@dataclass(frozen=True)
class SourceKind:
    name: str
    takes: frozenset[str] = frozenset()  # request parameters it reads besides k: window, category, segment
    needs_item: bool = False  # only with an anchor item (RetrieveRequest.item_id): not for Recommend
    help: str = ""


KINDS: dict[str, SourceKind] = {k.name: k for k in (
    SourceKind("two_tower", help="nearest items to the user-tower vector (recent items + demographics)"),
    SourceKind("popular", help="all-time most popular"),
    SourceKind("similar_items", needs_item=True, help="embedding neighbours of the anchor item"),
    SourceKind("also_bought", help="co-visitation neighbours of the anchor, or of the user's recent items"),
    SourceKind("content", help="TF-IDF neighbours of the anchor, or of the user's recent items"),
    SourceKind("trending", frozenset({"window", "category", "segment"}),
               help="time-decayed counts in a window, optionally in a category and/or segment"),
    SourceKind("segment_popular", frozenset({"segment"}), help="popular in a segment, or in the user's segments"),
)}
NAMES = tuple(KINDS)
USER_SOURCES = tuple(n for n, k in KINDS.items() if not k.needs_item)  # what a Recommend surface may list


class SourceError(ValueError):
    """A source request that breaks a rule: `key` is the parameter (name, k, window, category, segment, item_id)."""

    def __init__(self, key: str, rule: str) -> None:
        super().__init__(f"{key}: {rule}")
        self.key = key
        self.rule = rule


def check(name: str, k: int, window: str = "", category: str = "", segment: str = "",
          has_item: bool = True) -> str:
    """Check one source request; returns the segment in canonical form. Raises SourceError."""
    kind = KINDS.get(name)
    if kind is None:
        raise SourceError("name", f"unknown source {name!r}; known: {', '.join(NAMES)}")
    if not 1 <= k <= MAX_K:
        raise SourceError("k", f"must be between 1 and {MAX_K}, got {k}")
    if kind.needs_item and not has_item:
        raise SourceError("item_id", f"must name the anchor item for the {name} source")
    for key, value in (("window", window), ("category", category), ("segment", segment)):
        if value and key not in kind.takes:
            takers = [n for n, kk in KINDS.items() if key in kk.takes]
            raise SourceError(key, f"only the {' and '.join(takers)} source{'s' if len(takers) > 1 else ''} "
                                   f"take{'' if len(takers) > 1 else 's'} a {key}")
    if window and window not in WINDOWS:
        raise SourceError("window", f"must be one of {', '.join(WINDOWS)} or empty, got {window!r}")
    if segment:
        try:
            return parse_segment(segment)
        except ValueError as exc:
            raise SourceError("segment", str(exc)) from None
    return segment


@dataclass(frozen=True)
class MixEntry:
    """One source of a default mix: k // divisor of the request's k (at least 1)."""

    name: str
    divisor: int = 1
    window: str = ""

    def k(self, total: int) -> int:
        return max(1, total // self.divisor)


# The sources when a request names none (the retrieval service's default, which the learned ranker is
# trained on); a Recommend surface's default sources for a user with history are the same, in this order.
HISTORY_MIX = (MixEntry("two_tower"), MixEntry("also_bought", 4), MixEntry("content", 10),
               MixEntry("trending", 20, "7d"))
SEGMENT_MIX = (MixEntry("segment_popular"), MixEntry("two_tower", 4), MixEntry("trending", 10, "7d"))
ANONYMOUS_MIX = (MixEntry("popular"),)
