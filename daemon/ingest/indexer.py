"""Indexing shared by `scan` and the daemon: run the pipeline over some files, drop what is gone, keep pairs current.

An `Indexer` holds what stays valid between runs (which contents are resolved, the live vector index, the store's
view of each path), so the daemon pays for loading them once and each event batch costs only its own files.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from dedupd.config import Config
from dedupd.dedup.pairs import PairFinder
from dedupd.ingest import pipeline
from dedupd.ingest.decode import decoders
from dedupd.ingest.decode_pool import DecodeFn, DecodePool, decode_for_model, hash_threads
from dedupd.ingest.walk import INTERNAL_IGNORE, NAS_IGNORE, ScanOptions, entry_for, is_picture
from dedupd.ingest.walk import scan as walk
from dedupd.model.loader import LazyEmbedder
from dedupd.own_folders import OffLimits, own_folders
from dedupd.paths import Ignore, inside, path_text, text_path
from dedupd.store import FileRecord, FileStat, Store


@dataclass
class IndexResult:
    counters: pipeline.Counters
    removed: int = 0
    pairs: int = 0
    offline: str = ""  # why the root was marked offline instead of swept ("" = it was swept)


def scan_options(config: Config, store: Store) -> ScanOptions:
    return ScanOptions(
        ignore=(*NAS_IGNORE, *INTERNAL_IGNORE, *config.scan.ignore),
        follow_symlinks=config.scan.follow_symlinks,
        off_limits=OffLimits(own_folders(store.path, config)),  # fresh per run: folders marked since are seen
        sniff=config.scan.sniff,
    )


class Indexer:
    def __init__(
        self,
        store: Store,
        config: Config,
        embedder: LazyEmbedder,
        threaded: bool = True,
        decode: DecodeFn = decode_for_model,
    ):
        self.store, self.config, self.embedder, self.threaded = store, config, embedder, threaded
        self.decode = decode  # per file, in the decode workers here or on the cluster (a test seam: DecodeFn)
        self.model = embedder.model_id
        self.book = pipeline.ContentBook.from_store(store, self.model, decoders(config.scan.max_pixels))
        self.pairs = PairFinder(store, self.model, config.dedup)
        self.unsearched: list[str] = []  # contents committed whose pairs no finished search has stored yet
        self.files: dict[bytes, FileRecord] = store.files()
        self.options = scan_options(config, store)
        self.stop = threading.Event()
        self.pool: DecodePool | None = None
        self.on_item: Callable[[pipeline.Counters], None] | None = None
        self.on_tick: Callable[[], None] | None = None
        # Replaces the decode and embed stages, e.g. dedupd.cluster's Ray stage for a bulk run; None: local.
        self.to_model: Callable[[pipeline.Counters], pipeline.Stage] | None = None

    # --- whole roots ---------------------------------------------------------------------------------------------

    def reconcile(self, root: bytes, guard: bool = True) -> IndexResult:
        """Mark and sweep one root. With guard, a root that vanished (missing, empty, or lost more than
        watch.max_vanish_fraction of its files) is marked offline and nothing is dropped."""
        self.options = scan_options(self.config, self.store)
        known = {p for p, f in self.files.items() if f.root == root and not self._own(p)}
        own = [p for p, f in self.files.items() if f.root == root and self._own(p)]  # indexed by an older dedupd
        entries = list(walk([root], self.options)) if os.path.isdir(root) else []
        seen = {e.path for e in entries}
        gone = [p for p in known if p not in seen]
        reason = self._vanished(root, len(known), entries, gone) if guard else ""
        if reason:
            mark_root(self.store, root, state="offline", reason=reason)
            return IndexResult(pipeline.Counters(), offline=reason)
        result = self.index(entries, gone=[*own, *gone])
        mark_root(self.store, root, state="online", reason="", last_scan=time.time())
        return result

    def _vanished(self, root: bytes, known: int, entries: list[FileStat], gone: list[bytes]) -> str:
        if not os.path.isdir(root):
            return "root is missing or unmounted"
        if known and not entries:
            return "root is suddenly empty"
        return self._too_many_lost(known, entries, gone)

    def _too_many_lost(self, known: int, entries: list[FileStat], gone: list[bytes]) -> str:
        """Why `gone` looks like an unmounted share, or "". A file whose inode shows up again among `entries` was
        renamed or moved (a folder renamed inside the root keeps every inode), not lost."""
        present = {(e.device, e.inode) for e in entries}
        lost = sum(1 for p in gone if (self.files[p].device, self.files[p].inode) not in present)
        if known and lost / known > self.config.watch.max_vanish_fraction:
            return f"{lost} of {known} files vanished at once (more than watch.max_vanish_fraction)"
        return ""

    # --- some paths ------------------------------------------------------------------------------------------------

    def refresh_paths(self, root: bytes, paths: Iterable[bytes], guard: bool = False) -> IndexResult:
        """Event-driven: each dirty path is a new/changed file, a directory to rescan, or something gone. With
        guard, a batch that loses more than watch.max_vanish_fraction of the root's files (moves within the batch
        excepted) is not applied: `offline` says why, and the caller lets a guarded reconcile decide."""
        paths = list(paths)
        self.options = scan_options(self.config, self.store)  # a purge beside the daemon may have added a trash
        entries = [e for path in paths for e in self._entries_at(root, path)]
        seen = {e.path for e in entries}
        gone = [p for p in self.known_under(paths) if p not in seen]
        if guard and gone:
            known = sum(1 for f in self.files.values() if f.root == root)
            reason = self._too_many_lost(known, entries, gone)
            if reason:
                return IndexResult(pipeline.Counters(), offline=reason)
        return self.index(entries, gone)

    def _entries_at(self, root: bytes, path: bytes) -> list[FileStat]:
        if Ignore.of(self.options.ignore).below(path, root) or self._own(path):
            return []  # inside @eaDir, #recycle...: the walk below matches names only below the folder it starts in
        if os.path.isdir(path) and not os.path.islink(path):
            return [replace(e, root=root) for e in walk([path], self.options) if inside(e.path, root)]
        entry = _file_entry(root, path, self.options.sniff)
        return [entry] if entry else []

    def _own(self, path: bytes) -> bool:
        return self.options.off_limits.lies_in(path)

    def known_under(self, paths: Iterable[bytes]) -> list[bytes]:
        """Known files equal to or below any of the paths, in one pass over the known files (not one per path:
        a burst of events against a big library would otherwise cost paths x files)."""
        dirty = {p.rstrip(b"/") for p in paths}
        return [known for known in self.files if _has_ancestor_in(known, dirty)]

    # --- the pipeline run ----------------------------------------------------------------------------------------

    def index(self, entries: Iterable[FileStat], gone: Iterable[bytes] = ()) -> IndexResult:
        # Contents committed by a run that raised before its search stay in this list, so the next run's search
        # covers them (a daemon goes on after a failed batch; a new process learns it from the store instead).
        counters = pipeline.Counters(new_contents=self.unsearched)
        stages = self._stages(counters)
        try:
            for work in pipeline.run_stages(self._source(entries), stages, threaded=self.threaded, tick=self.on_tick):
                self.files[work.record.path] = work.record
                if self.on_item:
                    self.on_item(counters)
        except BaseException:
            self.book.abandon()
            raise
        gone = [p for p in dict.fromkeys(gone) if p in self.files]
        self.store.delete_files(gone)
        for path in gone:
            del self.files[path]
        pairs = self.pairs.update(counters.new_contents)
        self.unsearched = []
        self.store.maybe_compact()
        return IndexResult(counters, removed=len(gone), pairs=pairs)

    def _source(self, entries: Iterable[FileStat]) -> Iterator[FileStat]:
        for entry in entries:
            if self.stop.is_set():
                return
            if not self._own(entry.path):  # the one gate every indexed file passes: never what a dedupd wrote
                yield entry

    def _decode_settings(self) -> pipeline.DecodeSettings:
        embedder = self.embedder
        return pipeline.DecodeSettings(
            embedder.draft_side, self.config.scan.max_pixels, embedder.preprocess_spec, self._pool, self.decode
        )

    def _pool(self) -> DecodePool | None:
        """Started on first use and kept: the daemon's event batches reuse warm workers. Sequential runs (tests)
        decode inline unless scan.decode_workers asks for workers."""
        if not self.threaded and self.config.scan.decode_workers is None:
            return None
        workers = self.embedder.decode_workers()
        if workers and self.pool is None:
            self.pool = DecodePool(workers, decode=self.decode)
        return self.pool

    def _prepare(self) -> None:
        """Something needs embedding: load the model and start the decode workers now, both in the background,
        while the walk, the hashing and the exact-copy pass go on."""
        self.embedder.start()
        pool = self._pool()
        if pool is not None:
            pool.warm()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _stages(self, counters: pipeline.Counters) -> list:
        threads = hash_threads() if self.threaded else 1
        commit = pipeline.commit(
            self.store, self.model, self.book, self.config.scan.commit_every, counters, self.pairs.vectors_coming
        )
        if self.to_model is not None:  # a bulk run on a cluster decodes and embeds there
            return [*pipeline.stages_to_plan(self.files, self.book, counters, threads), self.to_model(counters), commit]
        to_model = pipeline.stages_to_model(
            self.files, self.book, counters, self._decode_settings(), self.embedder, threads, self.stop, self._prepare
        )
        return [*to_model, commit]


def _file_entry(root: bytes, path: bytes, sniff: bool) -> FileStat | None:
    if not inside(path, root) or not is_picture(path, sniff):
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return entry_for(path, root, st)


def _has_ancestor_in(path: bytes, candidates: set[bytes]) -> bool:
    while path:
        if path in candidates:
            return True
        path, sep, _ = path.rpartition(b"/")
        if not sep:
            return False
    return False


# --- root state (kept in the store's meta, so every process sees which roots are online) --------------------------


def roots_state(store: Store) -> dict[str, dict]:
    return dict(store.get_meta("roots", {}))


def online_roots(store: Store) -> list[bytes]:
    return [text_path(r) for r, s in roots_state(store).items() if s.get("state", "online") == "online"]


def mark_root(store: Store, root: bytes, **state: object) -> None:
    roots = roots_state(store)
    if roots.get(path_text(root), {}) | state == roots.get(path_text(root)):
        return  # unchanged: don't add a store version per reconcile
    roots[path_text(root)] = {**roots.get(path_text(root), {}), **state}
    store.set_meta("roots", roots)
