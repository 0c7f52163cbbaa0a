"""The FAISS index over item vectors, chosen by catalogue size.

    index, params = build_index(embeddings)       # params go into the manifest's "index"
    write_index(index, path); index = read_index(path, params)

- up to 100k items: exact search (IndexFlatIP); it takes well under a millisecond there.
- above: IVF with 4-bit PQ fast-scan codes, then an exact re-rank of the shortlist
  (IndexRefineFlat: the k * k_factor best PQ candidates rescored with the stored vectors).
  The PQ scan is ~3x cheaper per vector than scanning float vectors (IVF-Flat), which
  is what buys recall@100 >= 0.95 within the latency budget on realistic (hard)
  vectors: IVF-Flat needs nprobe 64 of 1024 lists at 1M items for 0.95, at ~1 ms
  median on one thread. Memory is n * (4 * dim + dim / 2 + 8) bytes: 3.0 GB at 10M x 64.
  Lists grow as ~sqrt(n); build trains k-means on a sample (train_per_list points per
  list, 10 iterations). Above 4096 lists (~10M items) a flat k-means and a flat
  assignment of every vector cost too much on one thread (10M x 16384 dot products of
  64 dims: ~4 minutes), so the lists come from a two-level k-means (sqrt(nlist) groups,
  then lists within each group) and the quantizer is itself a small IVF over the list
  centroids, which finds a vector's list with ~10x fewer dot products.

docs/scale.md has the measurements behind the numbers. Search settings (nprobe,
k_factor) live in the index file as well as in params; read_index applies params, so the
manifest is the one place to change them.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

FLAT_MAX_ITEMS = 100_000
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
METRIC_NAMES = {"ip": "inner_product", "l2": "l2"}


@dataclass(frozen=True)
class IndexSpec:
    """What to build. kind: "flat" (exact) or "ivf_pq" (IVF, PQ fast-scan codes, exact re-rank)."""

    kind: str
    nlist: int = 0  # IVF lists
    nprobe: int = 0  # lists scanned per query
    pq_m: int = 0  # PQ sub-quantizers of 4 bits each (dim / pq_m dimensions per sub-quantizer)
    k_factor: int = 0  # re-rank the k * k_factor best PQ candidates exactly
    train_per_list: int = 64  # k-means sample: this many points per list
    kmeans_iterations: int = 10
    two_level: bool = False  # two-level k-means and an IVF quantizer over the list centroids
    quantizer_nprobe: int = 0  # two_level: groups the quantizer scans when searching (adding uses fewer)
    scan_implem: int = 0  # faiss fast-scan search implementation; 0 lets faiss choose (docs/scale.md)

    def factory(self, dim: int) -> str:
        if self.kind == "flat":
            return "Flat"
        quantizer = f"_IVF{_groups(self.nlist)}" if self.two_level else ""
        return f"IVF{self.nlist}{quantizer},PQ{self.pq_m}x4fs,RFlat"


def choose(n: int, dim: int) -> IndexSpec:
    """The index for n vectors of dim dimensions (recall@100 >= 0.95 on one thread, docs/scale.md)."""
    if n <= FLAT_MAX_ITEMS:
        return IndexSpec("flat")
    if n <= 3_000_000:  # 1M: 1024 lists of ~1000, scan 96 of them, re-rank 400 for the top 100
        nlist = int(max(256, 2 ** round(math.log2(math.sqrt(n)))))
        return IndexSpec("ivf_pq", nlist=nlist, nprobe=max(32, nlist * 3 // 32), pq_m=pq_m_for(dim), k_factor=4)
    # 10M: 16384 lists of ~600, scan 448; PQ ranks are noisier among 10M, so re-rank 1600
    # implem 11 scans a single query's lists ~10% faster than faiss' own choice there (same results)
    return IndexSpec("ivf_pq", nlist=16384, nprobe=448, pq_m=pq_m_for(dim), k_factor=16, train_per_list=32,
                     two_level=True, quantizer_nprobe=32, scan_implem=11)


def pq_m_for(dim: int) -> int:
    """One 4-bit sub-quantizer per dimension up to 64, else per 2 dimensions (PQ needs dim % m == 0)."""
    m = dim if dim <= 64 else dim // 2
    while dim % m:
        m -= 1
    return max(1, m)


def build_index(
    embeddings: np.ndarray, metric: str = "ip", spec: IndexSpec | None = None, seed: int = 0,
) -> tuple[faiss.Index, dict[str, Any]]:
    """An index over the rows of `embeddings` (float32 [n, dim]) and its parameters for the manifest.

    Row i of `embeddings` is id i in the index. metric: "ip" (inner product) or "l2".
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [n, dim] array, got shape {x.shape}")
    n, dim = x.shape
    spec = spec or choose(n, dim)
    started = time.perf_counter()
    params: dict[str, Any] = {"type": "Flat" if spec.kind == "flat" else "IVFPQ", "metric": METRIC_NAMES[metric],
                              "factory": spec.factory(dim)}
    if spec.kind == "flat":
        index = faiss.index_factory(dim, "Flat", METRICS[metric])
        index.add(x)
    else:
        if n < spec.nlist:
            raise ValueError(f"{n} vectors cannot train {spec.nlist} IVF lists; use fewer lists or a flat index")
        size = min(n, spec.train_per_list * spec.nlist)
        sample = x[np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))]
        index = _two_level(sample, spec, metric, seed) if spec.two_level else _one_level(sample, spec, metric)
        index.add(x)
        params.update(nlist=spec.nlist, nprobe=spec.nprobe, pq_m=spec.pq_m, pq_bits=4, k_factor=spec.k_factor,
                      train_points=size, kmeans_iterations=spec.kmeans_iterations)
        if spec.two_level:
            params.update(quantizer_nprobe=spec.quantizer_nprobe)
        if spec.scan_implem:
            params.update(scan_implem=spec.scan_implem)
    apply_params(index, params)
    params["build_seconds"] = round(time.perf_counter() - started, 1)
    params["bytes"] = memory_bytes(index)
    return index, params


