"""What the store knows, turned into answers: neighbour pairs kept current, and duplicate groups on demand."""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from dedupd.config import DedupConfig
from dedupd.dedup.groups import Group, Rules, build_groups
from dedupd.dedup.search import VectorIndex, content_ids
from dedupd.store import FileRecord, Store

# Queries per search call: its k-best, probe and pair arrays (~55 MB at 131k) sit on top of the 1.5 GB index at 1M.
# Half the index's own SEARCH_BATCH: the same pairs, no slower at 1M on 2 cores, 35 MB lower peak.
QUERY_BATCH = 1 << 17
PAIRS_PER_COMMIT = 1 << 15  # a LanceDB merge-insert's memory grows with its rows: +90-170 MB at 75k, +30-60 at 20k

log = logging.getLogger("dedupd")


def floor_key(model: str) -> str:
    return f"pair_floor|{model}"


def search_key(model: str) -> str:
    """Meta key of {"complete": every committed vector searched, "pairs": the pair rows that search left}."""
    return f"pair_search|{model}"


class PairFinder:
    """A live VectorIndex over one model's vectors: new vectors are searched against everything indexed so far and
    their pairs above the floor stored. The scan builds one per run; the daemon keeps one for its lifetime.

    The stored floor only ever goes down: asking for a lower one re-searches everything once, so a later report at
    any threshold down to the floor needs no new search.
    """

    def __init__(self, store: Store, model: str, dedup: DedupConfig):
        self.store, self.model, self.dedup = store, model, dedup
        self.index: VectorIndex | None = None
        self._owed = False  # this process committed vectors that no finished search has covered yet

    def vectors_coming(self) -> None:
        """Called before vectors are committed. Until the search that covers them ends, the store says a search is
        owed: a process killed in between (kill -9 during a bulk embed) leaves vectors whose contents the next run
        finds already embedded and would never search, so the next load searches everything instead."""
        if not self._owed:
            self._owed = True
            self.store.set_meta(search_key(self.model), {**self._search_state(), "complete": False})

    def _load(self) -> bool:
        """Index every stored vector; True when everything needs a search: no stored floor or a lower one now, a
        search owed by a run that never finished it, or pair rows lost since the last search (a deleted or emptied
        pairs table comes back empty). The store streams float16 batches straight into the index: a float32 matrix
        of the whole table (3 GB at 1M x 768) would not fit next to the index's own 1.5 GB."""
        for contents, matrix in self.store.iter_vectors(self.model, dtype=np.float16):
            self._add(contents, matrix)
        _release_heap()
        stored = stored_floor(self.store, self.model)
        return stored is None or self.dedup.floor < stored or self._search_lost()

    def _search_lost(self) -> bool:
        state, rows = self._search_state(), self.store.pair_count(self.model)
        if not state.get("complete", False):
            log.info(
                "model %s: some vectors were committed but never searched (a run was killed?); "
                "searching all of them again",
                self.model,
            )
            return True
        if rows < int(state.get("pairs", 0)):
            log.warning(
                "model %s: the pairs table holds %d of the %d pairs last stored; rebuilding it from the vectors",
                self.model,
                rows,
                state.get("pairs", 0),
            )
            return True
        return False

    def _search_state(self) -> dict:
        state = self.store.get_meta(search_key(self.model), {})
        return state if isinstance(state, dict) else {}

    def update(self, new_contents: Iterable[str]) -> int:
        new = list(dict.fromkeys(new_contents))
        everything = self._load() if self.index is None else False
        self._index_missing(new)
        queries = [] if everything else self._indexed(new)
        added = 0
        if self.index is not None and (everything or queries):
            added = self._search(self.index.content_batches(QUERY_BATCH) if everything else _batches(queries))
        self._save_floor()
        self._searched()
        return added

    def _searched(self) -> None:
        """Every committed vector is searched now: say so in the store, with the pair rows the search left."""
        state = {"complete": True, "pairs": self.store.pair_count(self.model)}
        if state != self._search_state():
            self.store.set_meta(search_key(self.model), state)
        self._owed = False

    def _search(self, batches: Iterable[list[str]]) -> int:
        """Search the index's own vectors (nothing is read from the store again) and store the pairs batch by
        batch: a million queries' pairs as tuples took ~240 MB at once. Returns the distinct pairs found."""
        assert self.index is not None, "_load() builds the index before any search"
        self.index.build()  # what the first search would do; done first so its scratch is released before it
        _release_heap()
        floor, keys = self._floor(), [np.zeros((0, 2), np.int64)]
        for contents in batches:
            pairs = self.index.neighbours(contents, None, self.dedup.k, floor)
            for start in range(0, len(pairs), PAIRS_PER_COMMIT):
                self.store.add_pairs(self.model, pairs[start : start + PAIRS_PER_COMMIT])
            keys.append(_pair_keys(pairs))
        return len(np.unique(np.concatenate(keys), axis=0))

    def _index_missing(self, contents: list[str]) -> None:
        """Read and index the vectors of contents committed since the load (a daemon's new files)."""
        missing = [c for c, known in zip(contents, self._known(contents)) if not known]
        if missing:
            self._add(*self.store.vectors(self.model, missing))

    def _add(self, contents: list[str], matrix: np.ndarray) -> None:
        if not contents:
            return
        if self.index is None:
            self.index = VectorIndex(matrix.shape[1])
        self.index.add(contents, matrix)

    def _indexed(self, contents: list[str]) -> list[str]:
        """Contents that have a vector: one without (unreadable, never embedded) has nothing to search."""
        return [c for c, known in zip(contents, self._known(contents)) if known]

    def _known(self, contents: list[str]) -> np.ndarray:
        if self.index is None or not contents:
            return np.zeros(len(contents), dtype=np.bool_)
        return self.index.indexed(contents)

    def _floor(self) -> float:
        stored = stored_floor(self.store, self.model)
        return self.dedup.floor if stored is None else min(self.dedup.floor, stored)

    def _save_floor(self) -> None:
        self.store.set_meta(floor_key(self.model), self._floor())


