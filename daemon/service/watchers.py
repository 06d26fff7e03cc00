"""Watching photo roots for changes: backend choice, event coalescing and observer supervision.

Event handlers run on watchdog's threads and do nothing but enqueue a path into a `DirtyPaths`; every stat happens
later on the caller's thread in `DirtyPaths.settled()`. Paths are bytes everywhere (watchdog's str paths are
surrogate-escaped, so `os.fsencode` gives back the exact on-disk bytes of non-UTF-8 names).

How watchdog 7.1 reports trouble, and what we do about it:

* ENOSPC (per-user inotify watch limit): only a failure to watch the *root* raises, from ``observer.start()``. Watches
  for subdirectories that cannot be added, at start or later for new folders, are skipped silently. So after starting
  an inotify observer, and then every ``probe_interval`` seconds, we try to add one watch in a throw-away inotify
  instance (`inotify_probe`): ENOSPC there means the limit is used up and some folders may be unwatched, and the
  inotify roots are switched to polling.
* EMFILE (per-user inotify instance limit, 128 by default; each InotifyObserver uses one) raises from the
  ``InotifyObserver()`` constructor.
* Kernel queue overflow (IN_Q_OVERFLOW) is not delivered to event handlers at all: watchdog logs two warnings
  ("Inotify queue overflowed ...", from watchdog.observers.inotify_c and watchdog.observers.inotify) on its inotify
  reader thread, drops pending move pairs and re-adds all its watches, with no signal when done; changes made
  meanwhile are lost. We listen to those log records (`_WatchdogLogHook`), call `DirtyPaths.mark_overflow(root)` at
  once, and `Watchers.supervise` then replaces the observer by a fresh one and marks the root again, so the
  caller's reconcile starts after the new watches are in place. If watchdog logs that re-adding failed, the root is
  switched to polling.
* Deletion or replacement of the root stops the emitter thread; a crashed thread just stops. `Watchers.supervise`
  notices dead threads and restarts the root with polling.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from watchdog.observers.api import BaseObserver

from dedupd.paths import Ignore
from dedupd.service.dirty import DirtyPaths
from dedupd.service.mounts import Backend, choose_backend
from dedupd.service.observers import (
    ObserverFactory,
    RootHandler,
    inotify_failure,
    inotify_probe,
    make_observer,
    show_path,
    stop_observers,
)

log = logging.getLogger("dedupd")

# watchdog warns when a folder created during its recursive watch set-up gets its watch twice; harmless noise.
warnings.filterwarnings("ignore", message=r"Callback with id .* already exists for watch", category=RuntimeWarning)


# ====================================================================================================================
# inotify overflow detection
# ====================================================================================================================

_LOG_SOURCES = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


class _WatchdogLogHook(logging.Handler):
    """Turns watchdog's inotify overflow warnings into `mark_overflow` calls (watchdog has no event for them).

    The records are logged on the observer's inotify reader thread, which maps them to a root; failing that, a path
    argument naming a root. An overflow that cannot be placed marks every inotify root: a reconcile too many is
    cheap next to a missed deletion.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.watchers: weakref.WeakSet[Watchers] = weakref.WeakSet()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = str(record.msg).lower()
            overflow = "overflow" in text
            rebuild_failed = "unable to rebuild" in text
            if not (overflow or rebuild_failed):
                return
            args = record.args if isinstance(record.args, tuple) else ()
            paths = {a if isinstance(a, bytes) else os.fsencode(a) for a in args if isinstance(a, (bytes, str))}
            for watchers in list(self.watchers):
                watchers._on_watchdog_trouble(record.thread, paths, rebuild_failed)
        except Exception:  # noqa: BLE001 - logging must never raise into watchdog's reader thread
            self.handleError(record)


_hook = _WatchdogLogHook()
_hook_lock = threading.Lock()
_hook_installed = False


def _register(watchers: Watchers) -> None:
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:
            for name in _LOG_SOURCES:
                logger = logging.getLogger(name)
                logger.addHandler(_hook)
                if logger.getEffectiveLevel() > logging.WARNING:
                    logger.setLevel(logging.WARNING)  # a silenced overflow warning would be a missed overflow
            _hook_installed = True
        _hook.watchers.add(watchers)


def _unregister(watchers: Watchers) -> None:
    with _hook_lock:
        _hook.watchers.discard(watchers)


