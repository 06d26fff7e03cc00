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
  once, and `Watchers.check_health` then replaces the observer by a fresh one and marks the root again, so the
  caller's reconcile starts after the new watches are in place. If watchdog logs that re-adding failed, the root is
  switched to polling.
* Deletion or replacement of the root stops the emitter thread; a crashed thread just stops. `Watchers.check_health`
  notices dead threads and restarts the root with polling.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

__all__ = [
    "Backend",
    "DirtyPaths",
    "ObserverFactory",
    "REMOTE_FSTYPES",
    "StoppableThread",
    "Watchers",
    "choose_backend",
    "inotify_probe",
    "make_observer",
    "mount_fstype",
    "parse_mountinfo",
]

log = logging.getLogger("dedupd.watcher")

# watchdog warns when a folder created during its recursive watch set-up gets its watch twice; harmless noise.
warnings.filterwarnings("ignore", message=r"Callback with id .* already exists for watch", category=RuntimeWarning)


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


# ====================================================================================================================
# A stoppable thread: the one idiom for threads of our own.
# ====================================================================================================================


class StoppableThread(threading.Thread):
    """A daemon thread that can be asked to stop, and that waits with `wait()` instead of sleeping.

    ``StoppableThread(fn, name=...)`` runs ``fn()`` once; with ``interval=`` it runs ``fn()`` every ``interval``
    seconds until `stop()`. Subclasses may instead override `run()` and loop ``while not self.wait(t): ...``.
    An exception from ``fn`` is logged; a periodic thread keeps going.
    """

    def __init__(self, target: Callable[[], object] | None = None, *, name: str | None = None,
                 interval: float | None = None, daemon: bool = True) -> None:
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
# Backend choice from /proc/self/mountinfo
# ====================================================================================================================

@dataclass(frozen=True)
class Backend:
    kind: str  # "inotify" | "poll"
    reason: str


# Filesystems where inotify does not see changes made by other machines (or the host, for VM shares).
REMOTE_FSTYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smb2", "smbfs", "ncpfs", "9p", "virtiofs", "vboxsf", "vmhgfs", "ceph", "cephfs",
    "glusterfs", "lustre", "gpfs", "beegfs", "davfs", "afs", "openafs", "coda", "ocfs2", "gfs2", "orangefs", "pvfs2",
    "panfs", "moosefs", "lizardfs", "shfs", "sshfs", "rclone", "s3fs", "gcsfuse", "objectivefs", "juicefs", "fuse",
})


