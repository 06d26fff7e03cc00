"""The proof a removal needs: that the picture survives, in a keeper the store knows to be the same picture.

A per-file check (is the victim unchanged?) cannot see a stale plan, a hand-written report or a keeper rewritten
in place. So every removal asks, at the moment of acting, three things of the bytes on disk and of the store:
the victim still holds the content the plan was made on, the keeper still holds *its* planned content, and the
store pairs those two contents under the current model (the same content, or a stored pair at or above the
threshold). Decisions, the burst guard and the multi-frame rule (groups.Rules) then get their say as well.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dedupd.ingest.hashing import fd_hash
from dedupd.own_folders import OffLimits
from dedupd.store import Store

OFF_LIMITS = "a folder dedupd writes itself (trash, gallery or store) or a desktop trash"


class Refused(Exception):
    """One item fails a safety check; str() is the reason."""


@dataclass(frozen=True)
class Evidence:
    """What the store holds under one model at or above one threshold that says which contents are one picture: the
    stored pairs, and else the two stored vectors themselves (a pair beyond each file's k nearest neighbours is not
    stored, though the report groups it by the vectors' cosine)."""

    model: str
    threshold: float
    pairs: frozenset[tuple[str, str]]  # (a, b) with a < b
    measure: Callable[[str, str], float] = lambda a, b: -1.0  # the stored vectors' cosine (-1: no vector)

    @classmethod
    def load(cls, store: Store, model: str, threshold: float) -> Evidence:
        pairs = frozenset((a, b) for a, b, _ in store.pairs(model, threshold))
        return cls(model, threshold, pairs, lambda a, b: stored_cosine(store, model, a, b))

    @functools.cached_property
    def _partners(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for a, b in self.pairs:
            out.setdefault(a, set()).add(b)
            out.setdefault(b, set()).add(a)
        return out

    def partners(self, content: str) -> frozenset[str]:
        """The contents the store pairs with this one at or above the threshold."""
        return frozenset(self._partners.get(content, ()))

    def refusal(self, keeper: str, victim: str) -> str:
        """Why these two contents are not proven to be one picture ("" when they are)."""
        if keeper == victim or (min(keeper, victim), max(keeper, victim)) in self.pairs:
            return ""
        if self.measure(keeper, victim) >= self.threshold:
            return ""
        return (
            f"not the same picture: the store holds no pair of the two, nor vectors of the two, at or above "
            f"{self.threshold:g} under model {self.model} (a stale or hand-written report?)"
        )


def stored_cosine(store: Store, model: str, a: str, b: str) -> float:
    """The cosine of two contents' stored (unit) vectors under `model`; -1 when either has none."""
    names, matrix = store.vectors(model, [a, b])
    rows = dict(zip(names, matrix))
    return float(np.dot(rows[a], rows[b])) if a in rows and b in rows else -1.0


@dataclass
class KeeperProof:
    """Re-hashes each keeper once per run: size, mtime and inode equal is not proof (a file rewritten in place
    with the same size and mtime keeps all three). A path this run removed is forgotten, so a report naming a
    victim as a later group's keeper is refused instead of trusted on its remembered hash."""

    # What dedupd writes itself (any store's store, trash, gallery) and a desktop trash: never a keeper, nor a victim.
    off_limits: OffLimits = field(default_factory=OffLimits)
    _seen: dict[bytes, tuple[str, tuple[int, int]]] = field(default_factory=dict)  # path -> (content, (dev, ino))

    def check(self, path: bytes, content: str, again: bool = False) -> tuple[int, int]:
        """The keeper's (device, inode) now, once it proves to hold `content` outside dedupd's own folders; `again`
        hashes it anew even if this run already has (the act's own proof, just before a file goes)."""
        if self.off_limits.lies_in(path, resolve=True):
            raise Refused(f"the keeper lies in {OFF_LIMITS}")
        if again or path not in self._seen:
            self._seen[path] = current_identity(path, "keeper")
        found, identity = self._seen[path]
        if found != content:
            raise Refused("the keeper's content changed since the plan was made")
        return identity

    def forget(self, path: bytes) -> None:
        self._seen.pop(path, None)


def current_identity(path: bytes, role: str) -> tuple[str, tuple[int, int]]:
    """The content hash and (device, inode) of the regular file at path now, read without following a symlink."""
    fd = open_regular(path, role)
    try:
        st = os.fstat(fd)
        return fd_hash(fd), (st.st_dev, st.st_ino)
    finally:
        os.close(fd)


def open_regular(path: bytes, role: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(f"the {role} is a symlink") from None
        if exc.errno == errno.ENOENT:
            raise Refused(f"the {role} no longer exists") from None
        raise Refused(f"cannot open the {role}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused(f"the {role} is not a regular file")
    return fd
