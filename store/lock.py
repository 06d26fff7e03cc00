"""Advisory file locks (flock) that die with their process, so a crash never leaves a stale lock behind."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockBusy(Exception):
    """Another process holds the lock."""


class FileLock:
    def __init__(self, path: Path, purpose: str):
        self.path = path
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self, blocking: bool = False) -> FileLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockBusy(f"{self.purpose} lock {self.path} is held by another dedupd process{holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        return self.acquire() if not self.held else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f" (pid {text})" if text.isdigit() else ""