def apply_params(index: faiss.Index, params: dict[str, Any]) -> faiss.Index:
    """Set the search settings of params (nprobe, k_factor, scan_implem) on an index; returns it."""
    if "nprobe" in params:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = int(params["nprobe"])
        if "quantizer_nprobe" in params:
            faiss.extract_index_ivf(ivf.quantizer).nprobe = int(params["quantizer_nprobe"])
        if "scan_implem" in params:  # not stored in the index file
            faiss.downcast_index(ivf).implem = int(params["scan_implem"])
    if "k_factor" in params:
        index.k_factor = float(params["k_factor"])  # an IndexRefine (read_index and index_factory downcast)
    return index


def _one_level(sample: np.ndarray, spec: IndexSpec, metric: str) -> faiss.Index:
    index = faiss.index_factory(sample.shape[1], spec.factory(sample.shape[1]), METRICS[metric])
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = spec.kmeans_iterations
    ivf.cp.max_points_per_centroid = spec.train_per_list  # faiss would subsample to this anyway
    index.train(sample)
    return index


def _two_level(sample: np.ndarray, spec: IndexSpec, metric: str, seed: int) -> faiss.Index:
    """IVF whose list centroids come from k-means within k-means groups, found through an IVF quantizer."""
    dim = sample.shape[1]
    groups = _groups(spec.nlist)
    centroids = _two_level_kmeans(sample, groups, spec.nlist, spec.kmeans_iterations, seed, metric)
    quantizer = faiss.IndexIVFFlat(faiss.IndexFlat(dim, METRICS[metric]), dim, groups, METRICS[metric])
    quantizer.train(centroids)
    quantizer.add(centroids)
    quantizer.nprobe = 8  # while adding: finds the nearest list ~94% of the time, a near one otherwise
    ivf = faiss.IndexIVFPQFastScan(quantizer, dim, spec.nlist, spec.pq_m, 4, METRICS[metric])
    ivf.own_fields = True
    quantizer.this.disown()  # the IVF index frees its quantizer
    ivf.train(sample)  # the quantizer already holds nlist centroids: this trains the PQ only
    index = faiss.IndexRefineFlat(ivf)
    index.own_fields = True
    ivf.this.disown()
    return index


def _groups(nlist: int) -> int:
    return max(1, round(math.sqrt(nlist)))


def _two_level_kmeans(
    sample: np.ndarray, groups: int, nlist: int, niter: int, seed: int, metric: str,
) -> np.ndarray:
    """nlist centroids: k-means into `groups`, then each group split by k-means in proportion to its size."""
    dim = sample.shape[1]
    spherical = metric == "ip"  # unit vectors under inner product: keep centroids on the sphere too
    top = faiss.Kmeans(dim, groups, niter=niter, spherical=spherical, seed=seed)
    top.train(sample)
    _, assign = top.index.search(sample, 1)
    assign = assign.ravel()
    sizes = np.bincount(assign, minlength=groups)
    per_group = np.maximum(1, np.floor(sizes / sizes.sum() * nlist)).astype(np.int64)
    per_group = np.minimum(per_group, np.maximum(sizes, 1))
    while per_group.sum() < nlist:  # hand the rest to the groups with the most points per list
        per_group[np.argmax(np.where(per_group < sizes, sizes / per_group, 0))] += 1
    while per_group.sum() > nlist:
        per_group[np.argmax(per_group)] -= 1
    out = []
    for g in range(groups):
        points = sample[assign == g]
        if per_group[g] >= len(points):
            out.append(np.resize(points if len(points) else top.centroids[g : g + 1], (per_group[g], dim)))
            continue
        # 32 points per list is the design (train_per_list): silence faiss' "provide at least 39" warning
        km = faiss.Kmeans(dim, int(per_group[g]), niter=niter, spherical=spherical, seed=seed + 1 + g,
                          min_points_per_centroid=1)
        km.train(points)
        out.append(km.centroids)
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def write_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def read_index(path: Path, params: dict[str, Any] | None = None) -> faiss.Index:
    """Read an index file and apply the manifest's search settings (an older manifest's IVF included)."""
    return apply_params(faiss.read_index(str(path)), params or {})


def memory_bytes(index: faiss.Index) -> int:
    """Bytes the index holds: stored vectors or codes, ids and quantizers (what its file holds, too)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        return memory_bytes(index.base_index) + memory_bytes(index.refine_index)
    if isinstance(index, faiss.IndexFlatCodes):
        return int(index.ntotal * index.code_size)
    if isinstance(index, faiss.IndexIVF):
        lists = index.invlists
        entries = sum(lists.list_size(i) for i in range(lists.nlist))
        block = faiss.try_extract_index_ivf(index)
        bbs = getattr(block, "bbs", 0)
        if bbs:  # fast-scan lists are stored in blocks of bbs codes
            padded = sum(-(-lists.list_size(i) // bbs) * bbs for i in range(lists.nlist))
            codes = padded * index.code_size
        else:
            codes = entries * index.code_size
        return int(codes + 8 * entries + memory_bytes(index.quantizer))
    return int(index.ntotal * index.d * 4)  # anything else: at least its vectors


def spec_dict(spec: IndexSpec) -> dict[str, Any]:
    return asdict(spec)


__all__ = ["IndexSpec", "apply_params", "build_index", "choose", "memory_bytes", "pq_m_for", "read_index",
           "write_index"]