def _unescape_mount(field: str) -> bytes:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    raw = os.fsencode(field)
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def parse_mountinfo(text: str) -> list[tuple[bytes, str]]:
    """(mount point, fstype) for each line of /proc/self/mountinfo, in file order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mounts.append((_unescape_mount(fields[4]), fields[sep + 1]))
        except (ValueError, IndexError):
            continue
    return mounts


def _read_mountinfo() -> str:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return ""


def mount_fstype(path: bytes, mountinfo: str | None = None) -> str:
    """The fstype of the mount holding ``path`` (the longest mount point prefixing it); "" if unknown.

    ``path`` should already be absolute and resolved (roots are realpaths); it is not touched on disk.
    """
    text = _read_mountinfo() if mountinfo is None else mountinfo
    path = os.path.normpath(path)
    best, best_len = "", -1
    for point, fstype in parse_mountinfo(text):
        point = os.path.normpath(point) if point else point
        if point == b"/":
            inside = path.startswith(b"/")
        else:
            inside = path == point or path.startswith(point + b"/")
        # ">=": a later line with the same mount point is mounted over the earlier one.
        if inside and len(point) >= best_len:
            best, best_len = fstype, len(point)
    return best


def _remote_kind(fstype: str) -> str | None:
    """"network filesystem" / "fuse mount" for filesystems inotify cannot watch completely, else None."""
    if fstype.startswith("fuse."):
        return "fuse mount"  # sshfs, rclone, s3fs, mergerfs, gvfsd-fuse ...: changes behind FUSE go unseen
    if fstype == "fuse":
        return "fuse mount"
    if fstype in REMOTE_FSTYPES:
        return "network filesystem"
    return None  # fuseblk (ntfs-3g, exfat on a local disk) is local: every change goes through this kernel


def choose_backend(root: bytes, mode: str, mountinfo: str | None = None) -> Backend:
    """mode "poll" / "inotify" forces; "auto" polls network and FUSE filesystems and uses inotify elsewhere."""
    if mode == "poll":
        return Backend("poll", "watch.mode: poll")
    if mode == "inotify":
        return Backend("inotify", "watch.mode: inotify")
    if mode != "auto":
        raise ValueError(f"watch mode must be auto, inotify or poll, not {mode!r}")
    fstype = mount_fstype(root, mountinfo)
    if not fstype:
        return Backend("inotify", "filesystem type unknown")
    kind = _remote_kind(fstype)
    if kind:
        return Backend("poll", f"{kind} {fstype}")
    return Backend("inotify", f"local {fstype}")


# ====================================================================================================================
# DirtyPaths: coalesced event hints, settled by stat on the caller's thread
# ====================================================================================================================

_MISSING = ("missing",)


class _Entry:
    __slots__ = ("gen", "fp", "since")

    def __init__(self, gen: int) -> None:
        self.gen = gen
        self.fp: tuple | None = None  # None: not stat-ed since the last mark
        self.since = 0.0  # when fp was first seen


def _fingerprint(path: bytes) -> tuple:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _MISSING
    except OSError as exc:
        return ("error", exc.errno)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class DirtyPaths:
    """Thread-safe coalescing of event hints into dirty paths; handlers only call mark().

    A path is settled once the same fingerprint, (size, mtime_ns, inode) from ``os.lstat`` or "missing", has been seen
    at least ``settle_seconds`` apart with no mark in between. The first stat after a mark starts the clock, so a path
    needs two `settled()` calls (one is enough with ``settle_seconds=0``). Between the first stat and the end of the
    window a path is not stat-ed again: a mark restarts it, and a changed stat at the end of the window (a file
    still being written) starts a new window.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[bytes, _Entry] = {}
        self._overflow: set[bytes] = set()
        self._gen = 0

    def mark(self, path: bytes, now: float | None = None) -> None:
        # ``now`` is accepted for symmetry with settled(); the settle clock starts at the first stat after a mark.
        with self._lock:
            self._gen += 1
            entry = self._entries.get(path)
            if entry is None:
                self._entries[path] = _Entry(self._gen)
            else:
                entry.gen, entry.fp = self._gen, None

    def mark_overflow(self, root: bytes) -> None:
        with self._lock:
            self._overflow.add(root)

    def overflowed(self) -> set[bytes]:
        with self._lock:
            roots, self._overflow = self._overflow, set()
        return roots

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries) + len(self._overflow)

    def pending(self) -> list[bytes]:
        """The dirty paths, without settling or removing them (for status and tests)."""
        with self._lock:
            return sorted(self._entries)

    def settled(self, settle_seconds: float, now: float | None = None) -> list[bytes]:
        now = self._clock() if now is None else now
        with self._lock:
            due = [(p, e.gen) for p, e in self._entries.items()
                   if e.fp is None or now - e.since >= settle_seconds]
        seen = [(p, gen, _fingerprint(p)) for p, gen in due]  # I/O without the lock: handlers never wait on a stat
        done = []
        with self._lock:
            for path, gen, fp in seen:
                entry = self._entries.get(path)
                if entry is None or entry.gen != gen:
                    continue  # marked again meanwhile: its clock restarts at the next call
                if entry.fp != fp:
                    entry.fp, entry.since = fp, now
                if now - entry.since >= settle_seconds:
                    del self._entries[path]
                    done.append(path)
        done.sort()
        return done


# ====================================================================================================================
# Observers and the event handler
# ====================================================================================================================

ObserverFactory = Callable[[str], BaseObserver]
"""(kind "inotify" | "poll") -> an unstarted watchdog observer. The seam tests use to make inotify fail."""


