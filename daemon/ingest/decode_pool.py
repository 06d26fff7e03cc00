"""Decode workers: separate processes that turn files into model-ready pixels.

Processes, not threads: Pillow's decoders and the resize/normalise steps hold the GIL for long stretches, and a
crash in a C decoder (a hostile file) must not take the service down. The forkserver start method is used because
the service already runs threads (watchers, pipeline stages), and forking a threaded process is unsafe.

Results come back in submission order through a bounded window, so memory stays flat and the pipeline's order
(and therefore every test's) does not depend on which worker is faster.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

from dedupd.ingest.decode import Decoded, DecodeError, decode, register_plugins


@dataclass
class Failed:
    reason: str
    content: str = ""  # the hash of the bytes the reason is about; "" when none were read (the path failed)


def decode_for_model(path: bytes, draft_side: int | None, max_pixels: int, spec: Any = None) -> Decoded | Failed:
    """Runs in a worker (or inline): decode, and preprocess when the model's spec is given."""
    try:
        decoded = decode(path, draft_side=draft_side, max_pixels=max_pixels)
    except DecodeError as exc:
        return Failed(exc.reason, exc.content)
    if spec is None:
        return decoded
    from dedupd.ingest.preprocess import preprocess

    return replace(decoded, image=preprocess(decoded.image, spec))


# What a decode worker runs per file: decode_for_model, or a stand-in with its signature. A seam, because no real
# file reliably kills a decoder process, and the retry and blame paths for one that does (here and on a Ray cluster)
# must still be tested. It is pickled by reference (forkserver workers import it) or, on Ray, as cloudpickle does.
DecodeFn = Callable[[bytes, int | None, int, Any], Decoded | Failed]


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0))


def default_workers(cores: int | None = None, model_on_cpu: bool = False) -> int:
    """Decode processes. With the model on a GPU, decoding is the bottleneck: every core but one (kept for hashing,
    feeding the GPU and the store). With the model on the CPU, half the cores and at least two (one on a single
    core): real photos can cost more to decode than a fast model takes to embed them (a 16 MP WebP ~0.48 core-s, a
    PNG ~0.1, a drafted 12 MP JPEG 0.035, against 0.05-0.08 for the fast preset), and a worker takes a core only
    while it is ahead of the model. On 2 cores, 2 workers beside 2 torch threads ran real wallpapers 1.5x faster than
    1 worker did, and camera JPEGs within 3% of it (BENCHMARKS.md section 9)."""
    cores = cores or cpu_cores()
    if not model_on_cpu:
        return max(1, cores - 1)
    return 1 if cores < 2 else max(2, cores // 2)


def hash_threads(cores: int | None = None) -> int:
    """Files hashed at once in the main process: enough to keep up with a GPU (one thread hashes ~700 MB/s), few
    enough that a spinning disk is not sent seeking between many files."""
    return max(1, min(4, cores or cpu_cores()))


def split_cores(
    model_on_cpu: bool, workers: int | None = None, threads: int | None = None, cores: int | None = None
) -> tuple[int, int | None]:
    """(decode workers, torch threads) for a run: the configured values where set, else the defaults above; threads
    None leaves torch's own choice (a model on a GPU barely uses them)."""
    workers = default_workers(cores, model_on_cpu) if workers is None else workers
    return workers, threads or (model_threads(cores) if model_on_cpu else None)


def model_threads(cores: int | None = None) -> int:
    """torch threads for a model on the CPU: every core. The decode workers share them, but only while they are
    ahead of the model; fewer threads starve the model whenever decoding is cheap (on 2 cores 1 thread halves the
    model's rate, and 2 workers + 1 thread ran camera JPEGs 9% slower than 1 worker + 2 threads: measured)."""
    return cores or cpu_cores()


def _exit_with(owner: int) -> None:
    """Worker initializer: the worker ends when the process that owns the pool dies. Killed with SIGKILL, the owner
    never sends the shutdown message, and the workers (and through them the forkserver and the resource tracker,
    which live until the last worker goes) would otherwise wait on their queue for ever."""
    try:
        pidfd = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):
        pidfd = None  # no pidfd here: poll the pid instead

    def watch() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])  # readable once the owner has exited
            os._exit(0)
        while True:
            time.sleep(1.0)
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="dedupd-owner-watch", daemon=True).start()


def _warm() -> None:
    from dedupd.ingest import preprocess  # noqa: F401 - imported here so the first real job does not pay for it

    register_plugins()


class DecodePool:
    """Ordered, bounded parallel decoding; a worker that dies costs only the file it was decoding."""

    def __init__(self, workers: int, window: int | None = None, decode: DecodeFn = decode_for_model):
        self.workers = workers
        self.window = window or workers * 8
        self.decode = decode
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)
            )
        return self._pool

    def map(self, jobs: Iterable[tuple[Any, tuple | None]]) -> Iterator[tuple[Any, Decoded | Failed | None]]:
        """jobs: (tag, args for the decode function, or None to pass the tag through); yields (tag, result) in order."""
        pending: deque[tuple[Any, Future | None, tuple | None]] = deque()
        for tag, args in jobs:
            future = self._executor().submit(self.decode, *args) if args is not None else None
            pending.append((tag, future, args))
            while len(pending) > self.window:
                yield self._result(*pending.popleft())
        while pending:
            yield self._result(*pending.popleft())

    def _result(self, tag: Any, future: Future | None, args: tuple | None) -> tuple[Any, Decoded | Failed | None]:
        if future is None:
            return tag, None
        try:
            return tag, future.result()
        except BrokenProcessPool:
            # One file killed its worker and broke every future in flight: retry each on fresh workers, so only
            # the file that kills a worker twice is given up on.
            self.close()
            assert args is not None  # a job with a future always has its args
            try:
                return tag, self._executor().submit(self.decode, *args).result()
            except BrokenProcessPool:
                self.close()
                return tag, Failed("decoder process died (corrupt or hostile file)")

    def warm(self, wait: bool = False) -> None:
        """Start every worker and import the decoders there now (a fresh worker costs ~0.5 s of imports), without
        waiting unless asked: the first files then find them ready. A pool already running is left alone (the
        daemon keeps its workers between event batches)."""
        if self._pool is not None:
            return
        executor = self._executor()
        futures = [executor.submit(_warm) for _ in range(self.workers * 2)]
        if wait:
            for future in futures:
                future.result()

    def close(self) -> None:
        """Cancel what has not started, and wait for the workers to end. Not waiting raced the interpreter's exit on
        Python 3.11: a run that failed early (a model that would not load while the workers were still warming up)
        ended its one-line error with a traceback from concurrent.futures' exit hook (seen once in CI, under load)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
