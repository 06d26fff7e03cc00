"""The indexing pipeline as explicit stages joined by bounded queues.

    scan -> classify -> hash -> plan -> decode -> embed -> commit

Each stage is a generator that takes the previous stage's items. `run_stages` runs them sequentially (one thread,
as the tests do) or each in its own thread joined by bounded queues, so a slow stage applies back-pressure instead
of filling memory. Work that can be avoided is: unchanged files are never read, a content already embedded (exact
copy, move, rename) is never decoded, and the model is only loaded when something needs embedding.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dedupd.faults import fault_point
from dedupd.ingest.decode import Decoded, decoders
from dedupd.ingest.decode_pool import DecodeFn, DecodePool, Failed, decode_for_model
from dedupd.ingest.hashing import content_hash
from dedupd.store import OK, PENDING, UNREADABLE, FileRecord, FileStat, Store
from dedupd.store.schema import CONTENT_FACTS

log = logging.getLogger("dedupd")

Stage = Callable[[Iterable], Iterator]


@dataclass
class Work:
    record: FileRecord
    fresh: bool = True  # False: unchanged since the store last saw it
    carrier: bool = False  # this item carries its content's first decode and embed in this run
    image: object | None = None  # decoded pixels (PIL image or preprocessed arrays), dropped once embedded
    vector: np.ndarray | None = None


@dataclass
class Counters:
    seen: int = 0
    unchanged: int = 0
    hashed: int = 0
    decoded: int = 0
    embedded: int = 0
    unreadable: int = 0
    committed: int = 0
    new_contents: list[str] = field(default_factory=list)


# --- the runner --------------------------------------------------------------------------------------------------

_END = object()


def run_stages(
    source: Iterable,
    stages: Sequence[Stage],
    threaded: bool = True,
    maxsize: int = 256,
    tick: Callable[[], None] | None = None,
) -> Iterator:
    """Chain the stages; threaded, each runs in its own thread and an error in any of them is re-raised here.
    `tick` is called on the consuming thread whenever it waits, so a daemon keeps its watchdog fed during a long
    model batch."""
    if not threaded:
        items: Iterable = source
        for stage in stages:
            items = stage(items)
        return iter(items)
    return _threaded(source, stages, maxsize, tick)


def _threaded(source: Iterable, stages: Sequence[Stage], maxsize: int, tick: Callable[[], None] | None) -> Iterator:
    errors: list[BaseException] = []
    stop = threading.Event()
    queues: list[queue.Queue] = [queue.Queue(maxsize) for _ in range(len(stages) + 1)]
    threads = [threading.Thread(target=_feed, args=(source, queues[0], errors, stop), daemon=True)]
    for i, stage in enumerate(stages):
        args = (stage(_drain(queues[i], stop)), queues[i + 1], errors, stop)
        threads.append(threading.Thread(target=_feed, args=args, daemon=True, name=f"stage-{stage.__name__}"))
    for thread in threads:
        thread.start()
    try:
        yield from _drain(queues[-1], stop, tick)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
    if errors:
        raise errors[0]


def _feed(items: Iterable, out: queue.Queue, errors: list[BaseException], stop: threading.Event) -> None:
    try:
        for item in items:
            if not put_unless_stopped(out, item, stop):
                return
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread, which re-raises it
        errors.append(exc)
        stop.set()
    finally:
        put_unless_stopped(out, _END, stop)


def put_unless_stopped(out: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put into a bounded queue, waiting while it is full; False (nothing put) once `stop` is set, so a thread
    feeding a consumer that has gone never blocks for ever."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def _drain(source: queue.Queue, stop: threading.Event, tick: Callable[[], None] | None = None) -> Iterator:
    while True:
        try:
            item = source.get(timeout=0.2)
        except queue.Empty:
            if stop.is_set():
                return
            if tick is not None:
                tick()
            continue
        if item is _END:
            return
        yield item


# --- what is already known about contents ------------------------------------------------------------------------


@dataclass
class ContentInfo:
    status: str
    facts: dict = field(default_factory=dict)  # CONTENT_FACTS: size, format, capture
    error: str = ""
    decoder: str = ""  # an unreadable verdict's decoders: its copies carry them too

    @classmethod
    def of(cls, record: FileRecord) -> ContentInfo:
        return cls(record.status, facts_of(record), record.error, record.decoder)


def facts_of(record: FileRecord) -> dict:
    return {name: getattr(record, name) for name in CONTENT_FACTS}


class ContentBook:
    """Which contents are resolved (embedded or unreadable), in flight, or waiting on an in-flight twin."""

    def __init__(self, known: dict[str, ContentInfo]):
        self.known = known
        self.inflight: set[str] = set()
        self.followers: dict[str, list[FileRecord]] = {}
        self.lock = threading.Lock()

    @classmethod
    def from_store(cls, store: Store, model: str, decoder: str) -> ContentBook:
        """Unreadable verdicts reached otherwise than with `decoder` (decode.decoders) are left out, so those
        contents are tried again: newer decoding libraries or a higher pixel limit may read them now."""
        verdicts = [record for record in store.files().values() if content_verdict(record)]
        known = {r.content: ContentInfo.of(r) for r in verdicts if r.decoder == decoder}
        retried = {r.content for r in verdicts} - known.keys()
        if retried:
            log.info("%d unreadable contents are tried again with %s", len(retried), decoder)
        for content, facts in store.vector_facts(model).items():
            known[content] = ContentInfo(OK, facts)  # also for copies since removed: a return reuses them
        return cls(known)

    def claim(self, record: FileRecord) -> FileRecord | None:
        """Resolved record if the content is known; None if this record must carry (or wait for) the content."""
        with self.lock:
            info = self.known.get(record.content)
            if info is not None:
                return _apply(record, info)
            if record.content in self.inflight:
                self.followers.setdefault(record.content, []).append(record)
                return record  # marked pending: committed when its twin resolves
            self.inflight.add(record.content)
            return None

    def abandon(self) -> None:
        """A run ended by an error: its claims die with it. Without this a long-lived daemon would hold every content
        in flight at the error as claimed for ever, and each later file with one of those contents would wait on a
        carrier that never comes (never committed, never embedded). Their files are found again by the next walk."""
        with self.lock:
            self.inflight.clear()
            self.followers.clear()

    def resolve(self, record: FileRecord) -> list[FileRecord]:
        """Settle a content once its carrier is done; its waiting twins are returned, resolved alike, unless the
        carrier's outcome says nothing about the bytes (a stop, or an io error on that one path): then they stay
        pending and the next run carries the content again."""
        info = ContentInfo.of(record)
        with self.lock:
            self.inflight.discard(record.content)
            followers = self.followers.pop(record.content, [])
            if record.status == PENDING or path_only_failure(record):
                return followers
            self.known[record.content] = info
            return [_apply(f, info) for f in followers]


# The file was rewritten between its hash and its decode: nothing is known of either content; read it again.
CHANGED_WHILE_READ = "io error: changed while it was read (read again on the next scan)"


def content_verdict(record: FileRecord) -> bool:
    """An unreadable verdict about the content's bytes (not an io error of one path)."""
    return bool(record.content) and record.status == UNREADABLE and not path_only_failure(record)


