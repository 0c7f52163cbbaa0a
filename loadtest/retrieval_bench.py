"""Retrieve latency over gRPC from a sync client, one call at a time.

    .venv/bin/python -m loadtest.retrieval_bench [--addr HOST:PORT] [--calls 300] [--k 200]

Requests look like the orchestrator's: a MovieLens user's 50 most recent items and
demographics, their rated items excluded, k candidates from the service's default mix
(no sources named). Further rows name one source each. Prints a table.
"""

from __future__ import annotations

import argparse
import random
import time

import grpc

from core import tls
from core.config import Settings
from loadtest.bench import percentile
from protos import internal_pb2 as ipb
from protos import internal_pb2_grpc as ipb_grpc
from training import movielens

WARMUP = 20


def user_contexts(n: int, seed: int = 0) -> list[tuple[ipb.UserContext, list[str]]]:
    """(context, seen items) of n random MovieLens users, as the orchestrator hydrates them."""
    ds = movielens.load(movielens.fetch(Settings.from_env().data_dir))
    inter = ds.interactions.sort_values("ts", ascending=False)
    history = inter.groupby("user_id", sort=False)["item_id"].agg(list)
    demo = dict(zip(ds.users["user_id"], ds.users["demographics"], strict=True))
    rng = random.Random(seed)
    users = rng.choices(sorted(history.index), k=n)
    return [(ipb.UserContext(user_id=u, recent_item_ids=history[u][:50],
                            attributes={k: str(v) for k, v in demo.get(u, {}).items()}), history[u][:1000])
            for u in users]


def measure(stub: ipb_grpc.RetrievalStub, requests: list[ipb.RetrieveRequest]) -> tuple[list[float], int]:
    for r in requests[:WARMUP]:
        stub.Retrieve(r, timeout=5)
    latencies, errors = [], 0
    for r in requests:
        start = time.perf_counter()
        try:
            stub.Retrieve(r, timeout=5)
        except grpc.RpcError:
            errors += 1
            continue
        latencies.append((time.perf_counter() - start) * 1000)
    return sorted(latencies), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default=Settings.from_env().retrieval_addr)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--sources", default="", help="comma-separated extra rows, one source each")
    args = parser.parse_args()

    contexts = user_contexts(args.calls)
    scenarios: list[tuple[str, list[ipb.RetrieveRequest]]] = [
        ("default mix", [ipb.RetrieveRequest(user=u, k=args.k, exclude_item_ids=seen) for u, seen in contexts]),
    ]
    for name in filter(None, args.sources.split(",")):
        scenarios.append((name, [ipb.RetrieveRequest(user=u, k=args.k, exclude_item_ids=seen,
                                                    sources=[ipb.SourceRequest(name=name, k=args.k)])
                                 for u, seen in contexts]))
    print(f"Retrieve over gRPC, {args.addr}, sync client, {args.calls} calls each, k={args.k}")
    print(f"{'scenario':<16} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    with tls.channel(args.addr, Settings.from_env()) as channel:
        stub = ipb_grpc.RetrievalStub(channel)
        for name, requests in scenarios:
            lat, errors = measure(stub, requests)
            print(f"{name:<16} {percentile(lat, 50):8.2f} {percentile(lat, 95):8.2f} "
                  f"{percentile(lat, 99):8.2f} {lat[-1] if lat else 0:8.2f} {errors:7d}")


if __name__ == "__main__":
    main()
