"""`make bench-freshness`: from LogInteractions acknowledged to an answer that reflects it.

Against the running stack: per event, a user's answer is cached, the user purchases its
top item (any interaction makes the cached answer stale), then two clocks run from the acknowledgement:
- recommend: until Recommend (same request, so the cached entry unless invalidated) no
  longer shows the item;
- features: until the user's Feast online features list the item first among recent
  items (the stream worker's push).
Prints p50/p95/p99/max of both, writes reports/freshness-latest.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from core import tls
from core.config import ROOT, Settings
from feature_store.store import OnlineFeatures
from loadtest.stack import require_serving
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys.embedded import ensure_servers

POLL_S = 0.005
GIVE_UP_S = 5.0


def _until(check: Callable[[], bool], since: float) -> float | None:
    """Milliseconds from `since` (a perf_counter reading) until check() holds; None if it never does."""
    while time.perf_counter() - since < GIVE_UP_S:
        if check():
            return (time.perf_counter() - since) * 1000
        time.sleep(POLL_S)
    return None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    require_serving(settings.orchestrator_addr, settings)
    if not settings.database_url or not settings.redis_url:  # `make demo`'s embedded servers: they run already
        settings = ensure_servers(settings)
    online = OnlineFeatures(settings)
    rng = random.Random(7)
    results: dict[str, list[float]] = {"recommend": [], "features": []}
    missed = {"recommend": 0, "features": 0}
    with tls.channel(settings.orchestrator_addr, settings) as channel:
        api = pb_grpc.RecommenderStub(channel)
        for n in range(args.events):
            user = str(rng.randint(1, 943))
            req = pb.RecommendRequest(user_id=user, k=10, context=pb.Context(surface="freshness"))
            item = api.Recommend(req, timeout=5).items[0].item_id
            api.Recommend(req, timeout=5)  # the cached answer
            api.LogInteractions(pb.LogInteractionsRequest(interactions=[
                pb.Interaction(user_id=user, item_id=item, type=pb.PURCHASE)]), timeout=5)
            acked = time.perf_counter()
            checks: list[tuple[str, Callable[[], bool]]] = [
                ("recommend", lambda u=user, i=item, r=req: i not in [x.item_id for x in api.Recommend(r).items]),
                ("features", lambda u=user, i=item: online.user_features(u)["recent_item_ids"][:1] == [i]),
            ]
            for name, check in checks:
                took = _until(check, acked)
                if took is None:
                    missed[name] += 1
                else:
                    results[name].append(took)
            print(f"\r{n + 1}/{args.events} events", end="", file=sys.stderr)
    print(file=sys.stderr)
    rows = [
        {"path": name, "events": len(v) + missed[name], "missed": missed[name], "p50_ms": _pct(v, 0.5),
         "p95_ms": _pct(v, 0.95), "p99_ms": _pct(v, 0.99), "max_ms": max(v)}
        for name, v in results.items() if v
    ]
    header = f"{'path':<10} {'events':>6} {'missed':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    lines = [header] + [f"{r['path']:<10} {r['events']:>6} {r['missed']:>6} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f}"
                        f" {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f}" for r in rows]
    print("\n".join(lines))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "freshness-latest.json").write_text(json.dumps(rows, indent=2))
    (args.out_dir / "freshness-latest.md").write_text("```\n" + "\n".join(lines) + "\n```\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
