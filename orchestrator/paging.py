"""Page tokens of the List RPCs (ListItems, ListUsers): opaque to callers, they hold the last id of the
page and the filter it was listed under, so the next page starts after that id (keyset paging: no
offset scan, and rows added or removed meanwhile neither repeat nor skip the others)."""

from __future__ import annotations

import base64
import binascii
import json

from core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(value: int) -> int:
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 1 to {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE}), got {value}")
    return value


def token(kind: str, last_id: str, scope: str = "") -> str:
    raw = json.dumps([kind, scope, last_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def after(page_token: str, kind: str, scope: str = "") -> str:
    """The id the page starts after ("" for the first page); INVALID_ARGUMENT for a token this RPC did not
    give, or one given under another filter."""
    if not page_token:
        return ""
    try:
        raw = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4))
        got_kind, got_scope, last_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidArgument("page_token", "is not a token this API gave (pass next_page_token as it came)") from None
    if got_kind != kind or not isinstance(last_id, str):
        raise InvalidArgument("page_token", f"was given by another list, not this one ({kind})")
    if got_scope != scope:
        raise InvalidArgument("page_token", f"was given for another filter ({got_scope or 'none'}); keep the "
                                            "filter across pages")
    return last_id
