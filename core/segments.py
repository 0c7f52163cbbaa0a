"""User segments and what is popular in each: the cold-start answer for a user who has
demographics but no history ("popular with people like you").

A segment is one demographic value, written "key:value": "age:25-34", "gender:f",
"occupation:student", "location:paris", "zip:9" (the first digit of a US zip code).
An item's score in a segment is its weighted interaction count there, times the square
root of its lift (its share of the segment's interactions over its share of all), so
a segment's list leans to what that segment likes more than everyone does, without
handing the top to niche items.

    <version>/segments.json  {"segments": {"gender:f": [[item_id, score], ...], ...}, "config": {...}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE = "segments.json"
KEYS = ("age", "gender", "occupation", "location", "zip")
# (lower bound, label): MovieLens's age groups
AGE_BANDS = ((0, "under-18"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-49"), (50, "50-55"), (56, "56+"))


@dataclass
class SegmentConfig:
    top_n: int = 500  # items kept per segment
    min_count: float = 3.0  # weighted interactions an item needs in a segment to be listed
    min_users: int = 10  # smaller segments are left out: too few to say what they like


def age_band(value: Any) -> str | None:
    try:
        age = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
        return None
    if age < 0 or age != age:
        return None
    return [label for low, label in AGE_BANDS if age >= low][-1]


def _clean(value: Any) -> str:
    return "" if value is None else str(value).strip().lower()


def segment_tokens(demographics: Mapping[str, Any]) -> list[str]:
    """The segments a user with these demographics belongs to, e.g. ["age:25-34", "gender:m"]."""
    out = []
    if (band := age_band(demographics.get("age"))) is not None:
        out.append(f"age:{band}")
    for key in ("gender", "occupation", "location"):
        if value := _clean(demographics.get(key)):
            out.append(f"{key}:{value}")
    zip_code = _clean(demographics.get("zip_code") or demographics.get("zip"))
    if zip_code[:1].isdigit():
        out.append(f"zip:{zip_code[0]}")
    return out


def parse_segment(text: str) -> str:
    """A request's segment in canonical form ("Age:30" -> "age:25-34"); ValueError says what is wrong."""
    key, sep, value = text.partition(":")
    key, value = key.strip().lower(), value.strip().lower()
    if not sep or not value or key not in KEYS:
        raise ValueError(f"must be key:value with key one of {', '.join(KEYS)} (e.g. \"age:25-34\"), got {text!r}")
    if key == "age":
        if value in {label for _, label in AGE_BANDS}:
            return f"age:{value}"
        band = age_band(value)
        if band is None:
            labels = ", ".join(label for _, label in AGE_BANDS)
            raise ValueError(f"age must be a number or one of {labels}, got {value!r}")
        return f"age:{band}"
    return f"{key}:{value[:1] if key == 'zip' else value}"


@dataclass
class SegmentPopularity:
    segments: dict[str, list[tuple[str, float]]]  # segment -> (item id, score), best first
    config: SegmentConfig = field(default_factory=SegmentConfig)

    def top(self, segment: str, k: int) -> list[tuple[str, float]]:
        return self.segments.get(segment, [])[:k]

    def scores(self, user_segments: list[str]) -> dict[str, float]:
        """Each of the user's segments' lists scaled to its best = 1, summed: item id -> score."""
        total: dict[str, float] = {}
        for seg in user_segments:
            top = self.segments.get(seg, [])
            if top:
                best = top[0][1] or 1.0
                for item_id, score in top:
                    total[item_id] = total.get(item_id, 0.0) + score / best
        return total

    def save(self, version_dir: Path) -> None:
        body = {"config": asdict(self.config), "segments": {s: [[i, round(x, 6)] for i, x in items]
                                                            for s, items in self.segments.items()}}
        (Path(version_dir) / FILE).write_text(json.dumps(body))


def load(version_dir: Path) -> SegmentPopularity | None:
    path = Path(version_dir) / FILE
    if not path.exists():
        return None
    body = json.loads(path.read_text())
    return SegmentPopularity({s: [(str(i), float(x)) for i, x in items] for s, items in body["segments"].items()},
                             SegmentConfig(**body["config"]))
