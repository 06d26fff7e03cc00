"""Nearest-neighbour search over unique contents: cosine = inner product on unit vectors.

Ids are derived from the content hash, so they are stable across runs and processes without a mapping table.

Who does what. FAISS does the search arithmetic: every scan is `faiss.knn` (exact inner products by BLAS, then a
k-best heap per query) of a batch of queries against a tile of vectors. FAISS' k-means trains the IVF centroids.
This module keeps the vectors and decides which tiles a query meets. It holds the one authoritative copy as float16
in fixed-size blocks (1M x 768 = 1.5 GB). Below `flat_max` vectors a query meets every tile (exact search). Above
it, an inverted file (IVF) splits the vectors into lists by nearest centroid, and a query meets the lists of its
`nprobe` nearest centroids. All the queries probing a list are searched against it in one call, so a list is
widened to float32 once per batch of queries, not once per query.

Why not a FAISS index object (measured with bench/search_engines.py on faiss-cpu 1.15.1 AVX2; BENCHMARKS.md section
5): IndexFlatIP and IVF-Flat hold float32, 2.9 GiB at 1M x 768, over the 2 GB target. IVF-SQfp16 holds what this one
holds, but its `add` peaked at 2404 MiB at 1M (ours stays under 1.9 GB), and it took 1.30x our CPU time at 100k. The
scan through `faiss.knn` against our own BLAS product with argpartition (2026-12-03, quiet 2 cores): 20k exact
4.1-4.2 s against 4.7-4.8 s, peak 132 MiB against 251 MiB (no products matrix); 100k IVF, interleaved runs, 4.0-4.8
s against 4.7-5.6 s. range_search was no faster than k-NN. Removal marks rows dead (filtered from every scan) and
compacts lazily.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

# Flat all-vs-all is N^2 dot products. Measured regroups (dim 768, 2 cores, wall): flat 1.3 s at 10k, 4.5 s at 20k,
# 17 s at 40k (so ~110 s at 100k); IVF 0.8 / 1.4 / 2.6 s with recall 1.0 at those sizes. Exact stays cheap to 20k.
FLAT_MAX = 20_000
NPROBE = 8  # lists scanned per query: recall >= 0.99 with margin on clustered data (bench/search_scale.py)
LISTS_PER_SQRT = 2.0  # nlist = 2 sqrt(N) balances the coarse (N * nlist) and list-scan (nprobe * N^2 / nlist) costs
TRAIN_PER_LIST = 16  # k-means sample per centroid: 1M x 768 trains on 32k vectors (98 MB as float32)
RETRAIN_GROWTH = 2.0  # centroids trained on N vectors still fit 2N; retraining costs one more pass over all vectors
BLOCK_ROWS = 1 << 16  # vectors grow block by block, so adding never copies (and briefly doubles) the whole matrix
SCAN_ROWS = 4_096  # flat tile: its float32 copy, products and partition indices stay < 100 MB at dim 768
QUERY_ROWS = 2_048
PRODUCT_CELLS = 1 << 22  # cap on one query x list product (16 MB)
SEARCH_BATCH = 1 << 18  # queries per pass: bounds the k-best and probe arrays (~50 MB) at any query count


def content_id(content: str) -> int:
    """The first 8 bytes of the (hex) content hash as a signed int64."""
    return int.from_bytes(bytes.fromhex(content[:16]), "big", signed=True)


def content_ids(contents: Sequence[str]) -> np.ndarray:
    """content_id of many contents at once: one hex decode instead of a million int objects (~40 MB) at 1M."""
    heads = "".join(c[:16] for c in contents)
    if len(heads) != 16 * len(contents):  # a content shorter than 16 hex digits: decode one by one
        return np.array([content_id(c) for c in contents], dtype=np.int64)
    return np.frombuffer(bytes.fromhex(heads), dtype=">i8").astype(np.int64)


class VectorIndex:
    def __init__(self, dim: int, flat_max: int = FLAT_MAX, nprobe: int = NPROBE):
        self.dim, self.flat_max, self.nprobe = dim, flat_max, nprobe
        self._vectors = _Blocks(dim)
        self._ids = _Column(np.int64)
        self._contents = _Column(np.bytes_)  # bytes, not str objects: 32 B instead of ~90 B per row at 1M rows
        self._alive = _Column(np.bool_)
        self._lookup = _Lookup()
        self._ivf: _Ivf | None = None

    def __len__(self) -> int:
        return len(self._lookup)

    def __contains__(self, content: str) -> bool:
        return self._lookup.rows(np.array([content_id(content)]))[0] >= 0

    def indexed(self, contents: Sequence[str]) -> np.ndarray:
        """Whether each content is indexed, as one boolean array (one vectorised lookup at a million contents)."""
        return self._lookup.rows(content_ids(contents)) >= 0

    @property
    def kind(self) -> str:
        """The backend a search uses now: exact "flat" up to flat_max vectors, "ivf" above."""
        return "flat" if len(self) <= self.flat_max else "ivf"

    @property
    def nlist(self) -> int | None:
        """IVF lists once trained (None while flat)."""
        return self._ivf.nlist if self._ivf else None

    @property
    def nbytes(self) -> int:
        """Bytes held for the indexed vectors and their per-row bookkeeping."""
        ivf = self._ivf.nbytes if self._ivf else 0
        return self._vectors.nbytes + self._ids.nbytes + self._contents.nbytes + self._alive.nbytes + ivf

    def add(self, contents: Sequence[str], matrix: np.ndarray) -> None:
        ids = content_ids(contents)
        _, first = np.unique(ids, return_index=True)  # a batch naming a content twice indexes it once
        fresh = np.sort(first[self._lookup.rows(ids[first]) < 0])
        if not len(fresh):
            return
        matrix = np.asarray(matrix)
        start = self._vectors.append(matrix if len(fresh) == len(matrix) else matrix[fresh])  # no copy when all new
        self._ids.extend(ids[fresh])
        self._contents.extend(np.array([contents[i].encode() for i in fresh], dtype=np.bytes_))
        self._alive.extend(np.ones(len(fresh), dtype=np.bool_))
        self._lookup.insert(ids[fresh], np.arange(start, start + len(fresh)))

    def remove(self, contents: Sequence[str]) -> None:
        rows = self._lookup.rows(content_ids(contents))
        rows = rows[rows >= 0]
        if not len(rows):
            return
        self._alive.data[rows] = False
        self._lookup.delete(self._ids.data[rows])
        if 4 * (self._vectors.rows - len(self)) > self._vectors.rows:  # a quarter dead: scans pay 33% extra
            self._compact()

    def build(self) -> None:
        """Train / assign the IVF lists now instead of at the next search (no-op while flat)."""
        if self.kind == "ivf":
            self._ready_ivf()

    def content_batches(self, size: int) -> Iterator[list[str]]:
        """The indexed contents, decoded `size` at a time: a list of a million str would take ~90 MB at once."""
        for rows in _chunks(np.flatnonzero(self._alive.data), size):
            yield [content.decode() for content in self._contents.data[rows].tolist()]

    def vectors(self, contents: Sequence[str]) -> np.ndarray:
        """The stored float16 vectors of indexed contents (KeyError for one not indexed)."""
        return self._vectors.take(self._rows_of(contents)).astype(np.float16)

    def search(self, matrix: np.ndarray, k: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(cosines, content ids) of each query's k nearest, best first; short rows are padded with cosine -inf
        (id -1, itself a possible id). exact=True scans everything whatever the backend (for ground truth)."""
        matrix = np.asarray(matrix)
        k = min(k, len(self))
        sims, ids = np.full((len(matrix), k), -np.inf, np.float32), np.full((len(matrix), k), -1, np.int64)
        queries = _Queries(lambda idx: _f32(matrix[idx]), len(matrix))
        for batch, batch_sims, rows in self._search(queries, k, None, exact):
            sims[batch], ids[batch] = batch_sims, np.where(rows >= 0, self._ids.data[np.maximum(rows, 0)], -1)
        return sims, ids

    def neighbours(
        self, contents: Sequence[str], matrix: np.ndarray | None, k: int, floor: float
    ) -> list[tuple[str, str, float]]:
        """Pairs (query, neighbour, cosine) with cosine >= floor among each query's k nearest, self excluded.
        matrix=None searches the indexed vectors of `contents` (all-vs-all without a second copy)."""
        query, other, sims = self.neighbour_arrays(contents, matrix, k, floor)
        others = self._contents.data[self._lookup.rows(other)]
        return [
            (contents[q], o.decode(), min(s, 1.0)) for q, o, s in zip(query.tolist(), others.tolist(), sims.tolist())
        ]

    def neighbour_arrays(
        self, contents: Sequence[str], matrix: np.ndarray | None, k: int, floor: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """neighbours() as arrays (query position in contents, neighbour content id, cosine): at a million
        queries the tuples would take more memory than the search itself."""
        if len(self) == 0 or len(contents) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        ids = content_ids(contents)
        known = self._lookup.rows(ids)
        if matrix is None and (known < 0).any():
            raise KeyError("neighbours(matrix=None) needs every content indexed")
        take = (lambda idx: self._vectors.take(known[idx])) if matrix is None else (lambda idx: _f32(matrix[idx]))
        parts = [
            self._pairs(batch, sims, rows, ids[batch], k)
            for batch, sims, rows in self._search(_Queries(take, len(ids), known), k + 1, floor, exact=False)
        ]
        return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]

    def _pairs(
        self, batch: np.ndarray, sims: np.ndarray, rows: np.ndarray, ids: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One batch's k + 1 nearest as (query, neighbour id, cosine), self dropped."""
        found = (rows >= 0) & (self._ids.data[np.maximum(rows, 0)] != ids[:, None])
        found &= np.cumsum(found, axis=1) <= k  # the k best others: self is usually, not always, in the k + 1
        query, slot = np.nonzero(found)
        return batch[query], self._ids.data[rows[query, slot]], sims[query, slot]

    def _rows_of(self, contents: Sequence[str]) -> np.ndarray:
        rows = self._lookup.rows(content_ids(contents))
        if (rows < 0).any():
            raise KeyError(contents[int(np.flatnonzero(rows < 0)[0])])
        return rows

    def _search(
        self, queries: _Queries, k: int, floor: float | None, exact: bool
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(query positions, cosines, rows) batch by batch, best first: per-query state (k best, probes) then stays
        a few tens of MB however many queries there are."""
        if self.kind == "flat":
            self._ivf = None  # below the threshold (again): the lists are dead weight
        ivf = None if exact or self.kind == "flat" else self._ready_ivf()
        lists = ivf.lists(self._alive.data) if ivf else None
        for batch in _batches(queries.n, SEARCH_BATCH):
            part = queries.subset(batch)
            top = _TopK(len(batch), min(k, len(self)), floor)
            if ivf is None or lists is None:
                self._flat_scan(part, top)
            else:
                self._ivf_scan(ivf, lists, part, top)
            yield batch, *top.result()

    def _flat_scan(self, queries: _Queries, top: _TopK) -> None:
        """Every query against every live vector; the database tile is widened once and reused by all queries."""
        for start, tile in self._vectors.tiles(SCAN_ROWS):
            rows = np.arange(start, start + len(tile))
            live = self._alive.data[rows]
            tile, rows = (tile, rows) if live.all() else (tile[live], rows[live])
            for batch in _batches(queries.n, QUERY_ROWS):
                top.push(batch, *_best(queries.take(batch), tile, rows, top.k))

    def _ivf_scan(self, ivf: _Ivf, lists: tuple[np.ndarray, np.ndarray], queries: _Queries, top: _TopK) -> None:
        """List by list: the queries probing a list are multiplied with its members in one BLAS call, so a list is
        widened to float32 once per batch of queries instead of once per query."""
        probes = self._query_probes(ivf, queries)
        by_list = np.argsort(probes.ravel(), kind="stable").astype(np.int32)
        query_bounds = _bounds(probes.ravel()[by_list], ivf.nlist)
        members, member_bounds = lists
        for lst in np.flatnonzero((np.diff(query_bounds) > 0) & (np.diff(member_bounds) > 0)):
            rows = members[member_bounds[lst] : member_bounds[lst + 1]]
            probing = by_list[query_bounds[lst] : query_bounds[lst + 1]] // probes.shape[1]
            tile = self._vectors.take(rows)
            for part in _chunks(probing, max(1, PRODUCT_CELLS // len(rows))):  # a huge list must not OOM
                top.push(part, *_best(queries.take(part), tile, rows, top.k))

    def _query_probes(self, ivf: _Ivf, queries: _Queries) -> np.ndarray:
        """Indexed queries reuse the lists probed when their vector was assigned: all-vs-all then costs no second
        pass over the centroids."""
        probes = np.empty((queries.n, ivf.nprobe), dtype=ivf.probes.data.dtype)
        known = queries.rows >= 0
        probes[known] = ivf.probes.data[queries.rows[known]]
        for part in _chunks(np.flatnonzero(~known), QUERY_ROWS):
            probes[part] = ivf.probe(queries.take(part))
        return probes

    def _ready_ivf(self) -> _Ivf:
        """Train on first use and when the index has outgrown its centroids; assign rows added since."""
        if self._ivf is None or len(self) > RETRAIN_GROWTH * self._ivf.trained_on:
            self._ivf = None  # the old probes are useless once retrained: free them before training
            self._ivf = _Ivf.train(self._vectors, self._alive.data, self.nprobe)
        ivf = self._ivf
        for part in _batches(self._vectors.rows, QUERY_ROWS, start=len(ivf.probes)):
            ivf.probes.extend(ivf.probe(self._vectors.take(part)))
        return ivf

    def _compact(self) -> None:
        """Drop dead rows so scans and memory stop paying for them; block by block, so it needs no second copy."""
        alive = self._alive.data
        self._vectors.compact(alive)
        for column in (self._ids, self._contents):
            column.keep(alive)
        if self._ivf is not None:
            self._ivf.probes.keep(alive)
        self._alive = _Column(np.bool_)
        self._alive.extend(np.ones(self._vectors.rows, dtype=np.bool_))
        self._lookup = _Lookup()
        self._lookup.insert(self._ids.data, np.arange(self._vectors.rows))


def ivf_lists(n: int) -> int:
    """IVF lists for n vectors: LISTS_PER_SQRT sqrt(n), at least 8 vectors per list."""
    return max(1, min(round(LISTS_PER_SQRT * math.sqrt(n)), n // 8))


def training_rows(live: np.ndarray, nlist: int) -> np.ndarray:
    """The k-means sample among the live rows, ascending: TRAIN_PER_LIST per list, seeded (same data, same lists)."""
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(live, size=min(len(live), TRAIN_PER_LIST * nlist), replace=False))


def train_centroids(sample: np.ndarray, nlist: int) -> np.ndarray:
    """nlist unit centroids (float32) of the sample by FAISS' k-means."""
    import faiss

    kmeans = faiss.Kmeans(  # spherical: unit centroids, so the nearest list is the highest inner product
        sample.shape[1],
        nlist,
        niter=10,
        spherical=True,
        seed=1,
        max_points_per_centroid=TRAIN_PER_LIST,
        min_points_per_centroid=1,  # small indexes (tests, just past the threshold) train without warnings
    )
    kmeans.train(sample)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


class _Queries:
    """A query set read in batches: `take` widens rows to float32; `rows` are index rows (-1: not indexed)."""

    def __init__(self, take: Callable[[np.ndarray], np.ndarray], n: int, rows: np.ndarray | None = None):
        self.take, self.n = take, n
        self.rows = np.full(n, -1, np.int64) if rows is None else rows

    def subset(self, positions: np.ndarray) -> _Queries:
        return _Queries(lambda idx: self.take(positions[idx]), len(positions), self.rows[positions])


class _Ivf:
    """Inverted file over the index's own vectors: centroids plus, per row, the nprobe nearest lists (first = the
    row's own list). Storing the probes (16 B/row at nprobe 8) lets all-vs-all skip recomputing them."""

    def __init__(self, centroids: np.ndarray, nprobe: int, trained_on: int):
        self.centroids, self.trained_on = centroids, trained_on
        self.nlist = len(centroids)
        self.nprobe = min(nprobe, self.nlist)
        self.probes = _Column(np.uint16 if self.nlist <= 1 << 16 else np.int32, width=self.nprobe)

    @property
    def nbytes(self) -> int:
        return self.centroids.nbytes + self.probes.nbytes

    @classmethod
    def train(cls, vectors: _Blocks, alive: np.ndarray, nprobe: int) -> _Ivf:
        live = np.flatnonzero(alive)
        nlist = ivf_lists(len(live))
        return cls(train_centroids(vectors.take(training_rows(live, nlist)), nlist), nprobe, len(live))

    def probe(self, x: np.ndarray) -> np.ndarray:
        """The nprobe nearest centroids of each row, nearest first."""
        sims = x @ self.centroids.T
        if self.nprobe == self.nlist:
            best = np.argsort(-sims, axis=1)
        else:
            best = np.argpartition(sims, self.nlist - self.nprobe, axis=1)[:, -self.nprobe :]
            best = np.take_along_axis(best, np.argsort(-np.take_along_axis(sims, best, 1), axis=1), 1)
        return best.astype(self.probes.data.dtype)

    def lists(self, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Live rows grouped by their own list, with the list boundaries."""
        rows = np.flatnonzero(alive[: len(self.probes)])
        own = self.probes.data[rows, 0]
        order = np.argsort(own, kind="stable")
        return rows[order], _bounds(own[order], self.nlist)


class _TopK:
    """The k best (cosine, row) per query so far. Starting every slot just under the floor makes the floor and the
    running k-th best one pruning test: at a near-duplicate floor almost no product entry passes it, so merging
    costs nothing next to the product itself."""

    def __init__(self, n: int, k: int, floor: float | None):
        start = -np.inf if floor is None else np.nextafter(np.float32(floor), np.float32(-np.inf))
        self.sims = np.full((n, k), start, dtype=np.float32)
        self.rows = np.full((n, k), -1, dtype=np.int32)  # row numbers: 44 MB, not 88, for 1M queries x 11

    @property
    def k(self) -> int:
        return self.sims.shape[1]

    def push(self, queries: np.ndarray, sims: np.ndarray, rows: np.ndarray) -> None:
        """Merge each query's candidates (sims[i], rows[i]: at most k of them, from _best) into its k best."""
        k = self.k
        better = (sims > self.sims[queries].min(axis=1, keepdims=True)).any(axis=1)
        if not better.any():
            return
        queries, sims, rows = queries[better], sims[better], rows[better]
        all_sims = np.concatenate([self.sims[queries], sims], axis=1)
        all_rows = np.concatenate([self.rows[queries], rows], axis=1)
        keep = np.argpartition(all_sims, all_sims.shape[1] - k, axis=1)[:, -k:]
        self.sims[queries] = np.take_along_axis(all_sims, keep, 1)
        self.rows[queries] = np.take_along_axis(all_rows, keep, 1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(-self.sims, axis=1, kind="stable")
        sims, rows = np.take_along_axis(self.sims, order, 1), np.take_along_axis(self.rows, order, 1)
        sims[rows < 0] = -np.inf
        return sims, rows


class _Blocks:
    """float16 rows in fixed-size blocks: appending never reallocates what is already stored."""

    def __init__(self, dim: int):
        self.dim, self.rows, self.block_rows = dim, 0, BLOCK_ROWS
        self._blocks: list[np.ndarray] = []

    @property
    def nbytes(self) -> int:
        return self.rows * self.dim * 2

    def append(self, matrix: np.ndarray) -> int:
        """Store rows (any float dtype); returns the first new row number."""
        start, done = self.rows, 0
        while done < len(matrix):
            if self.rows == len(self._blocks) * self.block_rows:
                self._blocks.append(np.empty((self.block_rows, self.dim), dtype=np.float16))
            offset = self.rows % self.block_rows
            n = min(len(matrix) - done, self.block_rows - offset)
            self._blocks[-1][offset : offset + n] = matrix[done : done + n]
            self.rows, done = self.rows + n, done + n
        return start

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by number, widened to float32 for BLAS."""
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        block, offset = np.divmod(rows, self.block_rows)
        order = np.argsort(block, kind="stable")  # ~free: callers mostly pass ascending rows
        bounds = np.searchsorted(block[order], np.arange(len(self._blocks) + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            pick = order[bounds[b] : bounds[b + 1]]
            out[pick] = self._blocks[b][offset[pick]]
        return out

    def tiles(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 tile) over all rows, dead ones included."""
        for first in range(0, self.rows, self.block_rows):
            block = self._blocks[first // self.block_rows]
            for offset in range(0, min(self.block_rows, self.rows - first), size):
                yield first + offset, block[offset : min(offset + size, self.rows - first)].astype(np.float32)

    def compact(self, alive: np.ndarray) -> None:
        old: list[np.ndarray | None] = list(self._blocks)
        self._blocks, total, self.rows = [], self.rows, 0
        for b in range(len(old)):
            block, old[b] = old[b], None  # free each old block as soon as its survivors are copied
            assert block is not None
            keep = alive[b * self.block_rows : min((b + 1) * self.block_rows, total)]
            self.append(block[: len(keep)][keep])


class _Column:
    """A growable per-row array (capacity doubles), for the small per-row fields."""

    def __init__(self, dtype: type, width: int = 0):
        self._data: np.ndarray = np.zeros((0, width) if width else 0, dtype=dtype)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def data(self) -> np.ndarray:
        return self._data[: self._n]

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def extend(self, values: np.ndarray) -> None:
        dtype = np.result_type(self._data.dtype, values.dtype)  # bytes columns widen to the longest content
        if self._n + len(values) > len(self._data) or dtype != self._data.dtype:
            grown = np.zeros((max(2 * len(self._data), self._n + len(values), 16), *self._data.shape[1:]), dtype)
            grown[: self._n] = self.data
            self._data = grown
        self._data[self._n : self._n + len(values)] = values
        self._n += len(values)

    def keep(self, mask: np.ndarray) -> None:
        kept = self.data[mask[: self._n]]
        self._data, self._n = kept, len(kept)


class _Lookup:
    """content id -> row, as sorted arrays: 16 B per entry where a dict of Python ints takes ~100 B."""

    def __init__(self) -> None:
        self._ids = np.zeros(0, np.int64)
        self._rows = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id, -1 where not indexed."""
        if not len(self._ids):
            return np.full(len(ids), -1, np.int64)
        pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        return np.where(self._ids[pos] == ids, self._rows[pos], -1)

    def insert(self, ids: np.ndarray, rows: np.ndarray) -> None:
        order = np.argsort(ids)
        pos = np.searchsorted(self._ids, ids[order])
        self._ids, self._rows = np.insert(self._ids, pos, ids[order]), np.insert(self._rows, pos, rows[order])

    def delete(self, ids: np.ndarray) -> None:
        gone = np.searchsorted(self._ids, ids)
        self._ids, self._rows = np.delete(self._ids, gone), np.delete(self._rows, gone)


def _bounds(sorted_keys: np.ndarray, n: int) -> np.ndarray:
    """Start of each key 0..n-1 in a sorted key array, plus the end."""
    return np.searchsorted(sorted_keys, np.arange(n + 1))


def _best(queries: np.ndarray, tile: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k best (cosine, row) in the tile, by FAISS' exact inner-product search (BLAS products and a
    heap per query); a tile with fewer than k members gives them all."""
    import faiss

    sims, found = faiss.knn(queries, tile, min(k, len(tile)), metric=faiss.METRIC_INNER_PRODUCT)
    # -1: a slot FAISS could not fill (a NaN cosine); rows[-1] would name the tile's last row instead.
    return sims, np.where(found >= 0, rows[found], -1).astype(np.int32, copy=False)


def _batches(stop: int, size: int, start: int = 0) -> Iterator[np.ndarray]:
    for s in range(start, stop, size):
        yield np.arange(s, min(s + size, stop))


def _chunks(items: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for s in range(0, len(items), size):
        yield items[s : s + size]


def _f32(matrix: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(matrix, dtype=np.float32)