# ====================================================================================================================
# Watchers
# ====================================================================================================================


@dataclass
class _Root:
    root: bytes
    backend: Backend
    observer: BaseObserver | None = None
    fallback: str | None = None  # why this root polls instead of its chosen backend; sticks until remove_root
    degraded: str | None = None  # None: running as chosen
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the root when its inotify watch started
    retry_at: float = 0.0  # when a root without an observer (offline) is tried again


class Watchers:
    """One watchdog observer per root; handlers only enqueue into a DirtyPaths. No sleeping or heavy work on
    observer threads. The methods are for one (the main) thread; only the handlers run on watchdog's threads.

    Keyword-only extras: ``observer_factory`` (kind -> unstarted observer; the seam tests use to make inotify
    fail), ``inotify_probe`` (path -> None or OSError; None disables the watch-limit probe), ``probe_interval``
    (seconds between watch-limit probes in supervise), ``max_backlog`` (beyond this many dirty paths, events
    only mark their root for a full reconcile), ``clock``.
    """

    RETRY_SECONDS = 5.0  # a root that cannot be watched (offline, missing) is retried this often by supervise
    STOP_TIMEOUT = 5.0

    def __init__(
        self,
        dirty: DirtyPaths,
        mode: str = "auto",
        poll_interval: float = 30.0,
        ignore: Sequence[str | bytes] = (),
        *,
        observer_factory: ObserverFactory | None = None,
        inotify_probe: Callable[[bytes], None] | None = inotify_probe,
        probe_interval: float = 60.0,
        max_backlog: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("auto", "inotify", "poll"):
            raise ValueError(f"watch mode must be auto, inotify or poll, not {mode!r}")
        self.dirty = dirty
        self.mode = mode
        self.poll_interval = poll_interval
        self.ignore = tuple(ignore)
        self._skip = Ignore.of(self.ignore)
        self._factory = observer_factory or (
            lambda kind: make_observer(kind, poll_interval=self.poll_interval, ignore=self.ignore)
        )
        self._probe = inotify_probe
        self.probe_interval = probe_interval
        self.max_backlog = max_backlog
        self._clock = clock
        self._lock = threading.RLock()  # main-thread operations; never taken on watchdog's threads
        self._roots: dict[bytes, _Root] = {}
        self._reader_threads: dict[int, bytes] = {}  # inotify reader thread ident -> root, for the log hook
        self._retired_readers: set[int] = set()  # reader threads of observers we stopped: their records are stale
        self._trouble: dict[bytes, str] = {}  # root -> reason, set by the log hook, acted on by supervise
        self._overflowed: set[bytes] = set()  # inotify roots whose queue overflowed: re-watched by supervise
        self._next_probe = 0.0
        self._closed = False
        _register(self)

    # --- public ------------------------------------------------------------------------------------------------------

    def add_root(self, root: bytes) -> Backend:
        """Start watching ``root`` recursively. Never raises for an unusable root: inotify trouble falls back to
        polling (logged, reported degraded), and a root that cannot be watched at all (offline, missing) is
        reported degraded and retried by supervise."""
        with self._lock:
            if self._closed:
                raise RuntimeError("Watchers.add_root after stop()")
            if root in self._roots:
                return self._roots[root].backend
            state = _Root(root, choose_backend(root, self.mode))
            self._roots[root] = state
            self._start(state)
        return state.backend

    def remove_root(self, root: bytes) -> None:
        with self._lock:
            state = self._roots.pop(root, None)
            self._trouble.pop(root, None)
            self._overflowed.discard(root)
            observer = state.observer if state is not None else None
            if observer is not None:
                self._forget_reader(observer)
        if observer is not None:
            stop_observers([observer], self.STOP_TIMEOUT)

    def backends(self) -> dict[bytes, Backend]:
        with self._lock:
            return {r: s.backend for r, s in self._roots.items()}

    def supervise(self) -> dict[bytes, str]:
        """Restart dead watchers as polling, re-watch overflowed roots, retry offline roots and probe the inotify
        watch limit (every probe_interval); then "ok" or "degraded: <reason>" per root. Cheap enough for every
        main-loop tick, and meant to run once per tick: it acts, so a second call is not a free read."""
        with self._lock:
            if not self._closed:
                now = self._clock()
                self._check_watch_limit(now)
                for root, state in list(self._roots.items()):
                    reason = self._trouble.pop(root, None) or self._dead_reason(state)
                    overflowed = root in self._overflowed
                    self._overflowed.discard(root)
                    if reason is not None:
                        self._switch_to_polling(state, reason)
                    elif overflowed and state.observer is not None and state.backend.kind == "inotify":
                        self._rewatch_after_overflow(state)
                    elif state.observer is None and now >= state.retry_at:
                        self._start(state)
                        if state.observer is not None:
                            log.info(
                                "watch %s: watching with %s (%s)",
                                show_path(root),
                                state.backend.kind,
                                state.backend.reason,
                            )
                            self.dirty.mark_overflow(root)  # changes while it was unwatched
            return {r: "ok" if s.degraded is None else f"degraded: {s.degraded}" for r, s in self._roots.items()}

    def stop(self, timeout: float | None = None) -> None:
        """Stop and join every observer, all together within ``timeout`` (default STOP_TIMEOUT) seconds."""
        with self._lock:
            self._closed = True
            observers = [s.observer for s in self._roots.values() if s.observer is not None]
            for state in self._roots.values():
                state.observer = None
            self._reader_threads.clear()
        _unregister(self)
        stop_observers(observers, self.STOP_TIMEOUT if timeout is None else timeout)

    # --- starting ----------------------------------------------------------------------------------------------------

    def _start(self, state: _Root) -> None:
        """Start ``state.root`` with its chosen backend, or with polling once it has a fallback reason."""
        root = state.root
        state.observer = None
        if state.fallback is None:
            state.backend, state.degraded = choose_backend(root, self.mode), None
            if state.backend.kind == "inotify":
                try:
                    state.identity = _identity(root)
                    state.observer = self._start_observer("inotify", root)
                    self._probe_now(root)
                    return
                except Exception as exc:  # noqa: BLE001 - OSError, or a libc without inotify
                    if state.observer is not None:
                        self._forget_reader(state.observer)
                        stop_observers([state.observer], self.STOP_TIMEOUT)
                        state.observer = None
                    if isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                        self._unavailable(state, exc)
                        return
                    state.fallback = inotify_failure(exc)
                    log.warning(
                        "watch %s: %s; falling back to polling every %gs%s",
                        show_path(root),
                        state.fallback,
                        self.poll_interval,
                        " (raise fs.inotify.max_user_watches)" if _errno(exc) == errno.ENOSPC else "",
                    )
        if state.fallback is not None:
            state.backend, state.degraded = Backend("poll", state.fallback), state.fallback
        state.identity = None
        try:
            state.observer = self._start_observer("poll", root)
        except OSError as exc:
            self._unavailable(state, exc)

    def _start_observer(self, kind: str, root: bytes) -> BaseObserver:
        observer = self._factory(kind)
        try:
            observer.schedule(
                RootHandler(root, self.dirty, self._skip, self.max_backlog), os.fsdecode(root), recursive=True
            )
            observer.start()
        except BaseException:
            stop_observers([observer], self.STOP_TIMEOUT)
            raise
        reader = getattr(observer, "_inotify_fd", None)  # watchdog's inotify reader thread (overflow log records)
        if isinstance(reader, threading.Thread) and reader.ident is not None:
            self._reader_threads[reader.ident] = root
        return observer

    def _probe_now(self, root: bytes) -> None:
        if self._probe is None:
            return
        try:
            self._probe(root)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise  # the tree used up the watch limit: some of its folders are unwatched
            # anything else (EMFILE for the probe's own instance, a vanished root) says nothing about coverage
        self._next_probe = self._clock() + self.probe_interval

    def _unavailable(self, state: _Root, exc: OSError) -> None:
        state.observer = None
        unavailable = f"root unavailable: {exc.strerror or exc}"
        state.degraded = f"{state.fallback}; {unavailable}" if state.fallback else unavailable
        state.retry_at = self._clock() + self.RETRY_SECONDS
        log.warning("watch %s: cannot watch: %s; retrying every %gs", show_path(state.root), exc, self.RETRY_SECONDS)

    # --- health ------------------------------------------------------------------------------------------------------

    def _dead_reason(self, state: _Root) -> str | None:
        observer = state.observer
        if observer is None:
            return None
        kind = state.backend.kind
        if not observer.is_alive():
            return f"{kind} observer thread died"
        emitters = list(observer.emitters)
        if not emitters or not all(e.is_alive() for e in emitters):
            return f"{kind} watch stopped (root deleted, moved or unmounted?)"
        reader = getattr(observer, "_inotify_fd", None)
        if isinstance(reader, threading.Thread) and not reader.is_alive():
            return "inotify reader thread died"
        if state.identity is not None:
            try:
                identity = _identity(state.root)
            except OSError:
                identity = None
            if identity != state.identity:
                return "root replaced or unmounted under its inotify watch"
        return None

    def _check_watch_limit(self, now: float) -> None:
        if self._probe is None or now < self._next_probe:
            return
        self._next_probe = now + self.probe_interval
        watched = [s for s in self._roots.values() if s.backend.kind == "inotify" and s.observer is not None]
        if not watched:
            return
        try:
            self._probe(watched[0].root)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                # Folders created since the start may be unwatched, and we cannot tell which: poll them all.
                for state in watched:
                    self._trouble.setdefault(state.root, "inotify watch limit reached (ENOSPC)")

    def _rewatch_after_overflow(self, state: _Root) -> None:
        """watchdog re-adds its watches itself after an overflow, but changes made while it does so are lost, and
        nothing tells us when it is done. So: a fresh observer (fully watching once start() returns), and only
        then another mark_overflow, so the caller's reconcile starts after the new watches are in place."""
        log.warning(
            "watch %s: inotify queue overflowed, events were lost; re-watching, the root will be reconciled",
            show_path(state.root),
        )
        self._forget_reader(state.observer)
        stop_observers([state.observer], self.STOP_TIMEOUT)  # waits for watchdog's own re-watch to finish
        self._overflowed.discard(state.root)  # a second record of the same overflow may have come meanwhile
        self._start(state)
        self.dirty.mark_overflow(state.root)

    def _switch_to_polling(self, state: _Root, reason: str) -> None:
        """Replace a dead or untrustworthy watcher by polling. A root that polled by choice just polls again (and is
        "ok" once that works); one that had inotify keeps polling, reported degraded, until remove_root."""
        polled_by_choice = state.backend.kind == "poll" and state.fallback is None
        log.warning(
            "watch %s: %s; %s every %gs",
            show_path(state.root),
            reason,
            "restarting polling" if polled_by_choice else "switching to polling",
            self.poll_interval,
        )
        if state.observer is not None:
            self._forget_reader(state.observer)
            stop_observers([state.observer], 1.0)
            state.observer = None
        if not polled_by_choice:
            state.fallback = reason
        self.dirty.mark_overflow(state.root)  # whatever happened while nobody was watching
        self._start(state)

    # --- called by the log hook on watchdog's inotify reader thread: no locks of ours, no I/O -------------------------

    def _on_watchdog_trouble(self, thread: int | None, paths: set[bytes], rebuild_failed: bool) -> None:
        roots = dict(self._roots)
        root = self._reader_threads.get(thread) if thread is not None else None
        if root is None and thread in self._retired_readers:
            return  # an observer we already replaced
        if root is not None:
            hits = [root]
        else:
            hits = [p for p in paths if p in roots]
            if not hits and not self._reader_threads:
                # Cannot tell whose reader thread this is: every inotify root may have lost events.
                hits = [r for r, s in roots.items() if s.backend.kind == "inotify" and s.observer is not None]
        for root in hits:
            self.dirty.mark_overflow(root)  # at once; supervise re-watches the root and marks it again
            if rebuild_failed:
                self._trouble[root] = "inotify watches could not be rebuilt after a queue overflow"
            else:
                self._overflowed.add(root)

    def _forget_reader(self, observer: BaseObserver | None) -> None:
        reader = getattr(observer, "_inotify_fd", None)
        if isinstance(reader, threading.Thread) and reader.ident is not None:
            self._reader_threads.pop(reader.ident, None)
            self._retired_readers.add(reader.ident)


def _errno(exc: BaseException) -> int | None:
    return exc.errno if isinstance(exc, OSError) else None


def _identity(root: bytes) -> tuple[int, int]:
    st = os.stat(root)
    return (st.st_dev, st.st_ino)