def _ignored_name(name: bytes, patterns: tuple[bytes, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def make_observer(kind: str, *, poll_interval: float = 30.0, ignore: Sequence[str | bytes] = ()) -> BaseObserver:
    """A fresh watchdog observer. Polling uses lstat (symlinks are not followed, so no loops) and never lists
    folders whose name matches ``ignore`` (Synology @eaDir holds several thumbnails per photo)."""
    if kind == "inotify":
        from watchdog.observers.inotify import InotifyObserver  # raises on a libc without inotify

        return InotifyObserver()
    if kind != "poll":
        raise ValueError(f"unknown observer kind {kind!r}")
    patterns = tuple(os.fsencode(p) for p in ignore)

    def listdir(path):
        with os.scandir(path) as it:
            return iter([e for e in it if not _ignored_name(os.fsencode(e.name), patterns)])

    return PollingObserverVFS(os.lstat, listdir, polling_interval=poll_interval)


_MARKED = frozenset({"created", "modified", "closed", "deleted", "moved", "attrib"})


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's dispatcher thread: filters and enqueues, no I/O, never raises."""

    def __init__(self, root: bytes, dirty: DirtyPaths, patterns: tuple[bytes, ...], max_backlog: int) -> None:
        self.root = root
        self.prefix = root.rstrip(b"/") + b"/"
        self.dirty = dirty
        self.patterns = patterns
        self.max_backlog = max_backlog

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:  # noqa: BLE001 - an exception here would kill the observer thread
            log.exception("watch %s: cannot handle %r", _show(self.root), event)

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
        rel = path[len(self.prefix):] if path.startswith(self.prefix) else path
        if self.patterns and any(_ignored_name(part, self.patterns) for part in rel.split(b"/")):
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


def _inotify_failure(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "inotify watch limit reached (ENOSPC)"
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return "inotify instance limit reached (EMFILE)"
    return f"inotify failed: {exc}"


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
    (seconds between watch-limit probes in check_health), ``max_backlog`` (beyond this many dirty paths, events
    only mark their root for a full reconcile), ``clock``.
    """

    RETRY_SECONDS = 5.0  # a root that cannot be watched (offline, missing) is retried this often by check_health
    STOP_TIMEOUT = 5.0

    def __init__(self, dirty: DirtyPaths, mode: str = "auto", poll_interval: float = 30.0,
                 ignore: Sequence[str | bytes] = (), on_degraded: Callable[[bytes, str], None] | None = None, *,
                 observer_factory: ObserverFactory | None = None,
                 inotify_probe: Callable[[bytes], None] | None = inotify_probe,
                 probe_interval: float = 60.0, max_backlog: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in ("auto", "inotify", "poll"):
            raise ValueError(f"watch mode must be auto, inotify or poll, not {mode!r}")
        self.dirty = dirty
        self.mode = mode
        self.poll_interval = poll_interval
        self.ignore = tuple(ignore)
        self._patterns = tuple(os.fsencode(p) for p in self.ignore)
        self.on_degraded = on_degraded
        self._factory = observer_factory or (
            lambda kind: make_observer(kind, poll_interval=self.poll_interval, ignore=self.ignore))
        self._probe = inotify_probe
        self.probe_interval = probe_interval
        self.max_backlog = max_backlog
        self._clock = clock
        self._lock = threading.RLock()  # main-thread operations; never taken on watchdog's threads
        self._roots: dict[bytes, _Root] = {}
        self._reader_threads: dict[int, bytes] = {}  # inotify reader thread ident -> root, for the log hook
        self._retired_readers: set[int] = set()  # reader threads of observers we stopped: their records are stale
        self._trouble: dict[bytes, str] = {}  # root -> reason, set by the log hook, acted on by check_health
        self._overflowed: set[bytes] = set()  # inotify roots whose queue overflowed: re-watched by check_health
        self._next_probe = 0.0
        self._closed = False
        _register(self)

    # --- public ------------------------------------------------------------------------------------------------------

    def add_root(self, root: bytes) -> Backend:
        """Start watching ``root`` recursively. Never raises for an unusable root: inotify trouble falls back to
        polling (logged, reported degraded), and a root that cannot be watched at all (offline, missing) is
        reported degraded and retried by check_health."""
        with self._lock:
            if self._closed:
                raise RuntimeError("Watchers.add_root after stop()")
            if root in self._roots:
                return self._roots[root].backend
            state = _Root(root, choose_backend(root, self.mode))
            self._roots[root] = state
            self._start(state)
        if state.degraded:
            self._degraded(root, state.degraded)
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
            _stop_observers([observer], self.STOP_TIMEOUT)

    def backends(self) -> dict[bytes, Backend]:
        with self._lock:
            return {r: s.backend for r, s in self._roots.items()}

    def check_health(self) -> dict[bytes, str]:
        """"ok" or "degraded: <reason>" per root. Restarts dead watchers as polling, retries offline roots and
        probes the inotify watch limit (every probe_interval); cheap enough for every main-loop tick."""
        newly: list[tuple[bytes, str]] = []
        with self._lock:
            if not self._closed:
                now = self._clock()
                self._check_watch_limit(now)
                for root, state in list(self._roots.items()):
                    before = state.degraded
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
                            log.info("watch %s: watching with %s (%s)", _show(root), state.backend.kind,
                                     state.backend.reason)
                            self.dirty.mark_overflow(root)  # changes while it was unwatched
                    if state.degraded and state.degraded != before:
                        newly.append((root, state.degraded))
            health = {r: "ok" if s.degraded is None else f"degraded: {s.degraded}" for r, s in self._roots.items()}
        for root, reason in newly:
            self._degraded(root, reason)
        return health

    def stop(self, timeout: float | None = None) -> None:
        """Stop and join every observer, all together within ``timeout`` (default STOP_TIMEOUT) seconds."""
        with self._lock:
            self._closed = True
            observers = [s.observer for s in self._roots.values() if s.observer is not None]
            for state in self._roots.values():
                state.observer = None
            self._reader_threads.clear()
        _unregister(self)
        _stop_observers(observers, self.STOP_TIMEOUT if timeout is None else timeout)

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
                        _stop_observers([state.observer], self.STOP_TIMEOUT)
                        state.observer = None
                    if isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                        self._unavailable(state, exc)
                        return
                    state.fallback = _inotify_failure(exc)
                    log.warning("watch %s: %s; falling back to polling every %gs%s", _show(root), state.fallback,
                                self.poll_interval,
                                " (raise fs.inotify.max_user_watches)" if _errno(exc) == errno.ENOSPC else "")
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
            observer.schedule(_Handler(root, self.dirty, self._patterns, self.max_backlog), os.fsdecode(root),
                              recursive=True)
            observer.start()
        except BaseException:
            _stop_observers([observer], self.STOP_TIMEOUT)
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
        log.warning("watch %s: cannot watch: %s; retrying every %gs", _show(state.root), exc, self.RETRY_SECONDS)

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
        log.warning("watch %s: inotify queue overflowed, events were lost; re-watching, the root will be "
                    "reconciled", _show(state.root))
        self._forget_reader(state.observer)
        _stop_observers([state.observer], self.STOP_TIMEOUT)  # waits for watchdog's own re-watch to finish
        self._overflowed.discard(state.root)  # a second record of the same overflow may have come meanwhile
        self._start(state)
        self.dirty.mark_overflow(state.root)

    def _switch_to_polling(self, state: _Root, reason: str) -> None:
        """Replace a dead or untrustworthy watcher by polling. A root that polled by choice just polls again (and is
        "ok" once that works); one that had inotify keeps polling, reported degraded, until remove_root."""
        polled_by_choice = state.backend.kind == "poll" and state.fallback is None
        log.warning("watch %s: %s; %s every %gs", _show(state.root), reason,
                    "restarting polling" if polled_by_choice else "switching to polling", self.poll_interval)
        if state.observer is not None:
            self._forget_reader(state.observer)
            _stop_observers([state.observer], 1.0)
            state.observer = None
        if not polled_by_choice:
            state.fallback = reason
        self.dirty.mark_overflow(state.root)  # whatever happened while nobody was watching
        self._start(state)

    def _degraded(self, root: bytes, reason: str) -> None:
        if self.on_degraded is not None:
            try:
                self.on_degraded(root, reason)
            except Exception:  # noqa: BLE001
                log.exception("on_degraded callback failed")

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
            self.dirty.mark_overflow(root)  # at once; check_health re-watches the root and marks it again
            if rebuild_failed:
                self._trouble[root] = "inotify watches could not be rebuilt after a queue overflow"
            else:
                self._overflowed.add(root)

    def _forget_reader(self, observer: BaseObserver) -> None:
        reader = getattr(observer, "_inotify_fd", None)
        if isinstance(reader, threading.Thread) and reader.ident is not None:
            self._reader_threads.pop(reader.ident, None)
            self._retired_readers.add(reader.ident)


def _errno(exc: BaseException) -> int | None:
    return exc.errno if isinstance(exc, OSError) else None


def _identity(root: bytes) -> tuple[int, int]:
    st = os.stat(root)
    return (st.st_dev, st.st_ino)


def _stop_observers(observers: Sequence[BaseObserver], timeout: float) -> None:
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
