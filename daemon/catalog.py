"""What the store knows, turned into answers: neighbour pairs kept current, and duplicate groups on demand."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from dedupd.store import OK, FileRecord, Store

from .config import DedupConfig
from .groups import Group, Rules, build_groups
from .index import VectorIndex


def floor_key(model: str) -> str:
    return f"pair_floor|{model}"


class PairFinder:
    """A live FAISS index over one model's vectors: new vectors are searched against everything indexed so far and
    their pairs above the floor stored. The scan builds one per run; the daemon keeps one for its lifetime.

    The stored floor only ever goes down: asking for a lower one re-searches everything once, so a later report at
    any threshold down to the floor needs no new search.
    """

    def __init__(self, store: Store, model: str, dedup: DedupConfig):
        self.store, self.model, self.dedup = store, model, dedup
        self.index: VectorIndex | None = None

    def _load(self) -> list[str]:
        """Index every stored vector; returns the contents that still need a search (all, if the floor dropped)."""
        contents, matrix = self.store.vectors(self.model)
        if contents:
            self.index = VectorIndex(matrix.shape[1])
            self.index.add(contents, matrix)
        stored = stored_floor(self.store, self.model)
        return contents if stored is None or self.dedup.floor < stored else []

    def update(self, new_contents: Iterable[str]) -> int:
        new = list(dict.fromkeys(new_contents))
        if self.index is None:
            new = list(dict.fromkeys([*self._load(), *new]))
        contents, matrix = self.store.vectors(self.model, new) if new else ([], None)
        if not contents:
            self._save_floor()
            return 0
        if self.index is None:
            self.index = VectorIndex(matrix.shape[1])
        self.index.add(contents, matrix)
        floor = self._floor()
        added = self.store.add_pairs(self.model, self.index.neighbours(contents, matrix, self.dedup.k, floor))
        self._save_floor()
        return added

    def _floor(self) -> float:
        stored = stored_floor(self.store, self.model)
        return self.dedup.floor if stored is None else min(self.dedup.floor, stored)

    def _save_floor(self) -> None:
        self.store.set_meta(floor_key(self.model), self._floor())


def refresh_pairs(store: Store, model: str, new_contents: Iterable[str], dedup: DedupConfig) -> int:
    return PairFinder(store, model, dedup).update(new_contents)


def stored_floor(store: Store, model: str) -> float | None:
    value = store.get_meta(floor_key(model))
    return None if value is None else float(value)


def load_groups(
    store: Store, model: str, files: Sequence[FileRecord], threshold: float, policy: Sequence[str] | str,
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


def ok_files(files: Iterable[FileRecord]) -> list[FileRecord]:
    return [f for f in files if f.status == OK]
