"""Fault injection for the crash tests: ``DEDUPD_FAULT=NAME:N`` kills this process with SIGKILL the Nth time it
passes the point NAME. A kill taken at a named step is repeatable; a kill timed by a test polling from outside
races the work it means to interrupt."""

from __future__ import annotations

import os
import signal

_COUNTS: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get("DEDUPD_FAULT", "")
    if not spec.startswith(name + ":"):
        return
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if _COUNTS[name] >= int(spec.split(":")[1]):
        os.kill(os.getpid(), signal.SIGKILL)