def path_only_failure(record: FileRecord) -> bool:
    """An io error (vanished, became a FIFO, unreadable, rewritten while read) belongs to the path, not to the
    content's bytes."""
    return record.status == UNREADABLE and record.error.startswith("io error")


def _apply(record: FileRecord, info: ContentInfo) -> FileRecord:
    return replace(record, status=info.status, error=info.error, decoder=info.decoder, **info.facts)


# --- the stages ----------------------------------------------------------------------------------------------------


def classify(known: dict[bytes, FileRecord], book: ContentBook, counters: Counters) -> Stage:
    """Unchanged size, mtime_ns, inode and ctime_ns: not even re-hashed; and skipped outright when its content is
    resolved for this model (a model change re-embeds unchanged files without re-hashing them)."""

    def classify(entries: Iterable[FileStat]) -> Iterator[Work]:
        for entry in entries:
            counters.seen += 1
            old = known.get(entry.path)
            if entry.special:
                yield _not_regular(old, entry, counters)
            elif old and old.content and old.same_stat(entry.size, entry.mtime_ns, entry.inode, entry.ctime_ns):
                yield _unchanged(old, entry, book, counters)
            else:
                yield Work(FileRecord.at(entry))

    return classify


def _unchanged(old: FileRecord, entry: FileStat, book: ContentBook, counters: Counters) -> Work:
    record = replace(old, root=entry.root, device=entry.device)
    if old.status != PENDING and old.content in book.known:
        counters.unchanged += 1
        return Work(record, fresh=False)
    return Work(replace(record, status=PENDING, error="", decoder=""))


