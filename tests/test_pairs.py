"""PairFinder over a real store: the pairs it stores, the floor that only goes down, and how often it reads vectors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dedupd.config import DedupConfig
from dedupd.dedup.pairs import PairFinder, stored_floor
from dedupd.store import Store

MODEL = "test/model"
DIM = 64
N = 300
CLOSE, LOOSE = slice(0, 20), slice(20, 40)  # which originals get a copy at cosine 0.97-0.99 / 0.92-0.94


class CountingStore(Store):
    """Counts the vector rows read through either reader, and streams 7 rows a batch so a load spans many."""

    rows_read = 0
    _inside_vectors = False

    def iter_vectors(self, model, batch_rows=7, dtype=np.float16, contents=None):
        for names, matrix in super().iter_vectors(model, 7, dtype, contents):
            self.rows_read += 0 if self._inside_vectors else len(names)
            yield names, matrix

    def vectors(self, model, contents=None):
        self._inside_vectors = True  # vectors() may read through iter_vectors(): count its rows once
        try:
            names, matrix = super().vectors(model, contents)
        finally:
            self._inside_vectors = False
        self.rows_read += len(names)
        return names, matrix


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _mix(parent: np.ndarray, cosine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = _unit(rng.standard_normal(parent.shape))
    noise = _unit(noise - np.sum(noise * parent, axis=1, keepdims=True) * parent)  # exactly orthogonal to the parent
    return _unit(cosine[:, None] * parent + np.sqrt(1 - cosine[:, None] ** 2) * noise)


def _contents(n: int, salt: str = "") -> list[str]:
    return [hashlib.blake2b(f"{salt}{i}".encode(), digest_size=16).hexdigest() for i in range(n)]


@pytest.fixture
def library(tmp_path) -> tuple[CountingStore, list[str], np.ndarray]:
    """N random unit vectors (any two at cosine < 0.6 in 64 dims) plus 20 close and 20 loose copies of originals."""
    rng = np.random.default_rng(11)
    originals = _unit(rng.standard_normal((N, DIM)))
    close = _mix(originals[CLOSE], rng.uniform(0.97, 0.99, 20), rng)
    loose = _mix(originals[LOOSE], rng.uniform(0.92, 0.94, 20), rng)
    contents, matrix = _contents(N + 40), np.vstack([originals, close, loose])
    store = CountingStore.open(tmp_path / "store")
    for start in range(0, len(contents), 100):  # several commits, as a scan makes them
        store.add_vectors(MODEL, contents[start : start + 100], matrix[start : start + 100])
    store.add_vectors("other/model", contents[:50], _unit(rng.standard_normal((50, DIM))))
    return store, contents, matrix


def _exact_pairs(contents: list[str], matrix: np.ndarray, floor: float) -> dict[tuple[str, str], float]:
    """Every pair at cosine >= floor, by brute force in float32 (each vector has at most one, so top-k drops none)."""
    sims = matrix @ matrix.T
    a, b = np.nonzero(np.triu(sims >= floor, k=1))
    return {(min(contents[i], contents[j]), max(contents[i], contents[j])): float(sims[i, j]) for i, j in zip(a, b)}


def _stored(store: Store) -> dict[tuple[str, str], float]:
    return {(a, b): c for a, b, c in store.pairs(MODEL)}


def _finder(store: Store, pair_floor: float) -> PairFinder:
    return PairFinder(store, MODEL, DedupConfig(pair_floor=pair_floor))


def test_first_update_stores_exactly_the_pairs_above_the_floor(library):
    store, contents, matrix = library
    assert _finder(store, 0.90).update(contents) == 40
    expected = _exact_pairs(contents, matrix, 0.90)
    stored = _stored(store)
    assert len(expected) == 40 and set(stored) == set(expected)
    assert all(stored[p] == pytest.approx(expected[p], abs=2e-3) for p in expected)  # float16 vectors, float32 math


def test_pairs_stored_batch_by_batch_are_the_same_and_counted_once(library, monkeypatch):
    import dedupd.dedup.pairs as pairs_module

    store, contents, matrix = library
    monkeypatch.setattr(pairs_module, "QUERY_BATCH", 7)  # a copy and its original are searched in different batches
    assert _finder(store, 0.90).update(contents) == 40
    assert set(_stored(store)) == set(_exact_pairs(contents, matrix, 0.90))


def test_first_update_reads_each_stored_vector_once(library):
    store, contents, _ = library
    finder = _finder(store, 0.90)
    finder.update(contents)  # a first scan: everything it embedded is new, and all of it was just loaded
    assert store.rows_read == len(contents)
    assert len(finder.index) == len(contents)


def test_a_lower_floor_re_searches_everything_once_and_the_floor_only_goes_down(library):
    store, contents, matrix = library
    assert _finder(store, 0.95).update([]) == 20  # no stored floor yet: everything is searched
    assert set(_stored(store)) == set(_exact_pairs(contents, matrix, 0.95))
    assert stored_floor(store, MODEL) == pytest.approx(0.95)

    assert _finder(store, 0.90).update([]) == 40  # lower: the loose copies are found without being new
    assert set(_stored(store)) == set(_exact_pairs(contents, matrix, 0.90))
    assert stored_floor(store, MODEL) == pytest.approx(0.90)

    assert _finder(store, 0.95).update([]) == 0  # higher again: nothing to re-search, the floor stays
    assert stored_floor(store, MODEL) == pytest.approx(0.90)


def test_a_long_lived_finder_reads_only_the_vectors_committed_since(library):
    store, contents, matrix = library
    finder = _finder(store, 0.90)
    finder.update([])
    before = store.rows_read
    rng = np.random.default_rng(5)
    new = _contents(2, salt="new")
    copy, stranger = _mix(matrix[[100]], np.array([0.98]), rng), _unit(rng.standard_normal((1, DIM)))
    store.add_vectors(MODEL, new, np.vstack([copy, stranger]))
    unreadable = _contents(1, salt="no vector")  # a content with no vector: nothing to search, no error
    assert finder.update([*new, contents[100], *unreadable]) == 1
    assert store.rows_read - before == 2  # the two new vectors; contents[100] was already indexed
    assert (min(new[0], contents[100]), max(new[0], contents[100])) in _stored(store)


def test_an_empty_store_has_nothing_to_search(tmp_path):
    store = Store.open(tmp_path)
    finder = _finder(store, 0.90)
    assert finder.update([]) == 0 and finder.update(_contents(3)) == 0
    assert finder.index is None and stored_floor(store, MODEL) == pytest.approx(0.90)