def _batches(contents: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(contents), QUERY_BATCH):
        yield contents[start : start + QUERY_BATCH]


def _pair_keys(pairs: list[tuple[str, str, float]]) -> np.ndarray:
    """(smaller, larger) content id of each pair: a pair found from both ends, in two batches, counts once."""
    a, b = content_ids([p[0] for p in pairs]), content_ids([p[1] for p in pairs])
    return np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)


def _release_heap() -> None:
    """Hand freed heap back to the OS. Lance's reader threads free their read-ahead buffers (~130 MB after 1M
    vectors) into glibc arenas that the search, on the main thread, never reuses; k-means leaves ~50 MB more."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim, or no way to
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def stored_floor(store: Store, model: str) -> float | None:
    value = store.get_meta(floor_key(model))
    return None if value is None else float(value)


def load_groups(
    store: Store,
    model: str,
    files: Sequence[FileRecord],
    threshold: float,
    policy: Sequence[str] | str,
    rules: Rules | None = None,
) -> list[Group]:
    pairs = store.pairs(model, threshold)
    return build_groups(files, pairs, threshold, _cosine(store, model, files, pairs), policy, rules)


def _cosine(store: Store, model: str, files: Sequence[FileRecord], pairs: list[tuple[str, str, float]]):
    """Exact cosine between any two contents that share a component: the stored pair, else the vectors' dot."""
    known = {(a, b): c for a, b, c in pairs}
    needed = {c for a, b, _ in pairs for c in (a, b)}
    contents, matrix = store.vectors(model, needed) if needed else ([], np.zeros((0, 0), np.float32))
    rows = dict(zip(contents, matrix))

    def cosine(a: str, b: str) -> float:
        hit = known.get((min(a, b), max(a, b)))
        if hit is not None:
            return hit
        if a in rows and b in rows:
            return float(np.dot(rows[a], rows[b]))
        return -1.0  # no vector: never close enough to be a duplicate

    return cosine
