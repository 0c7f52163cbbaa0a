"""The orchestrator's configuration file: per-surface pipeline defaults and A/B experiments.

    # config/recsys.toml
    [surface.default]
    seen_types = ["view", "click", "add_to_cart", "purchase", "rating", "like"]
    [surface.home]
    mmr_lambda = 0.8
    max_per_category = 4
    [surface.cart]
    seen_types = ["purchase"]          # what counts as "already seen" here
    promoted = ["sku-1"]
    promotion_boost = 0.2
    [[surface.home.sources]]             # replaces the default list (orchestrator/sources.py)
    name = "two_tower"
    k = 200
    gate = "history"
    timeout_ms = 80
    [[experiment]]                       # see orchestrator/experiments.py
    ...

Precedence for one request: built-in defaults < [surface.default] < [surface.<name>] <
the user's experiment variant params < the request's own options.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core.config import ROOT
from orchestrator import experiments, registry
from orchestrator.source_config import DEFAULT_SOURCES, CandidateSource, parse_sources
from storage.records import INTERACTION_TYPES

_NUMBERS = {"mmr_lambda": (0.0, 1.0), "promotion_boost": (0.0, 10.0), "reserved_share": (0.0, 1.0)}
_COUNTS = {"max_per_category": 500, "max_per_price_band": 500}


@dataclass(frozen=True)
class PipelineParams:
    seen_types: frozenset[str] = frozenset(INTERACTION_TYPES)
    ranker: bool = True  # False: serve retrieval order (an A/B arm, or ranking switched off)
    mmr_lambda: float = 1.0
    max_per_category: int = 0
    max_per_price_band: int = 0
    promoted: frozenset[str] = frozenset()
    promotion_boost: float = 0.0
    reserved_share: float = 0.0
    # candidate sources (orchestrator/source_config.py): gated, each with its own timeout
    sources: tuple[CandidateSource, ...] = DEFAULT_SOURCES
    cold_start_interactions: int = 5  # fewer: the cold gates open (segment popular, preferred categories)
    # settings that registered components declare (orchestrator/registry.py), e.g. exclude_brands
    extra: tuple[tuple[str, Any], ...] = ()

    def setting(self, name: str) -> Any:
        """A component's setting on this surface, or its declared default."""
        for key, value in self.extra:
            if key == name:
                return value
        return registry.component_settings()[name].default

    def updated(self, values: dict[str, Any], where: str) -> PipelineParams:
        known = {f.name: f for f in fields(self) if f.name != "extra"}
        declared = registry.component_settings()
        changes: dict[str, Any] = {}
        extra = dict(self.extra)
        for key, value in values.items():
            if key in declared:
                extra[key] = declared[key].parse(value, f"{where}.{key}")
                continue
            if key not in known:
                names = ", ".join([*known, *declared])
                raise ValueError(f"{where}: unknown setting {key!r}; known: {names}")
            if key in ("seen_types", "promoted"):
                if not isinstance(value, list | tuple | set | frozenset) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{where}.{key}: must be a list of strings, got {value!r}")
                value = frozenset(value)
                if key == "seen_types" and not value <= set(INTERACTION_TYPES):
                    raise ValueError(f"{where}.seen_types: unknown types {sorted(value - set(INTERACTION_TYPES))}")
            elif key == "sources":
                value = parse_sources(value, f"{where}.sources", registry.LOCAL_SOURCES)
            elif key == "ranker" and not isinstance(value, bool):
                raise ValueError(f"{where}.ranker: must be true or false, got {value!r}")
            elif key in _NUMBERS:
                lo, hi = _NUMBERS[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
                    raise ValueError(f"{where}.{key}: must be a number from {lo:g} to {hi:g}, got {value!r}")
                value = float(value)
            elif key in _COUNTS and (isinstance(value, bool) or not isinstance(value, int)
                                     or not 0 <= value <= _COUNTS[key]):
                raise ValueError(f"{where}.{key}: must be an integer from 0 to {_COUNTS[key]}, got {value!r}")
            elif key == "cold_start_interactions" and (
                    not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000):
                raise ValueError(f"{where}.cold_start_interactions: must be an integer from 0 to 1000, got {value!r}")
            changes[key] = value
        if extra != dict(self.extra):
            changes["extra"] = tuple(sorted(extra.items()))
        return replace(self, **changes)


@dataclass(frozen=True)
class OrchestratorConfig:
    surfaces: dict[str, PipelineParams] = field(default_factory=dict)
    experiments: experiments.Experiments = field(default_factory=lambda: experiments.Experiments([]))

    def surface(self, name: str) -> PipelineParams:
        return self.surfaces.get(name) or self.surfaces.get("default") or PipelineParams()


SECTIONS = ("surface", "experiment")
DEFAULT_PATH = ROOT / "config" / "recsys.toml"  # optional: absent, every surface uses the defaults


def parse(data: dict[str, Any], source: str = "config") -> OrchestratorConfig:
    unknown = [key for key in data if key not in SECTIONS]
    if unknown:
        raise ValueError(f"{source}: unknown section {unknown[0]!r}; the file holds [surface.<name>] tables "
                         "and [[experiment]] entries")
    raw_surfaces = data.get("surface", {})
    if not isinstance(raw_surfaces, dict) or not all(isinstance(v, dict) for v in raw_surfaces.values()):
        raise ValueError(f"{source}: surface: each surface is a table, [surface.<name>]")
    base = PipelineParams().updated(raw_surfaces.get("default", {}), f"{source}: surface.default")
    surfaces = {"default": base}
    for name, values in raw_surfaces.items():
        if name != "default":
            surfaces[name] = base.updated(values, f"{source}: surface.{name}")
    exps = experiments.parse(data, source)
    for exp in exps:  # variant params are pipeline settings: reject unknown ones at load, not per request
        for v in exp.variants:
            base.updated(v.params, f"{source}: experiment {exp.name!r} variant {v.name!r} params")
            if "sources" in v.params:  # parsed once here, not per request
                v.params["sources"] = parse_sources(v.params["sources"], "", registry.LOCAL_SOURCES)
    return OrchestratorConfig(surfaces, experiments.Experiments(exps))


def load(path: Path | None) -> OrchestratorConfig:
    """The configuration in `path`: ValueError naming the file (and the key) when it cannot serve. The
    default file may be absent (all defaults); another one named (RECSYS_CONFIG) must be there."""
    if path is None or (not path.exists() and Path(path).absolute() == DEFAULT_PATH):
        return OrchestratorConfig()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, str(path))
