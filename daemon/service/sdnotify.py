"""A tiny sd_notify(3) client: tell systemd about readiness, progress, watchdog pings.

Our own implementation of the datagram protocol (no python-systemd dependency):
one AF_UNIX SOCK_DGRAM datagram of newline-separated ``KEY=value`` lines, sent
to the socket named by ``$NOTIFY_SOCKET``. A path starting with ``/`` is a
filesystem socket, one starting with ``@`` is an abstract socket (the ``@``
stands for the leading NUL byte). Other forms (e.g. ``vsock:``) are not
supported and are treated like "not under systemd".

Every function is a no-op returning False when ``$NOTIFY_SOCKET`` is unset, so
the daemon can call them unconditionally, also when run from a terminal. Send
failures never raise: they are logged at debug level and reported as False.

The environment is left as it is (unlike ``sd_notify(unset_environment=1)``):
the daemon notifies many times over its life.

Reloading: systemd >= 253 has ``Type=notify-reload``, which requires the
``RELOADING=1`` message to carry ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC in µs)
so the manager can tell this reload from an older one. Older managers (Debian
12 ships 252, where our unit uses ``Type=notify`` + ``ExecReload=kill -HUP``)
simply ignore the extra field, so :func:`reloading` always sends both. After a
reload the daemon must send :func:`ready` again.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = [
    "notify",
    "ready",
    "status",
    "watchdog",
    "stopping",
    "reloading",
    "extend_timeout",
    "watchdog_timeout",
    "watchdog_interval",
]

log = logging.getLogger("dedupd")


def _address() -> str | None:
    """The socket address from $NOTIFY_SOCKET in the form socket.sendto wants, or None."""
    raw = os.environ.get("NOTIFY_SOCKET", "")
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    if raw:
        log.debug("NOTIFY_SOCKET=%r: unsupported address form, not notifying", raw)
    return None


def _line(key: str, value: object) -> str:
    if isinstance(value, bool):
        value = int(value)
    # One message is newline-separated assignments: a newline inside a value would
    # start a bogus assignment, so flatten it.
    text = str(value).replace("\n", " ")
    return f"{key.upper()}={text}"


def notify(**fields: object) -> bool:
    """Send one datagram with ``KEY=value`` per field; keys are upper-cased.

    ``notify(READY=1, STATUS="idle")`` -> ``b"READY=1\\nSTATUS=idle"``.
    Returns True when the datagram was sent, False when not under systemd, when
    there is nothing to send, or when sending failed (logged at debug level).
    """
    address = _address()
    if address is None or not fields:
        return False
    payload = "\n".join(_line(k, v) for k, v in fields.items()).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError as exc:
        log.debug("sd_notify to %r failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Start-up (or a reload) is complete: READY=1, optionally with a STATUS= line."""
    if status_text is None:
        return notify(READY=1)
    return notify(READY=1, STATUS=status_text)


def status(text: str) -> bool:
    """Free-form one-line status shown by ``systemctl status`` (STATUS=)."""
    return notify(STATUS=text)


def watchdog() -> bool:
    """Keep-alive ping for WatchdogSec= (WATCHDOG=1)."""
    return notify(WATCHDOG=1)


def stopping(status_text: str | None = None) -> bool:
    """Shutdown has begun (STOPPING=1)."""
    if status_text is None:
        return notify(STOPPING=1)
    return notify(STOPPING=1, STATUS=status_text)


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def reloading(status_text: str | None = None) -> bool:
    """A reload has begun: RELOADING=1 plus MONOTONIC_USEC= (needed by Type=notify-reload).

    Call :func:`ready` when the reload is done.
    """
    fields: dict[str, object] = {"RELOADING": 1, "MONOTONIC_USEC": _monotonic_usec()}
    if status_text is not None:
        fields["STATUS"] = status_text
    return notify(**fields)


def extend_timeout(seconds: float) -> bool:
    """Ask for ``seconds`` more before the start/stop timeout fires (EXTEND_TIMEOUT_USEC=)."""
    return notify(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))


def watchdog_timeout() -> float | None:
    """The full watchdog timeout in seconds, or None when no watchdog applies to us.

    Mirrors sd_watchdog_enabled(3): WATCHDOG_USEC must be a positive integer and,
    when WATCHDOG_PID is set, it must be our pid (it was meant for another process
    otherwise, e.g. a parent that exec'd us through a shell).
    """
    usec_text = os.environ.get("WATCHDOG_USEC", "").strip()
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        log.debug("WATCHDOG_USEC=%r is not an integer, ignoring", usec_text)
        return None
    if usec <= 0:
        return None
    pid_text = os.environ.get("WATCHDOG_PID", "").strip()
    if pid_text:
        try:
            pid = int(pid_text)
        except ValueError:
            log.debug("WATCHDOG_PID=%r is not an integer, ignoring the watchdog", pid_text)
            return None
        if pid != os.getpid():
            return None
    return usec / 1_000_000


def watchdog_interval() -> float | None:
    """How often to send :func:`watchdog` pings, in seconds: half the timeout, or None.

    Half the timeout is what sd_watchdog_enabled(3) recommends, leaving one
    missed period of slack before systemd kills the service.
    """
    timeout = watchdog_timeout()
    return None if timeout is None else timeout / 2
