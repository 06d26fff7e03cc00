"""Logging set-up for the terminal and for journald, and a progress logger for non-terminals.

Under systemd, stderr goes to journald, which adds its own timestamps and reads
an sd-daemon(3) priority prefix such as ``<4>`` at the start of each line. So
there we write ``<6>message``; elsewhere ``2026-11-24 18:00:00 WARNING message``.
Only the ``dedupd`` logger (and its children) is configured; the root logger
and third-party loggers are left alone.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["LOGGER_NAME", "setup_logging", "under_journal", "is_terminal", "ProgressLog"]

# Every module logs to this one logger, by this literal name (not __name__): one level for the whole program
# (log_level), and a record's origin is in its message. tests/test_layout.py keeps it that way.
LOGGER_NAME = "dedupd"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(message)s"
TERMINAL_DATEFMT = "%Y-%m-%d %H:%M:%S"


def syslog_priority(levelno: int) -> int:
    """Python level -> syslog priority (sd-daemon.h SD_* values)."""
    if levelno >= logging.CRITICAL:
        return 2  # SD_CRIT
    if levelno >= logging.ERROR:
        return 3  # SD_ERR
    if levelno >= logging.WARNING:
        return 4  # SD_WARNING
    if levelno >= logging.INFO:
        return 6  # SD_INFO
    return 7  # SD_DEBUG


class JournalFormatter(logging.Formatter):
    """``<N>message``, no timestamp. Every line of a multi-line record (tracebacks)
    gets the prefix, since journald stores each stream line as its own entry."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def _stream_identity(stream: TextIO) -> tuple[int, int] | None:
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError+ValueError
        return None
    return st.st_dev, st.st_ino


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: the current sys.stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def under_journal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` should get journald-style lines.

    A terminal never does. ``$JOURNAL_STREAM`` (``DEV:INODE`` of the journal
    stream systemd connected) decides when set: if ``stream`` is a real file we
    compare it, so a shell that merely inherited the variable (e.g. a terminal
    emulator started as a user service) and redirects elsewhere gets plain lines;
    a stream with no file descriptor trusts the variable. Without it,
    ``$INVOCATION_ID`` (set for every process systemd starts) decides.
    """
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        return False
    journal_stream = os.environ.get("JOURNAL_STREAM", "")
    if journal_stream:
        identity = _stream_identity(stream)
        if identity is None:
            return True
        dev, _, ino = journal_stream.partition(":")
        try:
            return identity == (int(dev), int(ino))
        except ValueError:
            return False
    return bool(os.environ.get("INVOCATION_ID"))


def parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r} (expected one of: debug, info, warning, error, critical)"
        ) from None


class _DedupdHandler(logging.StreamHandler):
    """Marker type so setup_logging can replace its own handler when called again."""


def setup_logging(level: str | int = "info", stream: TextIO | None = None) -> None:
    """Configure the ``dedupd`` logger to write to ``stream``; safe to call again.

    ``stream`` defaults to sys.stderr as it is at call time (not at import time).

    Raises ValueError for an unknown level name. Records still propagate to the
    root logger (which has no handlers unless someone adds one, e.g. pytest's
    caplog), so nothing is printed twice by us.
    """
    stream = sys.stderr if stream is None else stream
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if isinstance(h, _DedupdHandler)]:
        logger.removeHandler(old)
        old.close()
    handler = _DedupdHandler(stream)
    if under_journal(stream):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter(TERMINAL_FORMAT, TERMINAL_DATEFMT))
    logger.addHandler(handler)
    logger.setLevel(parse_level(level))


class ProgressLog:
    """Periodic progress lines instead of a progress bar, for non-terminal stderr.

        progress = ProgressLog("embedded", total=50000, unit="img", every=30)
        progress.update(32)      # logs at most once every 30 s
        progress.done()          # always logs the final count

    Lines look like ``embedded 1200/50000 (24 img/s)``; the rate is the average
    since the start. ``on_line`` (e.g. ``sdnotify.status``) also gets every line.
    It has the same small surface as ``progress.bar()`` (update, set_postfix_str,
    close, context manager), so the two are interchangeable.
    """

    def __init__(
        self,
        what: str,
        total: int | None = None,
        *,
        unit: str = "img",
        every: float = 30.0,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        on_line: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.every = every
        self.count = 0
        self._logger = logger or logging.getLogger(LOGGER_NAME)
        self._level = level
        self._on_line = on_line
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self._postfix = ""
        self._closed = False

    def text(self) -> str:
        done = f"{self.count}/{self.total}" if self.total is not None else str(self.count)
        elapsed = self._clock() - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        shown = f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}"
        line = f"{self.what} {done} ({shown} {self.unit}/s)"
        return f"{line} {self._postfix}" if self._postfix else line

    def _emit(self) -> None:
        line = self.text()
        self._logger.log(self._level, "%s", line)
        if self._on_line is not None:
            self._on_line(line)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; log if ``every`` seconds passed since the last line."""
        self.count += n
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            self._emit()

    def set_postfix_str(self, text: str) -> None:
        """Extra text appended to the following lines (e.g. the current folder)."""
        self._postfix = text

    def done(self) -> None:
        """Log the final line regardless of timing."""
        self._last = self._clock()
        self._emit()

    def close(self) -> None:
        """Log the final line once; later calls do nothing."""
        if not self._closed:
            self._closed = True
            self.done()

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