def _not_regular(old: FileRecord | None, entry: FileStat, counters: Counters) -> Work:
    """A FIFO, socket or device with an image name: recorded unreadable with why, never opened (reading a FIFO blocks
    for ever), and not written again while its stat is unchanged."""
    error = f"not a regular file ({entry.special})"
    if old and old.error == error and old.same_stat(entry.size, entry.mtime_ns, entry.inode):
        counters.unchanged += 1
        return Work(old, fresh=False)
    counters.unreadable += 1
    return Work(FileRecord.at(entry, status=UNREADABLE, error=error))


def hash_files(counters: Counters, threads: int = 1) -> Stage:
    """Content hashes, in order. With threads > 1 several files are read and hashed at once (hashlib and file
    reads release the GIL): one thread hashes ~700 MB/s, about 200 camera JPEGs a second, below what a GPU embeds."""

    def hash_files(items: Iterable[Work]) -> Iterator[Work]:
        for work, hashed in _ordered_map(_hashed, items, _needs_hash, threads):
            if hashed is False:
                continue  # vanished between the walk and the read
            if hashed and work.record.status != UNREADABLE:
                counters.hashed += 1  # counted here, on the stage's own thread, not in the pool's
            yield work

    return hash_files


def _needs_hash(work: Work) -> bool:
    return work.fresh and not work.record.content and work.record.status != UNREADABLE


def _hashed(work: Work) -> bool:
    """Fills in the content hash; False when the file vanished since the walk (nothing to index)."""
    try:
        work.record.content = content_hash(work.record.path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot read %s: %s", os.fsdecode(work.record.path), exc.strerror or exc)
        work.record.status, work.record.error = UNREADABLE, f"io error: {exc.strerror or exc}"
    return True


def _ordered_map(
    fn: Callable[[Work], bool], items: Iterable[Work], wanted: Callable[[Work], bool], threads: int
) -> Iterator[tuple[Work, bool | None]]:
    """(item, fn(item), or None where not wanted) in input order, at most `threads` calls at once and a bounded
    window of items in flight, so memory stays flat."""
    if threads <= 1:
        for item in items:
            yield item, fn(item) if wanted(item) else None
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="dedupd-hash") as pool:
        pending: deque[tuple[Work, Future | None]] = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item) if wanted(item) else None))
            if len(pending) > 4 * threads:
                yield _settled(*pending.popleft())
        while pending:
            yield _settled(*pending.popleft())


def _settled(item: Work, future: Future | None) -> tuple[Work, bool | None]:
    return item, None if future is None else future.result()


def plan(book: ContentBook, first_carrier: Callable[[], None] = lambda: None) -> Stage:
    """Decide per fresh file: reuse a known content, wait for an in-flight twin, or carry the content's embed.
    first_carrier is called once, as soon as one content needs embedding (the model starts loading then, while the
    rest is still being hashed and planned; a run that embeds nothing never calls it)."""

    def plan(items: Iterable[Work]) -> Iterator[Work]:
        announced = False
        for work in items:
            if not work.fresh or work.record.status == UNREADABLE:
                yield work
                continue
            resolved = book.claim(work.record)
            if resolved is None:
                if not announced:
                    first_carrier()
                    announced = True
                work.carrier = True
                yield work
            elif resolved.status != PENDING:
                yield Work(resolved)

    return plan


