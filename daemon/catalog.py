"""What the store knows, turned into answers: neighbour pairs kept current, and duplicate groups on demand."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from dedupd.store import OK, FileRecord, Store

from .config import DedupConfig
from .groups import Group, build_groups
from .index import VectorIndex


def floor_key(model: str) -> str:
    return f"pair_floor|{model}"


def refresh_pairs(store: Store, model: str, new_contents: Iterable[str], dedup: DedupConfig) -> int:
    """Search the new vectors against all of this model's vectors and store the pairs above the floor.

    The stored floor only ever goes down: asking for a lower one re-searches everything once, so a later report at
    any threshold down to the floor needs no new search.
    """
    stored = store.get_meta(floor_key(model))
    floor = dedup.floor if stored is None else min(dedup.floor, float(stored))
    contents, matrix = store.vectors(model)
    if not contents:
        store.set_meta(floor_key(model), floor)
        return 0
    queries = set(contents) if stored is None or floor < float(stored) else set(new_contents)
    index = VectorIndex(matrix.shape[1])
    index.add(contents, matrix)
    rows = [i for i, c in enumerate(contents) if c in queries]
    pairs = index.neighbours([contents[i] for i in rows], matrix[rows], dedup.k, floor)
    added = store.add_pairs(model, pairs)
    store.set_meta(floor_key(model), floor)
    return added


def stored_floor(store: Store, model: str) -> float | None:
    value = store.get_meta(floor_key(model))
    return None if value is None else float(value)


def load_groups(
    store: Store, model: str, files: Sequence[FileRecord], threshold: float, policy: Sequence[str] | str
) -> list[Group]:
    pairs = store.pairs(model, threshold)
    return build_groups(files, pairs, threshold, _cosine(store, model, files, pairs), policy)


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
