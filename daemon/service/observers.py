"""watchdog observers for one root: the factory, the event handler that only enqueues, the inotify watch-limit
probe, and stopping observers without waiting on a slow share."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from dedupd.paths import Ignore
from dedupd.service.dirty import DirtyPaths

log = logging.getLogger("dedupd")


def show_path(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


# ====================================================================================================================
# A stoppable thread
# ====================================================================================================================


class StoppableThread(threading.Thread):
    """A daemon thread that can be asked to stop, and that waits with `wait()` instead of sleeping.

    ``StoppableThread(fn, name=...)`` runs ``fn()`` once; with ``interval=`` it runs ``fn()`` every ``interval``
    seconds until `stop()`. Subclasses may instead override `run()` and loop ``while not self.wait(t): ...``.
    An exception from ``fn`` is logged; a periodic thread keeps going.
    """

    def __init__(
        self,
        target: Callable[[], object] | None = None,
        *,
        name: str | None = None,
        interval: float | None = None,
        daemon: bool = True,
    ) -> None:
        super().__init__(name=name, daemon=daemon)
        self._halt = threading.Event()
        self._fn = target
        self._interval = interval

    def stop(self) -> None:
        """Ask the thread to stop; returns at once."""
        self._halt.set()

    def stopped(self) -> bool:
        return self._halt.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on `stop()`; True when stopping."""
        return self._halt.wait(timeout)

    def stop_and_join(self, timeout: float | None = None) -> bool:
        """Stop, wait up to ``timeout`` for the thread to end; True when it has ended."""
        self.stop()
        if self.is_alive():
            self.join(timeout)
        return not self.is_alive()

    def run(self) -> None:
        if self._fn is None:
            return
        while not self._halt.is_set():
            try:
                self._fn()
            except Exception:  # noqa: BLE001 - a background thread must not vanish silently
                log.exception("thread %s: unhandled error", self.name)
            if self._interval is None or self._halt.wait(self._interval):
                return


# ====================================================================================================================
# Observers and the event handler
# ====================================================================================================================

ObserverFactory = Callable[[str], BaseObserver]
"""(kind "inotify" | "poll") -> an unstarted watchdog observer. The seam tests use to make inotify fail."""


def make_observer(kind: str, *, poll_interval: float = 30.0, ignore: Sequence[str | bytes] = ()) -> BaseObserver:
    """A fresh watchdog observer. Polling uses lstat (symlinks are not followed, so no loops) and never lists
    folders whose name matches ``ignore`` (Synology @eaDir holds several thumbnails per photo)."""
    if kind == "inotify":
        from watchdog.observers.inotify import InotifyObserver  # raises on a libc without inotify

        return InotifyObserver()
    if kind != "poll":
        raise ValueError(f"unknown observer kind {kind!r}")
    skip = Ignore.of(ignore)

    def listdir(path):
        with os.scandir(path) as it:
            return iter([e for e in it if not skip.name(os.fsencode(e.name))])

    return PollingObserverVFS(os.lstat, listdir, polling_interval=poll_interval)


_MARKED = frozenset({"created", "modified", "closed", "deleted", "moved", "attrib"})


class RootHandler(FileSystemEventHandler):
    """Runs on watchdog's dispatcher thread: filters and enqueues, no I/O, never raises."""

    def __init__(self, root: bytes, dirty: DirtyPaths, ignore: Ignore, max_backlog: int) -> None:
        self.root = root
        self.prefix = root.rstrip(b"/") + b"/"
        self.dirty = dirty
        self.ignore = ignore
        self.max_backlog = max_backlog

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:  # noqa: BLE001 - an exception here would kill the observer thread
            log.exception("watch %s: cannot handle %r", show_path(self.root), event)

    def _handle(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind not in _MARKED or event.is_synthetic:
            # opened / closed-no-write (our own reads!) carry no change; synthetic events are the contents of a
            # created or moved folder, which is itself marked and rescanned by the caller.
            return
        if event.is_directory and kind in ("modified", "attrib"):
            return  # a folder's own entry list changed: its entries get events of their own
        self._mark(event.src_path)
        if kind == "moved":
            self._mark(event.dest_path)

    def _mark(self, path: bytes | str) -> None:
        if not path:
            return
        path = path if isinstance(path, bytes) else os.fsencode(path)
        if path == self.root or path + b"/" == self.prefix:
            self.dirty.mark_overflow(self.root)  # the root itself deleted or moved: reconcile (it handles offline)
            return
        if self.ignore.below(path, self.root):
            return
        if self.max_backlog and len(self.dirty) >= self.max_backlog:
            self.dirty.mark_overflow(self.root)  # event storm: one full reconcile instead of unbounded memory
        else:
            self.dirty.mark(path)


# ====================================================================================================================
# inotify probing and overflow detection
# ====================================================================================================================

_IN_CREATE = 0x00000100
_IN_ONLYDIR = 0x01000000
_libc_lock = threading.Lock()
_libc = None


def _inotify_libc():
    global _libc
    with _libc_lock:
        if _libc is None:
            libc = ctypes.CDLL(None, use_errno=True)
            if not hasattr(libc, "inotify_init1"):
                raise OSError(errno.ENOSYS, "no inotify in this C library")
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_init1.restype = ctypes.c_int
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            libc.inotify_add_watch.restype = ctypes.c_int
            _libc = libc
        return _libc


def inotify_probe(path: bytes) -> None:
    """Add (and drop) one inotify watch on ``path`` in a fresh instance. Raises OSError: ENOSPC when the per-user
    watch limit (fs.inotify.max_user_watches) is used up, EMFILE when the instance limit is."""
    libc = _inotify_libc()
    fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    try:
        if libc.inotify_add_watch(fd, path, _IN_CREATE | _IN_ONLYDIR) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(path))
    finally:
        os.close(fd)  # closing the instance frees its watch


def inotify_failure(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "inotify watch limit reached (ENOSPC)"
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return "inotify instance limit reached (EMFILE)"
    return f"inotify failed: {exc}"


def stop_observers(observers: Sequence[BaseObserver], timeout: float) -> None:
    """Stop observers in parallel; give up waiting after ``timeout`` seconds (their threads are daemons).

    ``observer.stop()`` itself joins the emitters, which for a polling emitter means waiting for a directory walk
    that may take long on a slow share: hence a helper thread each.
    """

    def stopper(observer: BaseObserver) -> Callable[[], None]:
        def run() -> None:
            with contextlib.suppress(Exception):
                observer.stop()
            if observer.is_alive():
                with contextlib.suppress(RuntimeError):
                    observer.join()

        return run

    threads = [StoppableThread(stopper(o), name="dedupd-watch-stop") for o in observers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    if stuck:
        log.warning("%d watcher(s) did not stop within %gs; leaving them behind", stuck, timeout)
