"""`make bench-scale`: the FAISS index at catalogue scale, and Retrieve over gRPC at 1M items.

    .venv/bin/python -m loadtest.scale_bench [--parts index,movielens,rpc] [--sizes 1000000,10000000]

- index: per size, synthetic item vectors and user query vectors (training.synthetic), the
  exact top 100 of each query (brute force), then core.index.build_index's choice for
  that size: build seconds, index memory, recall@100 against exact, and single-query
  latency (k=100, one thread, wall clock).
- movielens: are the synthetic vectors as hard as real ones? The two-tower model trained on
  MovieLens-100K (in process), its item vectors and its user tower's vectors of every user,
  against a same-sized sample of the synthetic vectors: spread, neighbourhood statistics, and
  the recall of the same IVF settings on both.
- rpc: a 1M-item model version (synthetic item vectors; a user tower that pools the
  history's item vectors), the retrieval service started on it (`recsys serve retrieval`),
  and Retrieve latency from a sync client: two_tower k=200, the default source mix, a health
  check for the gRPC floor; plus the same user tower + search in this process.

Everything runs with one torch/faiss thread. Prints tables and writes reports/scale-latest.{json,md}.
The 10M size needs ~6 GB of memory and ~8 minutes (vectors, exact search, build).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from core.config import ROOT, Settings  # noqa: E402
from core.index import IndexSpec, apply_params, build_index, pq_m_for, read_index, write_index  # noqa: E402
from loadtest.bench import machine, percentile  # noqa: E402
from training import synthetic  # noqa: E402

K = 100
WARMUP = 50


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _latencies(fn: Any, inputs: list[Any], calls: int, cpu: list[float] | None = None) -> list[float]:
    """Wall milliseconds per call of fn(input), sorted, cycling through inputs, after a warm-up.

    cpu, when given, receives this thread's CPU milliseconds per call (sorted): unlike wall time
    it leaves out the time other processes held the core, so it shows what a quiet machine would.
    """
    for i in range(min(WARMUP, calls)):
        fn(inputs[i % len(inputs)])
    out = []
    for i in range(calls):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn(inputs[i % len(inputs)])
        out.append((time.perf_counter() - start) * 1000)
        if cpu is not None:
            cpu.append((time.thread_time() - start_cpu) * 1000)
    if cpu is not None:
        cpu.sort()
    return sorted(out)


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row of `exact` that the same row of `found` holds."""
    k = exact.shape[1]
    return float(np.mean([len(np.intersect1d(f[:k], e)) / k for f, e in zip(found, exact, strict=True)]))


# -------------------------------------------------------------------------------- index


@dataclass
class IndexRow:
    items: int
    index: str
    held: str  # "as built" (in the building process) or "from file" (read back, as the retrieval service holds it)
    settings: str
    build_s: float
    index_mb: float
    recall_at_100: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_p50_ms: float  # this thread's CPU time per query: the latency without other processes in the way
    cpu_p99_ms: float
    load: str  # 1-minute load average before the build / after the latency run


def synthetic_set(n: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item vectors, their cluster labels, query vectors)."""
    items, labels = synthetic.item_vectors(n, seed=seed)
    queries = synthetic.user_vectors(items, synthetic.user_histories(labels, n_queries, seed=seed + 1),
                                     seed=seed + 2)
    return items, labels, queries


def parse_settings(text: str) -> list[dict[str, int]]:
    """"448/16/32,384/12" -> search settings to time beside the built ones: nprobe/k_factor[/quantizer_nprobe]."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        values = [int(v) for v in item.split("/")]
        if not 2 <= len(values) <= 3:
            raise ValueError(f"--settings: {item!r} must be nprobe/k_factor or nprobe/k_factor/quantizer_nprobe")
        out.append(dict(zip(("nprobe", "k_factor", "quantizer_nprobe"), values, strict=False)))
    return out