@dataclass
class DecodeSettings:
    draft_side: Callable[[], int | None]  # asked lazily: the model loads on the first file that needs it
    max_pixels: int
    spec: Callable[[], object | None] = lambda: None  # the model's preprocessing, run in the workers when known
    # Asked once the model is loaded (its device decides how many workers to start); None: decode inline.
    pool: Callable[[], DecodePool | None] = lambda: None
    decode: DecodeFn = decode_for_model  # what decodes inline, without a pool (the pool has its own)

    def decoder(self) -> str:
        return decoders(self.max_pixels)


def decode_images(settings: DecodeSettings, counters: Counters) -> Stage:
    def decode_images(items: Iterable[Work]) -> Iterator[Work]:
        items = iter(items)
        for work in items:
            if needs_decode(work):
                yield from _decode_from(itertools.chain([work], items), settings, counters)
                return
            yield work  # nothing decoded yet: no model loaded, no worker started

    return decode_images


def _decode_from(items: Iterator[Work], settings: DecodeSettings, counters: Counters) -> Iterator[Work]:
    _args(settings)  # loads the model first: the pool's size depends on the device it runs on
    pool = settings.pool()
    if pool is None:
        for work in items:
            if needs_decode(work):
                store_decoded(work, settings.decode(work.record.path, *_args(settings)), counters, settings.decoder())
            yield work
        return
    jobs = ((w, (w.record.path, *_args(settings)) if needs_decode(w) else None) for w in items)
    for work, result in pool.map(jobs):
        if result is not None:
            store_decoded(work, result, counters, settings.decoder())
        yield work


def needs_decode(work: Work) -> bool:
    return work.carrier and work.record.status != UNREADABLE


def _args(settings: DecodeSettings) -> tuple:
    return settings.draft_side(), settings.max_pixels, settings.spec()


def store_decoded(work: Work, result: Decoded | Failed, counters: Counters, decoder: str) -> bool:
    """The decoder's answer into the carrier's record; True when it holds a picture of the record's content. An
    unreadable verdict keeps `decoder`, what it was reached with (decode.decoders).

    A picture decoded from other bytes than the ones hashed (the file was rewritten in between) is no evidence
    about the hashed content: its vector would make the store pair that content with a picture it is not, and a
    purge trusts those pairs. So it is dropped, and the path (not the content) is marked to be read again."""
    record = work.record
    if _read_other_bytes(record, result):
        result = Failed(CHANGED_WHILE_READ)
    if isinstance(result, Failed):
        log.warning("unreadable image %s: %s", os.fsdecode(record.path), result.reason)
        record.status, record.error, record.decoder = UNREADABLE, result.reason, decoder
        counters.unreadable += 1
        return False
    work.image, record.width, record.height = result.image, result.width, result.height
    record.format, record.frames = result.format, result.frames
    for name, value in result.capture.to_dict().items():
        setattr(record, name, value)
    counters.decoded += 1
    return True


def _read_other_bytes(record: FileRecord, result: Decoded | Failed) -> bool:
    # A Decoded must name its bytes; a Failed names them when it read any (an io error belongs to the path anyway)
    if isinstance(result, Decoded) or result.content:
        return result.content != record.content
    return not result.reason.startswith("io error") and _not_the_hashed_bytes(record.path, record.content)


def _not_the_hashed_bytes(path: bytes, content: str) -> bool:
    """For a verdict that names no bytes (a decoder that died, a file refused by its size unread): does the file
    still hold what was hashed? Only the rare failure pays for this second hash. It cannot prove which bytes the
    decoder saw, but an unreadable verdict never removes a file: at worst a content stays out of every group."""
    try:
        return content_hash(path) != content
    except OSError:
        return True


