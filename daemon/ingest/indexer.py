"""Indexing shared by `scan` and the daemon: run the pipeline over some files, drop what is gone, keep pairs current.

An `Indexer` holds what stays valid between runs (which contents are resolved, the live FAISS index, the store's
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
from dedupd.ingest.decode_pool import DecodePool, hash_threads
from dedupd.ingest.walk import INTERNAL_IGNORE, NAS_IGNORE, FileEntry, ScanOptions
from dedupd.ingest.walk import scan as walk
from dedupd.model.loader import LazyEmbedder
from dedupd.paths import is_image_name, normalise_root, path_text, text_path
from dedupd.store import FileRecord, Store


@dataclass
class IndexResult:
    counters: pipeline.Counters
    removed: int = 0
    pairs: int = 0
    offline: str = ""  # why the root was marked offline instead of swept ("" = it was swept)


def scan_options(config: Config, store: Store) -> ScanOptions:
    excluded = [os.fsencode(os.path.realpath(store.path))]
    if config.purge.trash_dir:
        excluded.append(normalise_root(config.purge.trash_dir))
    return ScanOptions(
        ignore=(*NAS_IGNORE, *INTERNAL_IGNORE, *config.scan.ignore),
        follow_symlinks=config.scan.follow_symlinks,
        exclude_dirs=tuple(excluded),
    )


class Indexer:
    def __init__(self, store: Store, config: Config, embedder: LazyEmbedder, threaded: bool = True):
        self.store, self.config, self.embedder, self.threaded = store, config, embedder, threaded
        self.model = embedder.model_id
        self.book = pipeline.ContentBook.from_store(store, self.model)
        self.pairs = PairFinder(store, self.model, config.dedup)
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
        known = {p for p, f in self.files.items() if f.root == root}
        entries = list(walk([root], self.options)) if os.path.isdir(root) else []
        reason = self._vanished(root, len(known), entries, known) if guard else ""
        if reason:
            mark_root(self.store, root, state="offline", reason=reason)
            return IndexResult(pipeline.Counters(), offline=reason)
        seen = {e.path for e in entries}
        result = self.index(entries, gone=[p for p in known if p not in seen])
        mark_root(self.store, root, state="online", reason="", last_scan=time.time())
        return result

    def _vanished(self, root: bytes, known: int, entries: list[FileEntry], known_paths: set[bytes]) -> str:
        if not os.path.isdir(root):
            return "root is missing or unmounted"
        if known and not entries:
            return "root is suddenly empty"
        lost = len(known_paths - {e.path for e in entries})
        if known and lost / known > self.config.watch.max_vanish_fraction:
            return f"{lost} of {known} files vanished at once (more than watch.max_vanish_fraction)"
        return ""

    # --- some paths ------------------------------------------------------------------------------------------------

    def refresh_paths(self, root: bytes, paths: Iterable[bytes]) -> IndexResult:
        """Event-driven: each dirty path is a new/changed file, a directory to rescan, or something gone."""
        paths = list(paths)
        entries = [e for path in paths for e in self._entries_at(root, path)]
        seen = {e.path for e in entries}
        return self.index(entries, [p for p in self.known_under(paths) if p not in seen])

    def _entries_at(self, root: bytes, path: bytes) -> list[FileEntry]:
        if self._ignored(path, root):
            return []  # a folder inside @eaDir, #recycle...: the walk below would not skip the folder it starts in
        if os.path.isdir(path) and not os.path.islink(path):
            return [replace(e, root=root) for e in walk([path], self.options) if _inside(e.path, root)]
        entry = _file_entry(root, path)
        return [entry] if entry else []

    def _ignored(self, path: bytes, root: bytes) -> bool:
        import fnmatch

        parts = os.path.relpath(path, root).split(b"/")
        patterns = [p.encode() for p in self.options.ignore]
        return any(fnmatch.fnmatchcase(part, pat) for part in parts for pat in patterns)

    def known_under(self, paths: Iterable[bytes]) -> list[bytes]:
        """Known files equal to or below any of the paths, in one pass over the known files (not one per path:
        a burst of events against a big library would otherwise cost paths x files)."""
        dirty = {p.rstrip(b"/") for p in paths}
        return [known for known in self.files if _has_ancestor_in(known, dirty)]

    # --- the pipeline run ----------------------------------------------------------------------------------------

    def index(self, entries: Iterable[FileEntry], gone: Iterable[bytes] = ()) -> IndexResult:
        counters = pipeline.Counters()
        stages = self._stages(counters)
        for work in pipeline.run_stages(self._source(entries), stages, threaded=self.threaded, tick=self.on_tick):
            self.files[work.record.path] = work.record
            if self.on_item:
                self.on_item(counters)
        gone = [p for p in dict.fromkeys(gone) if p in self.files]
        self.store.delete_files(gone)
        for path in gone:
            del self.files[path]
        pairs = self.pairs.update(counters.new_contents)
        self.store.maybe_compact()
        return IndexResult(counters, removed=len(gone), pairs=pairs)

    def _source(self, entries: Iterable[FileEntry]) -> Iterator[FileEntry]:
        for entry in entries:
            if self.stop.is_set():
                return
            yield entry

    def _decode_settings(self) -> pipeline.DecodeSettings:
        return pipeline.DecodeSettings(
            self.embedder.draft_side, self.config.scan.max_pixels, self.embedder.preprocess_spec, self._pool
        )

    def _pool(self) -> DecodePool | None:
        """Started on first use and kept: the daemon's event batches reuse warm workers. Sequential runs (tests)
        decode inline unless scan.decode_workers asks for workers."""
        if not self.threaded and self.config.scan.decode_workers is None:
            return None
        workers = self.embedder.decode_workers()
        if workers and self.pool is None:
            self.pool = DecodePool(workers)
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _stages(self, counters: pipeline.Counters) -> list:
        threads = hash_threads() if self.threaded else 1
        if self.to_model is not None:
            to_model = [*pipeline.stages_to_plan(self.files, self.book, counters, threads), self.to_model(counters)]
        else:
            to_model = pipeline.stages_to_model(
                self.files, self.book, counters, self._decode_settings(), self.embedder, threads, self.stop
            )
        return [*to_model, pipeline.commit(self.store, self.model, self.book, self.config.scan.commit_every, counters)]


def _file_entry(root: bytes, path: bytes) -> FileEntry | None:
    import stat

    if not is_image_name(os.path.basename(path)) or not _inside(path, root):
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileEntry.from_stat(path, root, st)


def _has_ancestor_in(path: bytes, candidates: set[bytes]) -> bool:
    while path:
        if path in candidates:
            return True
        path, sep, _ = path.rpartition(b"/")
        if not sep:
            return False
    return False


def _inside(path: bytes, root: bytes) -> bool:
    return path.startswith(root.rstrip(b"/") + b"/")


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