def bench_index(
    n: int, n_queries: int, calls: int, seed: int, spec: IndexSpec | None = None,
    more_settings: list[dict[str, int]] | None = None,
) -> list[IndexRow]:
    """The index chosen for n items (or `spec`) as built, then once per entry of more_settings."""
    t0 = time.perf_counter()
    items, _, queries = synthetic_set(n, n_queries, seed)
    print(f"  {n:,} vectors in {time.perf_counter() - t0:.0f} s; exact top {K} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    _, exact = faiss.knn(queries, items, K, metric=faiss.METRIC_INNER_PRODUCT)
    print(f"  exact search {time.perf_counter() - t0:.0f} s; building ...", file=sys.stderr, flush=True)
    load_before = _load()
    index, params = build_index(items, spec=spec)
    del items
    rows = [_time_index(index, params, "as built", queries, exact, calls, load_before)]
    # The retrieval service reads the index from its file: time that too (the lists are laid out anew).
    with tempfile.TemporaryDirectory() as tmp:
        write_index(index, Path(tmp) / "index.faiss")
        del index
        index = read_index(Path(tmp) / "index.faiss", params)
    for extra in [{}, *(more_settings or [])]:
        if "quantizer_nprobe" not in params:  # a one-level index has no quantizer to set
            extra = {k: v for k, v in extra.items() if k != "quantizer_nprobe"}
        rows.append(_time_index(index, {**params, **extra}, "from file", queries, exact, calls, _load()))
    return rows


def _time_index(
    index: faiss.Index, params: dict[str, Any], held: str, queries: np.ndarray, exact: np.ndarray, calls: int,
    load_before: float,
) -> IndexRow:
    apply_params(index, params)
    _, found = index.search(queries, K)
    cpu: list[float] = []
    lat = _latencies(lambda q: index.search(q.reshape(1, -1), K), list(queries), calls, cpu)
    settings = ", ".join(f"{k} {params[k]}" for k in ("nprobe", "k_factor", "quantizer_nprobe") if k in params)
    return IndexRow(
        items=index.ntotal, index=params["factory"], held=held, settings=settings or "exact",
        build_s=params["build_seconds"], index_mb=round(params["bytes"] / 2**20, 1),
        recall_at_100=round(recall_at(found, exact), 4), p50_ms=round(percentile(lat, 50), 3),
        p95_ms=round(percentile(lat, 95), 3), p99_ms=round(percentile(lat, 99), 3),
        cpu_p50_ms=round(percentile(cpu, 50), 3), cpu_p99_ms=round(percentile(cpu, 99), 3),
        load=f"{load_before} / {_load()}",
    )


# ---------------------------------------------------------------------------- movielens


@dataclass
class HardnessRow:
    vectors: str
    items: int
    queries: int
    mean_norm: float  # |mean item vector|: how far the items share one direction
    effective_rank: float  # exp(entropy of the centred spectrum), of 64
    top1_ip: float  # median best inner product of a query
    lid: float  # median local intrinsic dimensionality of a query's 100-neighbourhood (MLE)
    ivf_recall: list[float] = field(default_factory=list)  # recall@100, IVF32,Flat at nprobe 1, 2, 4
    ivf_pq_recall: float = 0.0  # recall@100 of IVF32,PQ64x4fs,RFlat at nprobe 3 (1M's 96/1024), k_factor 4


IVF_PROBES = (1, 2, 4)


def hardness(name: str, items: np.ndarray, queries: np.ndarray) -> HardnessRow:
    mean = items.mean(axis=0)
    s = np.linalg.svd(items - mean, compute_uv=False) ** 2
    p = s / s.sum()
    scores, exact = faiss.knn(queries, items, K, metric=faiss.METRIC_INNER_PRODUCT)
    dist = np.sqrt(np.maximum(2 - 2 * scores, 1e-12))  # unit vectors: euclidean from inner product
    lid = -1 / np.mean(np.log(dist[:, :-1] / dist[:, -1:]), axis=1)
    ivf = faiss.index_factory(items.shape[1], "IVF32,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(items)
    ivf.add(items)
    recalls = []
    for nprobe in IVF_PROBES:
        ivf.nprobe = nprobe
        recalls.append(round(recall_at(ivf.search(queries, K)[1], exact), 3))
    spec = IndexSpec("ivf_pq", nlist=32, nprobe=3, pq_m=pq_m_for(items.shape[1]), k_factor=4, train_per_list=10_000)
    pq, _ = build_index(items, spec=spec)
    return HardnessRow(
        vectors=name, items=len(items), queries=len(queries), mean_norm=round(float(np.linalg.norm(mean)), 3),
        effective_rank=round(float(np.exp(-(p * np.log(p)).sum())), 1),
        top1_ip=round(float(np.median(scores[:, 0])), 3),
        lid=round(float(np.median(lid)), 1), ivf_recall=recalls,
        ivf_pq_recall=round(recall_at(pq.search(queries, K)[1], exact), 3),
    )


def movielens_vectors(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(item vectors, one user-tower vector per user from their latest 50 items) of a model trained here."""
    from core.artifacts import load_current
    from training import movielens
    from training.pipeline import train_and_export

    dataset = movielens.load(movielens.fetch(data_dir))
    with tempfile.TemporaryDirectory(prefix="scale-bench-ml-") as tmp:
        train_and_export(dataset, Path(tmp))
        arts = load_current(Path(tmp))
    demographics = dict(zip(dataset.users["user_id"], dataset.users["demographics"], strict=True))
    queries = []
    for user_id, rows in dataset.interactions.sort_values("ts", kind="stable").groupby("user_id"):
        recent = list(rows["item_id"])[::-1][:50]
        attrs = {k: str(v) for k, v in demographics.get(user_id, {}).items()}
        q = arts.user_encoder.encode(recent, attrs)
        if q is not None:
            queries.append(q)
    return np.ascontiguousarray(arts.item_embeddings, dtype=np.float32), np.stack(queries).astype(np.float32)


def bench_movielens(data_dir: Path, seed: int) -> list[HardnessRow]:
    ml_items, ml_queries = movielens_vectors(data_dir)
    items, _, queries = synthetic_set(1_000_000, len(ml_queries), seed)
    sample = np.sort(np.random.default_rng(seed).choice(len(items), len(ml_items), replace=False))
    return [hardness("MovieLens two-tower", ml_items, ml_queries),
            hardness("synthetic (sample of 1M)", np.ascontiguousarray(items[sample]), queries)]


# ---------------------------------------------------------------------------------- rpc


@dataclass
class RpcRow:
    scenario: str
    calls: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    load: str


def write_version(artifacts_dir: Path, vectors: np.ndarray, index: faiss.Index, params: dict[str, Any]) -> Path:
    """A model version the retrieval service loads, over synthetic item vectors (ids i0, i1, ...).

    The user tower pools the history's item vectors (most recent weighted most) and passes
    the result through unchanged: its MLP is set to the identity (GELU(x) - GELU(-x) = x), so
    a user's vector is a realistic mixture of item vectors. The item tower is untrained: it
    only matters for items added live, which this benchmark does not do.
    """
    import torch

    from core.artifacts import FORMAT_VERSION
    from core.item_encoder import ItemEncoder
    from core.two_tower import ItemTower, ModelConfig, UserTower
    from core.user_encoder import UserEncoder
    from core.vocab import Vocab

    n, dim = vectors.shape
    item_ids = [f"i{i}" for i in range(n)]
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-scale"
    folder = artifacts_dir / version
    folder.mkdir(parents=True)
    config = ModelConfig(n_items=n, n_categories=1, dim=dim)
    vocab = Vocab(item_ids=item_ids, categories=[], demographics={})
    torch.manual_seed(0)
    user = UserTower(config)
    state = user.state_dict()
    state["history_emb.weight"] = torch.cat([torch.zeros(1, dim), torch.from_numpy(vectors)])
    hidden, n_in = state["mlp.0.weight"].shape
    if hidden < 2 * dim:
        raise ValueError(f"the user tower's hidden width {hidden} < 2 x {dim}: cannot pass vectors through")
    eye = torch.eye(dim)
    w1, w2 = torch.zeros(hidden, n_in), torch.zeros(dim, hidden)
    w1[:dim, :dim], w1[dim : 2 * dim, :dim] = eye, -eye  # the first dim inputs: the first pooling kernel
    w2[:, :dim], w2[:, dim : 2 * dim] = eye, -eye
    state.update({"mlp.0.weight": w1, "mlp.0.bias": torch.zeros(hidden), "mlp.2.weight": w2,
                  "mlp.2.bias": torch.zeros(dim)})
    positions = torch.arange(state["kernel_logit"].shape[1], dtype=torch.float32)
    state["kernel_logit"][0] = positions * math.log(0.9)
    user.load_state_dict(state)
    UserEncoder.save(folder / "user_tower.pt", user, config, vocab)
    ItemEncoder.save(folder / "item_tower.pt", ItemTower(config), config, vocab, 16, 16)
    write_index(index, folder / "index.faiss")
    np.save(folder / "item_embeddings.npy", vectors)
    (folder / "item_ids.json").write_text(json.dumps(item_ids))
    (folder / "popular.json").write_text(json.dumps([[f"i{i}", float(1000 - i)] for i in range(1000)]))
    manifest = {"format_version": FORMAT_VERSION, "version": version,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "dim": dim, "n_items": n,
                "index": params, "data": {"synthetic_items": n}, "metrics": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (artifacts_dir / "CURRENT").write_text(version + "\n")
    return folder


def _check_user_tower(folder: Path, vectors: np.ndarray, history: list[int]) -> float:
    """Cosine between the served user vector and the normalized recency-weighted mean it should be."""
    from core.user_encoder import UserEncoder

    encoder = UserEncoder.load(folder / "user_tower.pt")
    got = encoder.encode([f"i{i}" for i in history], {})
    w = 0.9 ** np.arange(len(history))
    want = (w[:, None] * vectors[history]).sum(axis=0)
    return float(got @ want / np.linalg.norm(want)) if got is not None else 0.0


def bench_rpc(n: int, calls: int, seed: int, admin_url: str, redis_url: str, port: int) -> tuple[list[RpcRow], dict]:
    import grpc
    import psycopg
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from core.config import Settings
    from protos import internal_pb2 as ipb
    from protos import internal_pb2_grpc as ipb_grpc
    from recsys import processes
    from storage.db import migrate

    items, labels = synthetic.item_vectors(n, seed=seed)
    index, params = build_index(items)
    histories = synthetic.user_histories(labels, 1000, seed=seed + 1)
    notes: dict[str, Any] = {"index": params}
    rows: list[RpcRow] = []
    dbname = f"recsys_scale_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="scale-bench-rpc-") as tmp:
        folder = write_version(Path(tmp) / "artifacts", items, index, params)
        del index
        notes["user_tower_cosine"] = round(_check_user_tower(folder, items, list(histories[0])), 4)
        requests = [[f"i{i}" for i in h] for h in histories]
        rows += _in_process(Path(tmp) / "artifacts", requests, calls)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{dbname}"')
        info = psycopg.conninfo.conninfo_to_dict(admin_url)
        info["dbname"] = dbname
        database_url = psycopg.conninfo.make_conninfo(**info)
        migrate(database_url)  # an empty catalogue: the live-items poller has nothing to add
        settings = Settings(database_url=database_url, redis_url=redis_url, artifacts_dir=Path(tmp) / "artifacts",
                            var_dir=Path(tmp) / "var", retrieval_addr=f"127.0.0.1:{port}")
        try:
            processes.start(settings, "retrieval", timeout_s=300)
            with grpc.insecure_channel(settings.retrieval_addr) as channel:
                stub = ipb_grpc.RetrievalStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                scenarios = [
                    ("gRPC: health check (floor)", lambda _r: health.Check(health_pb2.HealthCheckRequest(), timeout=5)),
                    ("gRPC: Retrieve two_tower k=200", lambda r: stub.Retrieve(ipb.RetrieveRequest(
                        user=ipb.UserContext(recent_item_ids=r), k=200,
                        sources=[ipb.SourceRequest(name="two_tower", k=200)]), timeout=5)),
                    ("gRPC: Retrieve default mix k=200", lambda r: stub.Retrieve(ipb.RetrieveRequest(
                        user=ipb.UserContext(recent_item_ids=r), k=200), timeout=5)),
                ]
                for name, fn in scenarios:
                    errors = 0

                    def call(r: list[str], fn: Any = fn) -> None:
                        nonlocal errors
                        try:
                            fn(r)
                        except grpc.RpcError:
                            errors += 1

                    lat = _latencies(call, requests, calls)
                    rows.append(_rpc_row(name, lat, errors))
                reply = stub.Retrieve(ipb.RetrieveRequest(user=ipb.UserContext(recent_item_ids=requests[0]), k=200))
                notes["default_mix_sources"] = sorted(set(reply.candidates.sources))
                notes["model_version"] = reply.model_version
        finally:
            processes.stop(settings, "retrieval")
            log = processes.log_file(settings, "retrieval")
            notes["service_log_tail"] = log.read_text()[-2000:] if log.exists() else ""
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return rows, notes


def _in_process(artifacts_dir: Path, requests: list[list[str]], calls: int) -> list[RpcRow]:
    """The same user tower and index as the service, called directly: the cost without gRPC."""
    from core.artifacts import load_current

    arts = load_current(artifacts_dir)

    def tower_and_search(recent: list[str]) -> None:
        q = arts.user_encoder.encode(recent, {})
        arts.index.search(q.reshape(1, -1), 200)

    tower = _latencies(lambda r: arts.user_encoder.encode(r, {}), requests, calls)
    return [_rpc_row("in process: user tower", tower, 0),
            _rpc_row("in process: user tower + search k=200", _latencies(tower_and_search, requests, calls), 0)]


def _rpc_row(name: str, lat: list[float], errors: int) -> RpcRow:
    return RpcRow(scenario=name, calls=len(lat), p50_ms=round(percentile(lat, 50), 3),
                  p95_ms=round(percentile(lat, 95), 3), p99_ms=round(percentile(lat, 99), 3),
                  max_ms=round(lat[-1], 3), errors=errors, load=str(_load()))


# ---------------------------------------------------------------------------- reporting


def table(rows: list[Any]) -> str:
    """A markdown table of dataclass rows."""
    if not rows:
        return ""
    dicts = [asdict(r) for r in rows]
    cols = list(dicts[0])
    cells = [[_fmt(d[c]) for c in cols] for d in dicts]
    return "\n".join(["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |",
                      *("| " + " | ".join(line) + " |" for line in cells)])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        return " / ".join(_fmt(x) for x in v)
    return str(v)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.scale_bench", description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="index,movielens,rpc", help="comma-separated: index, movielens, rpc")
    p.add_argument("--sizes", default="1000000,10000000", help="catalogue sizes for the index part")
    p.add_argument("--queries", type=int, default=1000, help="queries for recall (exact search over all items)")
    p.add_argument("--calls", type=int, default=2000, help="timed single queries / RPCs per row")
    p.add_argument("--rpc-items", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", default="", help="index part: more search settings to time on each built index, "
                   "comma-separated nprobe/k_factor[/quantizer_nprobe], e.g. 384/16/32,448/12/16")
    p.add_argument("--admin-database-url",
                   default=os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL", ""),
                   help="PostgreSQL server where the rpc part creates (and drops) an empty database "
                        "(default: TEST_DATABASE_URL, DATABASE_URL, else the embedded server)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""),
                   help="default: REDIS_URL, else the embedded server (database 13, apart from the demo's)")
    p.add_argument("--port", type=int, default=52032, help="the retrieval service's port in the rpc part")
    p.add_argument("--out-dir", type=Path, default=ROOT / "reports")
    return p.parse_args(argv)


def _fill_server_urls(args: argparse.Namespace) -> None:
    """The rpc part's PostgreSQL and Redis: the ones named, else the embedded servers (started if need be)."""
    if args.admin_database_url and args.redis_url:
        return
    from recsys.embedded import ensure_servers

    servers = ensure_servers(Settings.from_env().with_urls(args.admin_database_url, args.redis_url))
    if not args.redis_url:
        args.redis_url = servers.redis_url.rsplit("/", 1)[0] + "/13"
    args.admin_database_url = servers.database_url


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from core.threads import limit_threads

    limit_threads()
    parts = {s.strip() for s in args.parts.split(",") if s.strip()}
    report: dict[str, Any] = {"timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                              "settings": {k: str(v) for k, v in vars(args).items()}}
    md = ["# Scale benchmark", "", f"{report['timestamp']}; one thread; machine: {report['machine']}", ""]
    if "index" in parts:
        rows = []
        for n in (int(s) for s in args.sizes.split(",") if s.strip()):
            print(f"index: {n:,} items", file=sys.stderr, flush=True)
            built = bench_index(n, args.queries, args.calls, args.seed, more_settings=parse_settings(args.settings))
            rows += built
            print(table(built), flush=True)
        report["index"] = [asdict(r) for r in rows]
        md += ["## Index (synthetic vectors, single query, k=100)", "", table(rows), ""]
    if "movielens" in parts:
        print("movielens: training the two-tower model on MovieLens-100K ...", file=sys.stderr, flush=True)
        hard = bench_movielens(ROOT / "data", args.seed)
        report["movielens"] = [asdict(r) for r in hard]
        md += ["## Synthetic vs MovieLens vectors", "", table(hard), ""]
        print(table(hard), flush=True)
    if "rpc" in parts:
        _fill_server_urls(args)
        print(f"rpc: a {args.rpc_items:,}-item version and the retrieval service ...", file=sys.stderr, flush=True)
        rpc, notes = bench_rpc(args.rpc_items, args.calls, args.seed, args.admin_database_url, args.redis_url,
                               args.port)
        report["rpc"] = {"rows": [asdict(r) for r in rpc], "notes": notes}
        md += [f"## Retrieve at {args.rpc_items:,} items (sync client, one call at a time)", "", table(rpc), "",
               f"index: {notes['index']['factory']}; default mix sources: {notes.get('default_mix_sources')}; "
               f"user tower check (cosine to the expected vector): {notes.get('user_tower_cosine')}", ""]
        print(table(rpc), flush=True)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "scale-latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / "scale-latest.md").write_text("\n".join(md) + f"\npeak RSS {report['peak_rss_mb']} MB\n")
    print(f"peak RSS {report['peak_rss_mb']} MB; wrote {args.out_dir / 'scale-latest.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
