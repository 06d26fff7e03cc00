"""Keep policies: which member of a duplicate group survives.

Each policy is a sort key where smaller wins; ties always fall through to the path so that no result depends on
scan order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dedupd.store import FileRecord

_KEYS: dict[str, Callable[[FileRecord], object]] = {
    "lexi": lambda f: f.path,
    "smallest": lambda f: f.size,
    "largest": lambda f: -f.size,
    "newest": lambda f: -f.mtime_ns,
    "oldest": lambda f: f.mtime_ns,
    "resolution": lambda f: -(f.width * f.height),
}

POLICIES = tuple(_KEYS)


def sort_key(policies: Sequence[str]) -> Callable[[FileRecord], tuple]:
    keys = [_KEYS[name] for name in policies]
    return lambda record: (*(key(record) for key in keys), record.path)


def choose_keeper(members: Sequence[FileRecord], policies: Sequence[str] | str) -> FileRecord:
    if isinstance(policies, str):
        policies = [policies]
    unknown = [p for p in policies if p not in _KEYS]
    if unknown:
        raise ValueError(f"unknown keep policy {unknown[0]!r} (choose from {', '.join(POLICIES)})")
    return min(members, key=sort_key(policies))
