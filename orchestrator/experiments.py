"""A/B experiments: definitions from the config file (orchestrator/config.py), deterministic
bucketing by hashing.

    [[experiment]]
    name = "ranker"
    salt = "2026-11"            # change it to reshuffle users
    surfaces = ["home"]         # empty or absent: every surface
    [[experiment.variant]]
    name = "control"
    share = 0.5
    params = { ranker = true }
    [[experiment.variant]]
    name = "no_ranker"
    share = 0.5
    params = { ranker = false, diversity = 0.3 }

A user's variant is a pure function of (salt, user id): stable across requests,
replicas and restarts. A request may force a variant by name. The variant's params
tune the pipeline (see orchestrator.recommend.PipelineParams).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidArgument

_SCALE = float(1 << 64)


@dataclass(frozen=True)
class Variant:
    name: str
    share: float
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    salt: str
    variants: tuple[Variant, ...]
    surfaces: tuple[str, ...] = ()

    def applies_to(self, surface: str) -> bool:
        return not self.surfaces or surface in self.surfaces

    def bucket(self, user_id: str) -> float:
        """A uniform number in [0, 1) from the user id and the salt."""
        digest = hashlib.blake2b(f"{self.salt}\x1f{user_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / _SCALE

    def assign(self, user_id: str) -> Variant:
        point, edge = self.bucket(user_id), 0.0
        for v in self.variants:
            edge += v.share
            if point < edge:
                return v
        return self.variants[-1]  # float rounding at the top edge

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


@dataclass(frozen=True)
class Assignment:
    label: str  # "experiment/variant", or "control" outside any experiment
    params: dict[str, Any]


DEFAULT = Assignment("control", {})


class Experiments:
    def __init__(self, experiments: list[Experiment]) -> None:
        self.experiments = experiments

    def assign(self, user_id: str, surface: str, forced: str = "") -> Assignment:
        """The first experiment running on this surface decides; `forced` names a variant
        ("variant" or "experiment/variant") and must exist."""
        for exp in self.experiments:
            if not exp.applies_to(surface):
                continue
            if forced:
                name = forced.split("/", 1)[1] if forced.startswith(f"{exp.name}/") else forced
                chosen = exp.variant(name)
                if chosen is None:
                    known = ", ".join(v.name for v in exp.variants)
                    raise InvalidArgument("experiment_variant", f"no variant {forced!r} in {exp.name!r}; use {known}")
            else:
                chosen = exp.assign(user_id)
            return Assignment(f"{exp.name}/{chosen.name}", chosen.params)
        if forced and forced != DEFAULT.label:
            raise InvalidArgument("experiment_variant", f"no experiment runs on surface {surface!r}")
        return DEFAULT


def parse(data: dict[str, Any], source: str = "experiments") -> list[Experiment]:
    out: list[Experiment] = []
    for i, raw in enumerate(data.get("experiment", [])):
        where = f"{source}: experiment[{i}]"
        name = raw.get("name")
        if not name or "/" in name:
            raise ValueError(f"{where}.name: must be a non-empty name without '/'")
        variants = tuple(
            Variant(str(v["name"]), float(v["share"]), dict(v.get("params", {}))) for v in raw.get("variant", [])
        )
        if len(variants) < 2:
            raise ValueError(f"{where}.variant: needs at least two variants")
        if len({v.name for v in variants}) != len(variants):
            raise ValueError(f"{where}.variant: variant names must be unique")
        if any(v.share < 0 for v in variants) or abs(sum(v.share for v in variants) - 1.0) > 1e-6:
            raise ValueError(f"{where}.variant: shares must be >= 0 and add up to 1")
        out.append(Experiment(name, str(raw.get("salt", name)), variants, tuple(raw.get("surfaces", ()))))
    return out
