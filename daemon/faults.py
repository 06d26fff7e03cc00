"""Fault injection for the crash and race tests.

``DEDUPD_FAULT=NAME:N`` kills this process with SIGKILL the Nth time it passes the point NAME: a kill taken at a
named step is repeatable; a kill timed by a test polling from outside races the work it means to interrupt.
``acting_at(NAME, action)`` runs an action each time this process passes NAME: another program's move (a save over
a file, a rename) placed exactly in the gap between two steps, which no test can hit from outside either.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_COUNTS: dict[str, int] = {}
_ACTIONS: dict[str, Callable[[], None]] = {}


def fault_point(name: str) -> None:
    action = _ACTIONS.get(name)
    if action is not None:
        action()
    spec = os.environ.get("DEDUPD_FAULT", "")
    if not spec.startswith(name + ":"):
        return
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if _COUNTS[name] >= int(spec.split(":")[1]):
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def acting_at(name: str, action: Callable[[], None]) -> Iterator[None]:
    _ACTIONS[name] = action
    try:
        yield
    finally:
        del _ACTIONS[name]
