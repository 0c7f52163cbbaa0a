"""core/index.py: the index chosen by size, its recall against exact search, files and settings."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from core.index import FLAT_MAX_ITEMS, IndexSpec, build_index, choose, memory_bytes, read_index, write_index
from training.synthetic import item_vectors, user_histories, user_vectors


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    items, labels = item_vectors(20_000, dim=32, seed=3)
    return items, user_vectors(items, user_histories(labels, 200, seed=4))


def exact(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return faiss.knn(queries, items, k, metric=faiss.METRIC_INNER_PRODUCT)[1]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def test_choose_follows_the_catalogue_size() -> None:
    assert choose(FLAT_MAX_ITEMS, 64).kind == "flat"
    one_m = choose(1_000_000, 64)
    assert (one_m.kind, one_m.nlist, one_m.nprobe, one_m.pq_m, one_m.two_level) == ("ivf_pq", 1024, 96, 64, False)
    ten_m = choose(10_000_000, 64)
    assert ten_m.two_level and ten_m.nlist == 16384 and ten_m.k_factor == 16 and ten_m.scan_implem == 11
    assert choose(1_000_000, 128).pq_m == 64  # two dimensions per 4-bit sub-quantizer above 64
    assert ten_m.factory(64) == "IVF16384_IVF128,PQ64x4fs,RFlat"


def test_small_catalogues_get_exact_search(vectors: tuple[np.ndarray, np.ndarray]) -> None:
    items, queries = vectors
    index, params = build_index(items[:5000])
    assert params["type"] == "Flat" and params["metric"] == "inner_product"
    assert params["bytes"] == 5000 * 32 * 4
    np.testing.assert_array_equal(index.search(queries, 10)[1], exact(items[:5000], queries, 10))


def test_ivf_pq_with_re_rank_finds_the_true_neighbours(vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    items, queries = vectors
    spec = IndexSpec("ivf_pq", nlist=64, nprobe=16, pq_m=32, k_factor=4)
    index, params = build_index(items, spec=spec)
    assert params | {"build_seconds": 0} == {
        "type": "IVFPQ", "metric": "inner_product", "factory": "IVF64,PQ32x4fs,RFlat", "nlist": 64, "nprobe": 16,
        "pq_m": 32, "pq_bits": 4, "k_factor": 4, "train_points": 64 * 64, "kmeans_iterations": 10,
        "build_seconds": 0, "bytes": params["bytes"],
    }
    truth = exact(items, queries, 20)
    scores, found = index.search(queries, 20)
    assert recall(found, truth) >= 0.9
    # the re-rank is exact: returned scores are the true inner products
    np.testing.assert_allclose(scores[:, 0], np.einsum("ij,ij->i", queries, items[found[:, 0]]), rtol=1e-5)
    # fewer lists scanned, fewer true neighbours found: the setting is live
    faiss.extract_index_ivf(index).nprobe = 1
    assert recall(index.search(queries, 20)[1], truth) < recall(found, truth)

    path = tmp_path / "index.faiss"
    write_index(index, path)
    assert abs(path.stat().st_size - params["bytes"]) / params["bytes"] < 0.02  # memory ~ what the file holds
    again = read_index(path, params)  # the manifest's settings win over what the file holds (nprobe 1 now)
    assert faiss.extract_index_ivf(again).nprobe == 16 and again.k_factor == 4
    np.testing.assert_array_equal(again.search(queries, 20)[1], found)
    assert memory_bytes(again) == params["bytes"]


def test_two_level_lists_for_very_large_catalogues(vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    items, queries = vectors
    spec = IndexSpec("ivf_pq", nlist=256, nprobe=48, pq_m=32, k_factor=8, train_per_list=32, two_level=True,
                     quantizer_nprobe=8, scan_implem=11)
    index, params = build_index(items, spec=spec)
    assert params["factory"] == "IVF256_IVF16,PQ32x4fs,RFlat" and params["quantizer_nprobe"] == 8
    assert params["scan_implem"] == 11 and faiss.downcast_index(faiss.extract_index_ivf(index)).implem == 11
    # the scan implementation changes speed, not results
    found = index.search(queries, 20)
    faiss.downcast_index(faiss.extract_index_ivf(index)).implem = 0
    default = index.search(queries, 20)
    np.testing.assert_array_equal(found[1], default[1])
    np.testing.assert_allclose(found[0], default[0], rtol=1e-5)
    assert index.ntotal == len(items)
    truth = exact(items, queries, 20)
    assert recall(index.search(queries, 20)[1], truth) >= 0.85
    write_index(index, tmp_path / "index.faiss")
    again = read_index(tmp_path / "index.faiss", {**params, "quantizer_nprobe": 4})
    quantizer = faiss.extract_index_ivf(faiss.extract_index_ivf(again).quantizer)
    assert quantizer.nprobe == 4 and quantizer.ntotal == 256
    assert faiss.downcast_index(faiss.extract_index_ivf(again)).implem == 11  # from params: not in the file


def test_l2_metric(vectors: tuple[np.ndarray, np.ndarray]) -> None:
    items, queries = vectors
    index, params = build_index(items[:3000], metric="l2")
    assert params["metric"] == "l2"
    truth = faiss.knn(queries, items[:3000], 5, metric=faiss.METRIC_L2)[1]
    np.testing.assert_array_equal(index.search(queries, 5)[1], truth)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="metric must be one of ip, l2"):
        build_index(np.zeros((3, 4), np.float32), metric="cosine")
    with pytest.raises(ValueError, match=r"non-empty \[n, dim\]"):
        build_index(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="100 vectors cannot train 256 IVF lists"):
        build_index(np.ones((100, 8), np.float32), spec=IndexSpec("ivf_pq", nlist=256, nprobe=8, pq_m=8, k_factor=2))
