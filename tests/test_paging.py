"""Page tokens of the List RPCs (orchestrator/paging.py): what a client sends is either a token this API
gave or INVALID_ARGUMENT naming page_token, never another error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidArgument
from orchestrator import paging


@given(st.text(max_size=200))
def test_any_page_token_is_a_token_or_invalid_argument(value: str) -> None:
    try:
        paging.after(value, "items")
    except InvalidArgument as exc:
        assert exc.field == "page_token"


@given(st.text(min_size=1, max_size=128), st.sampled_from(["", "active", "retired"]))
def test_a_token_gives_back_its_id_under_its_own_filter_only(last_id: str, status: str) -> None:
    token = paging.token("items", last_id, status)
    assert paging.after(token, "items", status) == last_id
    with pytest.raises(InvalidArgument):
        paging.after(token, "users", status)
    with pytest.raises(InvalidArgument):
        paging.after(token, "items", status + "x")


@pytest.mark.parametrize(("value", "want"), [(0, 100), (1, 1), (1000, 1000)])
def test_page_size(value: int, want: int) -> None:
    assert paging.page_size(value) == want


@pytest.mark.parametrize("value", [-1, 1001])
def test_page_size_out_of_range(value: int) -> None:
    with pytest.raises(InvalidArgument, match="page_size"):
        paging.page_size(value)
