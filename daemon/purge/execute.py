"""Purge: remove (or trash) duplicates, each only after it passes every safety check just before the act.

The order is plan -> verify -> act. A failed check skips that one file with its reason and the run goes on.
Deletion renames the victim aside first and confirms the renamed inode is the verified one, so a file swapped in
between the check and the act is put back instead of deleted.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dedupd.dedup.groups import Rules
from dedupd.ingest.hashing import fd_hash
from dedupd.purge.journal import Entry, Journal
from dedupd.store import OK, FileRecord


@dataclass(frozen=True)
class PurgeItem:
    victim: bytes
    keeper: bytes


@dataclass
class Outcome:
    item: PurgeItem
    action: str  # "deleted" | "trashed" | "would delete" | "would trash" | "skipped"
    reason: str = ""
    destination: bytes | None = None


@dataclass
class PurgeResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def acted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action in ("deleted", "trashed")]

    @property
    def skipped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action == "skipped"]


class Refused(Exception):
    """One item fails a safety check; str() is the reason."""


@dataclass
class PurgeContext:
    records: dict[bytes, FileRecord]  # what the store indexed, by path
    roots: Sequence[bytes]  # scanned roots that may be purged (online ones only)
    protect: Sequence[bytes] = ()
    trash_dir: bytes | None = None
    dry_run: bool = True
    journal: Journal | None = None
    already_done: set[bytes] = field(default_factory=set)  # removed by an earlier (perhaps interrupted) purge
    rules: Rules | None = None  # decisions and the burst guard, re-checked for stale plans


def run_purge(items: Iterable[PurgeItem], ctx: PurgeContext) -> PurgeResult:
    result = PurgeResult()
    for item in items:
        result.outcomes.append(_one(item, ctx))
    return result


def _one(item: PurgeItem, ctx: PurgeContext) -> Outcome:
    if item.victim in ctx.already_done and not os.path.lexists(item.victim):
        return Outcome(item, "already done")
    try:
        victim = verify(item, ctx)
    except Refused as exc:
        return Outcome(item, "skipped", str(exc))
    if ctx.dry_run:
        return Outcome(item, "would trash" if ctx.trash_dir else "would delete")
    return _act(item, victim, ctx)


def _act(item: PurgeItem, victim: FileRecord, ctx: PurgeContext) -> Outcome:
    action = "trash" if ctx.trash_dir else "delete"
    dest = trash_destination(victim, ctx.trash_dir) if ctx.trash_dir else _aside_name(item.victim)
    entry = _intent(ctx, action, item, victim, dest)
    try:
        fault_point("after-intent")
        if ctx.trash_dir:
            _trash(victim, dest)
        else:
            _delete(item.victim, victim, dest)
    except (Refused, OSError) as exc:
        reason = str(exc) if isinstance(exc, Refused) else f"{exc.strerror or exc}"
        _finish(ctx, entry, "skipped", reason)
        return Outcome(item, "skipped", reason)
    fault_point("before-done")
    _finish(ctx, entry, "done")
    return Outcome(item, "trashed" if ctx.trash_dir else "deleted", destination=dest if ctx.trash_dir else None)


def _intent(ctx: PurgeContext, action: str, item: PurgeItem, victim: FileRecord, dest: bytes) -> Entry | None:
    if ctx.journal is None:
        return None
    return ctx.journal.intent(action, item.victim, item.keeper, dest, victim.device, victim.inode, victim.content)


def _finish(ctx: PurgeContext, entry: Entry | None, state: str, reason: str = "") -> None:
    if ctx.journal is not None and entry is not None:
        ctx.journal.finish(entry, state, reason)


def fault_point(name: str) -> None:
    """Fault injection for the crash tests: DEDUPD_FAULT=NAME:N kills this process with SIGKILL at the Nth pass."""
    spec = os.environ.get("DEDUPD_FAULT", "")
    if not spec.startswith(name + ":"):
        return
    _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if _FAULT_COUNTS[name] >= int(spec.split(":")[1]):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_COUNTS: dict[str, int] = {}


# --- checks ----------------------------------------------------------------------------------------------------


def verify(item: PurgeItem, ctx: PurgeContext) -> FileRecord:
    """Every check that must hold for this victim right now; returns its store record."""
    check_path_shape(item.victim)
    victim = _indexed(item.victim, ctx)
    keeper = _indexed(item.keeper, ctx)
    _check_placement(victim, ctx)
    if item.victim == item.keeper or (victim.device, victim.inode) == (keeper.device, keeper.inode):
        raise Refused("the victim is the keeper itself (same path or hard link)")
    _check_rules(keeper, victim, ctx)
    _check_keeper(keeper)
    _check_victim(victim)
    return victim


def _check_rules(keeper: FileRecord, victim: FileRecord, ctx: PurgeContext) -> None:
    """A plan made before a decision (or with the burst guard off) must not outlive it."""
    why = ctx.rules.held_back(keeper, victim) if ctx.rules is not None else ""
    if why:
        raise Refused(why)


def check_path_shape(path: bytes) -> None:
    if b"\0" in path:
        raise Refused("path contains a NUL byte")
    if not os.path.isabs(path) or os.path.normpath(path) != path:
        raise Refused("path is not absolute and normalised ('..' or '.' components)")
    parent = os.path.dirname(path)
    if os.path.realpath(parent) != parent:
        raise Refused("a parent directory is a symlink")


def _indexed(path: bytes, ctx: PurgeContext) -> FileRecord:
    record = ctx.records.get(path)
    if record is None:
        raise Refused(f"{os.fsdecode(path)} is not in the store (scan again)")
    return record


def _check_placement(victim: FileRecord, ctx: PurgeContext) -> None:
    if not any(_inside(victim.path, root) for root in ctx.roots):
        raise Refused("not inside a scanned root that is online")
    if any(_inside(victim.path, root) for root in ctx.protect):
        raise Refused("inside a protected root")


def _inside(path: bytes, root: bytes) -> bool:
    return path.startswith(root.rstrip(b"/") + b"/")


def _check_keeper(keeper: FileRecord) -> None:
    if keeper.status != OK:
        raise Refused("the keeper was not decoded successfully")
    try:
        st = os.lstat(keeper.path)
    except OSError:
        raise Refused("the keeper no longer exists") from None
    if not stat.S_ISREG(st.st_mode) or not keeper.same_stat(st.st_size, st.st_mtime_ns, st.st_ino):
        raise Refused("the keeper changed since it was indexed")


def _check_victim(victim: FileRecord) -> None:
    try:
        fd = os.open(victim.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("the victim is a symlink") from None
        raise Refused(f"cannot open the victim: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("the victim is not a regular file")
        if not victim.same_stat(st.st_size, st.st_mtime_ns, st.st_ino):
            raise Refused("the victim changed since it was indexed")
        if victim.content and fd_hash(fd) != victim.content:
            raise Refused("the victim's content changed since it was indexed")
    finally:
        os.close(fd)


# --- acts ------------------------------------------------------------------------------------------------------


def _delete(path: bytes, victim: FileRecord, aside: bytes) -> None:
    os.rename(path, aside)
    fault_point("after-aside")
    st = os.lstat(aside)
    if (st.st_dev, st.st_ino) != (victim.device, victim.inode) or not stat.S_ISREG(st.st_mode):
        os.rename(aside, path)
        raise Refused("the file was swapped between check and delete; put back")
    os.unlink(aside)


ASIDE_PREFIX = b".dedupd-purge-"  # the walk ignores these names: a half-finished delete is never indexed


def _aside_name(path: bytes) -> bytes:
    """A short name beside the victim: a digest of its name, not the name itself, so a victim whose name is close to
    NAME_MAX (255 bytes) can still be renamed aside (the journal records the aside name; nothing derives it again)."""
    head, tail = os.path.split(path)
    digest = hashlib.blake2b(tail, digest_size=8).hexdigest().encode()
    return os.path.join(head, ASIDE_PREFIX + str(os.getpid()).encode() + b"-" + digest)


def trash_destination(victim: FileRecord, trash_dir: bytes) -> bytes:
    relative = os.path.relpath(victim.path, victim.root)
    return os.path.join(trash_dir, relative)


def _trash(victim: FileRecord, dest: bytes) -> bytes:
    if os.path.lexists(dest):
        raise Refused(f"{os.fsdecode(dest)} already exists in the trash")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        os.rename(victim.path, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_then_unlink(victim, dest)
        return dest
    _confirm_moved(victim, dest)
    return dest


def _confirm_moved(victim: FileRecord, dest: bytes) -> None:
    st = os.lstat(dest)
    if (st.st_dev, st.st_ino) != (victim.device, victim.inode):
        os.rename(dest, victim.path)
        raise Refused("the file was swapped between check and move; put back")


def _copy_then_unlink(victim: FileRecord, dest: bytes) -> None:
    """Across filesystems: copy, fsync, verify the copy's hash, and only then remove the original."""
    shutil.copy2(victim.path, dest)
    fault_point("after-copy")
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
        ok = fd_hash(fd) == victim.content
    finally:
        os.close(fd)
    if not ok:
        os.unlink(dest)
        raise Refused("the copy in the trash did not verify; original left in place")
    os.unlink(victim.path)