def embed_images(
    embed: Callable[[list], np.ndarray],
    batch_size: int | Callable[[], int],
    counters: Counters,
    stop: threading.Event | None = None,
) -> Stage:
    """Batches for the model. Once `stop` is set, images pass through unembedded (left pending for the next run),
    so shutting down waits for at most the batch in flight. A callable batch_size is asked when the first image
    arrives (the model is loaded by then, and its devices decide it)."""

    def embed_images(items: Iterable[Work]) -> Iterator[Work]:
        batch: list[Work] = []
        size = 0
        for work in items:
            if work.image is None:
                yield work
                continue
            batch.append(work)
            size = size or (batch_size() if callable(batch_size) else batch_size)
            if len(batch) >= size:
                yield from _embed_batch(batch, embed, counters, stop)
                batch = []
        yield from _embed_batch(batch, embed, counters, stop)

    return embed_images


def _embed_batch(
    batch: list[Work], embed: Callable[[list], np.ndarray], counters: Counters, stop: threading.Event | None
) -> list[Work]:
    if stop is not None and stop.is_set():
        for work in batch:
            work.image = None
        return batch
    if not batch:
        return []
    vectors = embed([w.image for w in batch])
    for work, vector in zip(batch, vectors):
        work.vector, work.image = vector, None
        work.record.status = OK
    counters.embedded += len(batch)
    return batch


def stages_to_model(
    known: dict[bytes, FileRecord],
    book: ContentBook,
    counters: Counters,
    decode: DecodeSettings,
    model: Any,
    hash_threads: int = 1,
    stop: threading.Event | None = None,
    first_carrier: Callable[[], None] | None = None,
) -> list[Stage]:
    """Every stage up to and including the model, in order; a run appends commit(). `model` gives embed(items),
    batch_items() and start() (the indexer's LazyEmbedder); first_carrier defaults to model.start."""
    return [
        *stages_to_plan(known, book, counters, hash_threads, first_carrier or model.start),
        decode_images(decode, counters),
        embed_images(model.embed, model.batch_items, counters, stop),
    ]


def stages_to_plan(
    known: dict[bytes, FileRecord],
    book: ContentBook,
    counters: Counters,
    hash_threads: int = 1,
    first_carrier: Callable[[], None] = lambda: None,
) -> list[Stage]:
    """The stages before any decode: which files changed, their hashes, and which of them carry a new content.
    A bulk run on a cluster (dedupd.cluster) follows them with its own decode-and-embed stage."""
    return [classify(known, book, counters), hash_files(counters, hash_threads), plan(book, first_carrier)]


def commit(
    store: Store,
    model: str,
    book: ContentBook,
    every: int,
    counters: Counters,
    before_vectors: Callable[[], None] = lambda: None,
) -> Stage:
    """Vectors first, then file rows: a crash between the two leaves vectors a resumed run reuses, never rows
    pointing at a vector that does not exist. `before_vectors` runs before each vector commit (the pair finder
    records there that a search is owed)."""

    def commit(items: Iterable[Work]) -> Iterator[Work]:
        pending: list[Work] = []
        for work in items:
            pending.append(work)
            if len(pending) >= every:
                yield from _flush(pending, store, model, book, counters, before_vectors)
                pending = []
        yield from _flush(pending, store, model, book, counters, before_vectors)

    return commit


def _flush(
    pending: list[Work],
    store: Store,
    model: str,
    book: ContentBook,
    counters: Counters,
    before_vectors: Callable[[], None],
) -> list[Work]:
    carriers = [w for w in pending if w.carrier]
    embedded = [(w, w.vector) for w in carriers if w.vector is not None]
    if embedded:
        before_vectors()
        store.add_vectors(
            model,
            [w.record.content for w, _ in embedded],
            np.stack([vector for _, vector in embedded]),
            [facts_of(w.record) for w, _ in embedded],
        )
        fault_point("after-vectors")  # vectors stored, their file rows and the pair search not yet
        counters.new_contents.extend(w.record.content for w, _ in embedded)
    followers = [f for w in carriers for f in book.resolve(w.record)]
    records = [w.record for w in pending if w.fresh] + followers
    store.upsert_files(records)
    counters.committed += len(records)
    return pending + [Work(f) for f in followers]
