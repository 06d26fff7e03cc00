"""Nearest-neighbour search over unique contents with FAISS (exact inner product on unit vectors = cosine).

Ids are derived from the content hash, so they are stable across runs and processes without a mapping table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def content_id(content: str) -> int:
    """The first 8 bytes of the (hex) content hash as a signed int64."""
    return int.from_bytes(bytes.fromhex(content[:16]), "big", signed=True)


class VectorIndex:
    def __init__(self, dim: int):
        import faiss

        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._contents: dict[int, str] = {}

    def __len__(self) -> int:
        return self._index.ntotal

    def __contains__(self, content: str) -> bool:
        return content_id(content) in self._contents

    def add(self, contents: Sequence[str], matrix: np.ndarray) -> None:
        fresh = [i for i, c in enumerate(contents) if c not in self]
        if not fresh:
            return
        ids = np.array([content_id(contents[i]) for i in fresh], dtype=np.int64)
        self._index.add_with_ids(_as_f32(matrix[fresh]), ids)
        self._contents.update(zip(ids.tolist(), (contents[i] for i in fresh)))

    def remove(self, contents: Sequence[str]) -> None:
        ids = np.array([content_id(c) for c in contents if c in self], dtype=np.int64)
        if len(ids):
            self._index.remove_ids(ids)
            for i in ids.tolist():
                del self._contents[i]

    def neighbours(
        self, contents: Sequence[str], matrix: np.ndarray, k: int, floor: float
    ) -> list[tuple[str, str, float]]:
        """Pairs (query, neighbour, cosine) with cosine >= floor among each query's k nearest, self excluded."""
        if len(self) == 0 or len(contents) == 0:
            return []
        sims, ids = self._index.search(_as_f32(matrix), min(k + 1, len(self)))
        pairs = []
        for query, row_ids, row_sims in zip(contents, ids, sims):
            for i, sim in zip(row_ids.tolist(), row_sims.tolist()):
                other = self._contents.get(i)
                if other is not None and other != query and sim >= floor:
                    pairs.append((query, other, min(float(sim), 1.0)))
        return pairs


def _as_f32(matrix: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(matrix, dtype=np.float32)
