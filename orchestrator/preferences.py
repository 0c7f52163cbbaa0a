"""Onboarding preferences (User.preferences): the documented keys, checked on UpsertUser.

    preferred_categories   list of category names the user picked at onboarding, e.g.
                           ["Comedy", "Sci-Fi"]; a user with few interactions gets popular
                           and trending items of these categories ("which you picked")

Other keys are stored as given (free-form onboarding answers).
"""

from __future__ import annotations

from typing import Any

from core.errors import InvalidArgument
from core.validation import check_id

PREFERRED_CATEGORIES = "preferred_categories"
MAX_PREFERRED_CATEGORIES = 10  # each one is a Retrieve call per cold-start request
MAX_CATEGORY_LEN = 128  # as Item.categories


def check_preferences(preferences: dict[str, Any], field: str = "user.preferences") -> dict[str, Any]:
    """The preferences as given, after checking the documented keys; errors name the field."""
    cats = preferences.get(PREFERRED_CATEGORIES)
    if cats is None:
        return preferences
    name = f"{field}.{PREFERRED_CATEGORIES}"
    if not isinstance(cats, list):
        raise InvalidArgument(name, f"must be a list of category names, got {type(cats).__name__}")
    if len(cats) > MAX_PREFERRED_CATEGORIES:
        raise InvalidArgument(name, f"must hold at most {MAX_PREFERRED_CATEGORIES} categories, got {len(cats)}")
    for i, c in enumerate(cats):
        if not isinstance(c, str) or not c.strip():
            raise InvalidArgument(f"{name}[{i}]", f"must be a non-empty string, got {c!r}")
        check_id(f"{name}[{i}]", c, MAX_CATEGORY_LEN)
    if len(set(cats)) != len(cats):
        raise InvalidArgument(name, "must not name a category twice")
    return preferences


def preferred_categories(preferences: dict[str, Any] | None) -> list[str]:
    """The user's picked categories; tolerant of rows written before the key was checked."""
    cats = (preferences or {}).get(PREFERRED_CATEGORIES)
    if not isinstance(cats, list):
        return []
    out = [c for c in cats if isinstance(c, str) and c.strip()]
    return list(dict.fromkeys(out))[:MAX_PREFERRED_CATEGORIES]
