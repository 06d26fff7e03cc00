"""VectorIndex backends (exact flat, IVF over float16 storage): recall against exact search, stable ids, removal,
float16 storage and the automatic choice by size. Each backend is forced on small data through `flat_max`."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import dedupd.dedup.search as index_module
from dedupd.dedup.search import VectorIndex, content_id

DIM = 64
N = 5_000
FLOOR = 0.90
BACKENDS = {"flat": 10**9, "ivf": 0}  # kind -> flat_max that forces it


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _mix(parent: np.ndarray, cosine: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = _unit(rng.standard_normal(parent.shape))
    cosine = np.broadcast_to(np.asarray(cosine, dtype=np.float32), (len(parent),))[:, None]
    return _unit(cosine * parent + np.sqrt(1 - cosine**2) * noise)


def _contents(n: int, salt: str = "") -> list[str]:
    return [hashlib.blake2b(f"{salt}{i}".encode(), digest_size=16).hexdigest() for i in range(n)]


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray, list[tuple[int, int]]]:
    """Photo-like clusters (scenes of ~20, siblings at cosine ~0.55-0.95) plus 400 planted near-duplicate pairs at
    cosine ~0.95-0.99, the last 400 rows."""
    rng = np.random.default_rng(7)
    scenes = _unit(rng.standard_normal((N // 20, DIM)))
    originals = _mix(scenes[rng.integers(0, len(scenes), N - 400)], rng.uniform(0.75, 0.97, N - 400), rng)
    sources = rng.choice(N - 400, size=400, replace=False)
    duplicates = _mix(originals[sources], rng.uniform(0.975, 0.995, 400), rng)
    planted = [(int(s), N - 400 + i) for i, s in enumerate(sources)]
    return _contents(N), np.vstack([originals, duplicates]), planted


def _index(kind: str, contents: list[str], matrix: np.ndarray) -> VectorIndex:
    index = VectorIndex(DIM, flat_max=BACKENDS[kind])
    index.add(contents, matrix)
    assert index.kind == kind
    return index


def _pair_set(pairs: list[tuple[str, str, float]]) -> set[tuple[str, str]]:
    return {(a, b) for a, b, _ in pairs}


def _exact_pairs(index: VectorIndex, contents: list[str], matrix: np.ndarray, k: int) -> set[tuple[str, str]]:
    sims, ids = index.search(matrix, k + 1, exact=True)
    by_id = {content_id(c): c for c in contents}
    pairs = set()
    for query, row_sims, row_ids in zip(contents, sims, ids):
        ranked = [(s, by_id[i]) for s, i in zip(row_sims.tolist(), row_ids.tolist()) if s > -np.inf]  # -inf: padding
        pairs |= {(query, other) for s, other in [(s, o) for s, o in ranked if o != query][:k] if s >= FLOOR}
    return pairs


@pytest.mark.parametrize("kind", BACKENDS)
def test_backend_finds_planted_duplicates_with_recall_against_exact(kind, data):
    contents, matrix, planted = data
    index = _index(kind, contents, matrix)
    found = _pair_set(index.neighbours(contents, matrix, k=10, floor=FLOOR))
    exact = _exact_pairs(index, contents, matrix, k=10)
    assert len(exact) > 2000 and len(found & exact) / len(exact) >= 0.99
    both_ways = {(contents[a], contents[b]) for a, b in planted} | {(contents[b], contents[a]) for a, b in planted}
    assert len(found & both_ways) / len(both_ways) >= 0.99
    by_content = dict(zip(contents, matrix))
    for a, b, cosine in index.neighbours(contents[-50:], matrix[-50:], k=10, floor=FLOOR):
        assert cosine >= FLOOR and a != b
        assert cosine == pytest.approx(float(by_content[a] @ by_content[b]), abs=2e-3)  # float16 storage error


@pytest.mark.parametrize("kind", BACKENDS)
def test_search_without_matrix_uses_the_stored_vectors(kind, data):
    contents, matrix, _ = data
    index = _index(kind, contents, matrix)
    with_matrix = _pair_set(index.neighbours(contents[:500], matrix[:500], k=5, floor=FLOOR))
    stored = _pair_set(index.neighbours(contents[:500], None, k=5, floor=FLOOR))
    assert len(with_matrix ^ stored) <= 0.01 * len(with_matrix)  # float16 rounding may swap a borderline pair
    with pytest.raises(KeyError):
        index.neighbours(["ab" * 16], None, k=5, floor=FLOOR)


@pytest.mark.parametrize("kind", BACKENDS)
def test_ids_are_content_hashes_and_stable(kind, data):
    contents, matrix, _ = data
    index = _index(kind, contents, matrix)
    sims, ids = index.search(matrix[:20], 1)
    assert ids[:, 0].tolist() == [content_id(c) for c in contents[:20]]  # each vector's nearest is itself
    assert np.allclose(sims[:, 0], 1.0, atol=2e-3)
    index.add(contents[:100], matrix[:100] * -1)  # re-adding a known content is a no-op, whatever the vector
    assert len(index) == N and np.array_equal(index.search(matrix[:20], 1)[1], ids)
    index.remove(contents[1000:2500])  # enough to compact the storage: row numbers change, ids must not
    assert np.array_equal(index.search(matrix[:20], 1)[1], ids)
    again = _index(kind, contents, matrix)
    assert np.array_equal(again.search(matrix[:20], 1)[1], ids)


@pytest.mark.parametrize("kind", BACKENDS)
def test_remove_drops_contents_from_every_backend(kind, data):
    contents, matrix, planted = data
    index = _index(kind, contents, matrix)
    gone = [contents[b] for _, b in planted[:50]]
    index.remove(gone + ["00" * 16])  # an unknown content is ignored
    assert len(index) == N - 50 and not any(c in index for c in gone)
    found = index.neighbours([contents[a] for a, _ in planted[:50]], matrix[[a for a, _ in planted[:50]]], 10, FLOOR)
    assert not {b for _, b, _ in found} & set(gone)
    _, ids = index.search(matrix[[b for _, b in planted[:50]]], 10)
    assert not set(ids.ravel().tolist()) & {content_id(c) for c in gone}
    index.add(gone, matrix[[b for _, b in planted[:50]]])  # and they can come back
    assert len(index) == N and all(c in index for c in gone)


def test_compaction_keeps_results_identical(data, monkeypatch):
    monkeypatch.setattr(index_module, "BLOCK_ROWS", 1024)  # several blocks, so compaction crosses block edges
    contents, matrix, _ = data
    index = VectorIndex(DIM, flat_max=0)
    index.add(contents, matrix)
    before = _pair_set(index.neighbours(contents[2000:], None, k=10, floor=FLOOR))
    index.remove(contents[:1000])
    assert index._vectors.rows == N  # under a quarter dead: only marked
    index.remove(contents[1000:1500])
    assert index._vectors.rows == N - 1500  # compacted
    after = _pair_set(index.neighbours(contents[2000:], None, k=10, floor=FLOOR))
    removed = set(contents[:1500])
    assert {p for p in before if p[1] not in removed} <= after | {p for p in before if p[1] in removed}
    assert not {b for _, b in after} & removed
    assert len(after ^ {p for p in before if p[1] not in removed}) <= 0.01 * len(after)


def test_content_batches_decode_the_live_contents(data):
    contents, matrix, _ = data
    index = _index("flat", contents[:50], matrix[:50])
    index.remove(contents[10:12])
    batches = list(index.content_batches(16))
    assert [len(b) for b in batches] == [16, 16, 16]
    assert [c for b in batches for c in b] == contents[:10] + contents[12:50]


@pytest.mark.parametrize("kind", BACKENDS)
def test_vectors_are_stored_as_float16(kind, data):
    contents, matrix, _ = data
    index = _index(kind, contents, matrix)
    index.build()
    stored = index.vectors(contents[:10])
    assert stored.dtype == np.float16 and np.array_equal(stored, matrix[:10].astype(np.float16))
    per_vector = index.nbytes / len(index)
    # float16 (2 B/dim) plus ~60 B of bookkeeping: id 8, content 32, live flag 1, IVF probes 16, centroids' share
    assert 2 * DIM <= per_vector <= 2 * DIM + 80 < 4 * DIM


def test_backend_follows_the_size_threshold(data):
    contents, matrix, _ = data
    index = VectorIndex(DIM, flat_max=1000)
    index.add(contents[:1000], matrix[:1000])
    assert index.kind == "flat" and index.nlist is None
    index.add(contents[1000:1001], matrix[1000:1001])
    assert index.kind == "ivf"
    assert index.neighbours(contents[:1], None, k=3, floor=0.0)  # trains on first search
    first_nlist = index.nlist
    index.add(contents[1001:3000], matrix[1001:3000])
    index.build()
    assert index.nlist > first_nlist  # outgrew its centroids: retrained for the new size
    index.remove(contents[1000:3000])
    assert index.kind == "flat"
    index.neighbours(contents[:1], None, k=3, floor=0.0)
    assert index.nlist is None  # back below the threshold: the lists are dropped


def test_default_threshold_keeps_small_libraries_exact():
    assert VectorIndex(DIM).flat_max == index_module.FLAT_MAX >= 10_000


def test_empty_and_tiny_indexes():
    index = VectorIndex(DIM, flat_max=0)
    assert len(index) == 0 and index.neighbours(["ab" * 16], np.ones((1, DIM)), 5, 0.5) == []
    vectors = _unit(np.random.default_rng(0).standard_normal((3, DIM)))
    contents = _contents(3, "tiny")
    index.add(contents, vectors)
    sims, ids = index.search(vectors, 10)
    assert ids.shape == (3, 3) and ids[:, 0].tolist() == [content_id(c) for c in contents]
    assert index.kind == "ivf" and index.nlist == 1


def test_a_vector_faiss_cannot_rank_never_lends_its_slot_to_another_row():
    """faiss.knn leaves a slot it could not fill (a NaN cosine) labelled -1; that label must stay 'none', not turn
    into the tile's last row, which then came back twice, once with a cosine of -3.4e38."""
    contents = _contents(3)
    index = VectorIndex(4)
    index.add(contents, np.array([[np.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32))

    sims, ids = index.search(np.array([[0, 0, 1, 0]], np.float32), 3, exact=True)

    found = ids[0][ids[0] != -1].tolist()
    assert len(found) == len(set(found)), ids
    assert found[:2] == [content_id(contents[2]), content_id(contents[1])]
    assert np.all((ids[0] != -1) | (sims[0] == -np.inf)), (sims, ids)
