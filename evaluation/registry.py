"""Every model family the harness knows, by the name used on the command line."""

from __future__ import annotations

from evaluation.baselines import FAMILIES as BASELINES
from evaluation.models import FAMILIES as OWN_MODELS
from evaluation.protocol import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (*BASELINES, *OWN_MODELS)}


def select(names: list[str] | None) -> list[Family]:
    """The named families in the order given (all of them when None); unknown names are an error."""
    if not names:
        return list(FAMILIES.values())
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown model {', '.join(map(repr, unknown))}; known: {', '.join(FAMILIES)}")
    return [FAMILIES[n] for n in names]
