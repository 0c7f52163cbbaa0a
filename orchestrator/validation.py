"""Request validation: every rule names the field it checks."""

from __future__ import annotations

import math

from recsys.errors import InvalidArgument
from storage.records import MAX_ID_LEN

MAX_K = 500
DEFAULT_K = 10
MAX_BATCH = 1000


def check_id(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MAX_ID_LEN:
        raise InvalidArgument(field, f"must be at most {MAX_ID_LEN} characters, got {len(value)}")
    return value


def check_k(value: int, field: str = "k") -> int:
    """0 means unset (proto3 default) and gives DEFAULT_K; otherwise 1..MAX_K."""
    if value == 0:
        return DEFAULT_K
    if not 1 <= value <= MAX_K:
        raise InvalidArgument(field, f"must be between 1 and {MAX_K}, got {value}")
    return value


def check_batch(field: str, n: int) -> None:
    if not 1 <= n <= MAX_BATCH:
        raise InvalidArgument(field, f"must hold 1 to {MAX_BATCH} entries, got {n}")


def check_finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, f"must be a finite number, got {value}")
    return value
