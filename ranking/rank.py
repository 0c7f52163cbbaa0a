"""The ranking logic behind the Ranking service, in plain Python: validate the request, then
keep a newcomer's order, or score with the learned ranker, or with the weighted scorer.

The learned ranker of the model version the request names (the one retrieval answered
with), or of the current version when ranking no longer or not yet holds that one
(ranking/ranker.py), scores the candidates; when the version has none, or it fails on a
request, the weighted scorer does (ranking/scorer.py), so ranking keeps answering. A user
with no history at all keeps the caller's order (the segments' popularity leads it): the
ranker learned from users with history, and for newcomers it ranked worse than that
order (docs/quality.md, cold-users protocol). RankResponse.model_version says which one
scored. The service (ranking/service.py) and the offline evaluation call `Ranking.rank`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from core.errors import InvalidArgument
from core.interleave import order_scores
from core.validation import (
    MAX_NAME_LEN,
    check_all_finite,
    check_ids,
    check_name,
    check_string_map,
    check_user_context,
)
from protos import internal_pb2 as ipb
from ranking.ranker import RankerSlot
from ranking.scorer import WeightedScorer, category_profile

log = logging.getLogger(__name__)

MAX_CANDIDATES = 2000
MAX_CONTEXT_ATTRIBUTES = 64  # as the public API's Context (orchestrator/validation.py)
MAX_CONTEXT_VALUE_LEN = 1024
RECENT_LIMIT = 50  # recent items read from the request and Feast together
NEWCOMER_ORDER = "retrieval-order"  # model_version of an answer for a user with no history: the caller's order


class UserFeatures(Protocol):
    """The one read of the online store ranking makes (feature_store.store.OnlineFeatures)."""

    def user_features(self, user_id: str) -> Mapping[str, Any]: ...


class ItemFeatures(Protocol):
    """Every item's features in memory (ranking.item_features.ItemFeatureCache)."""

    features: Mapping[str, Mapping[str, Any]]
    max_popularity: int

    def get(self, item_id: str) -> Mapping[str, Any]: ...


def check_request(request: ipb.RankRequest) -> None:
    """Every field, as the public API checks its own (core.validation); candidates' counts are checked by rank()."""
    cands = request.candidates
    n = len(cands.item_ids)
    check_name("request_id", request.request_id)
    check_user_context(request.user)
    check_ids("candidates.item_ids", cands.item_ids, MAX_CANDIDATES)
    check_all_finite("candidates.scores", cands.scores)
    for name, values in (("sources", cands.sources), ("anchor_item_ids", cands.anchor_item_ids)):
        if len(values) not in (0, n):
            raise InvalidArgument(f"candidates.{name}", f"must be empty or have one entry per item id ({n}), "
                                                         f"got {len(values)}")
        check_ids(f"candidates.{name}", values, MAX_CANDIDATES, allow_empty=True)
    check_name("context.surface", request.context.surface)
    check_string_map("context.attributes", request.context.attributes, MAX_CONTEXT_ATTRIBUTES,
                     MAX_CONTEXT_VALUE_LEN)
    check_name("model_version", request.model_version, MAX_NAME_LEN)


class Ranking:
    def __init__(self, online: UserFeatures, items: ItemFeatures, scorer: WeightedScorer | None = None,
                 learned: RankerSlot | None = None) -> None:
        self.online = online
        self.items = items
        self.scorer = scorer or WeightedScorer()
        self.learned = learned or RankerSlot()

    def rank(self, request: ipb.RankRequest, check: bool = True) -> ipb.RankResponse:
        """Rescored candidates, best first; InvalidArgument names the field that is wrong. check=False: every
        field but the counts taken as valid (a request this process built, core/in_process.py)."""
        cands = request.candidates
        item_ids = list(cands.item_ids)
        n = len(item_ids)
        if not 1 <= n <= MAX_CANDIDATES:
            raise InvalidArgument("candidates", f"must hold 1 to {MAX_CANDIDATES} candidates, got {n}")
        if (got := len(cands.scores)) != n:
            raise InvalidArgument("candidates.scores", f"must have one score per item id ({n}), got {got}")
        if check:
            check_request(request)
        recent = list(request.user.recent_item_ids)[:RECENT_LIMIT]
        times = list(request.user.recent_timestamps)[:RECENT_LIMIT]
        if len(times) != len(recent):
            times = []
        if not recent and request.user.user_id:
            # A caller without the history (the orchestrator sends it from PostgreSQL, fresher than any
            # materialized copy): the user's recent items from Feast, without times.
            recent = list(self.online.user_features(request.user.user_id).get("recent_item_ids") or [])[:RECENT_LIMIT]
        if not recent:  # scored as the orchestrator scores an unranked order (its selection sorts by score);
            # the sources' own scores, which do not compare across sources, stay as the "retrieval" part
            return ipb.RankResponse(order=list(range(n)), scores=order_scores(n),
                                   score_part_names=["retrieval"], score_parts=list(cands.scores),
                                   model_version=NEWCOMER_ORDER)
        ranker = self.learned.for_version(request.model_version)  # one version for the whole request
        if ranker is not None:
            try:
                sources = list(cands.sources) if len(cands.sources) == n else None
                ranked = ranker.rank(request.user.user_id, recent, item_ids, list(cands.scores), sources,
                                     dict(request.user.attributes), recent_timestamps=times or None)
                order = np.argsort(-ranked.scores, kind="stable")
                return ipb.RankResponse(
                    order=order.tolist(), scores=ranked.scores[order].tolist(), score_part_names=ranked.part_names,
                    score_parts=ranked.parts[order].ravel().tolist(), model_version=ranker.model_version,
                )
            except Exception:  # the weighted scorer still gives a sound order
                log.exception("learned ranker %s failed; weighted scorer instead", ranker.model_version)
        profile = category_profile(recent, self.items.features)
        feats = [self.items.get(i) for i in item_ids]
        scored = self.scorer.score(list(cands.scores), feats, profile, self.items.max_popularity)
        return ipb.RankResponse(
            order=[s.index for s in scored],
            scores=[s.score for s in scored],
            score_part_names=list(scored[0].parts),
            score_parts=[v for s in scored for v in s.parts.values()],
            model_version=self.scorer.version,
        )
