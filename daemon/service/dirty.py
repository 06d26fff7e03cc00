"""DirtyPaths: event hints coalesced per path and settled by stat on the caller's thread (handlers never stat)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

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

    def mark(self, path: bytes) -> None:
        # No timestamp: the settle clock starts at the first stat after a mark (see settled()).
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
            due = [(p, e.gen) for p, e in self._entries.items() if e.fp is None or now - e.since >= settle_seconds]
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
