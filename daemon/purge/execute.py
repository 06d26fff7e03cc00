"""Purge: remove (or trash) duplicates, each only after it passes every safety check just before the act.

The order is plan -> verify -> act, and `verify` is the one gate every removal passes (purge from a report or from
the store, the daemon's purge.auto): it proves, from the bytes on disk and the store, that the picture survives in
the keeper (see evidence.py). A failed check skips that one file with its reason and the run goes on.
Every act first takes the victim out of every other program's way (renamed aside, or into the trash) and only then
proves again, on the bytes it now holds and on the keeper's bytes read again, that it is removing the verified
victim of a picture that survives: a file swapped in, rewritten in place or a keeper saved over between the check
and the act is put back instead of removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from dedupd.dedup.companions import by_kind_and_size, claimed_by, other_claimants
from dedupd.dedup.groups import Rules
from dedupd.faults import fault_point
from dedupd.ingest.hashing import fd_hash
from dedupd.paths import inside_any
from dedupd.purge.evidence import OFF_LIMITS, Evidence, KeeperProof, Refused, current_identity, open_regular
from dedupd.purge.journal import EarlierActs, Entry, Journal
from dedupd.purge.noclobber import move_unless_taken
from dedupd.store import OK, Decision, FileRecord


class Stranded(Refused):
    """The act failed after the file left its path and it could not be put back: its intent stays open, so that the
    next purge's recovery settles it from what is on disk; the reason says where the file waits."""


@dataclass(frozen=True)
class PurgeItem:
    victim: bytes
    keeper: bytes
    # The contents the plan was made on (a report's content hashes); "" for an old report without them, which
    # is then held to the store's current record.
    victim_content: str = ""
    keeper_content: str = ""


@dataclass
class Outcome:
    item: PurgeItem
    action: str  # "deleted" | "trashed" | "would delete" | "would trash" | "skipped"
    reason: str = ""
    destination: bytes | None = None
    companions: list[bytes] = field(default_factory=list)  # sidecars, videos... that went (or would go) along
    left: list[str] = field(default_factory=list)  # a companion that could not follow, with why


@dataclass(frozen=True)
class Along:
    """A companion going with its photo: as found at the moment of acting, where it goes, and its twin: the keeper's
    companion of the same kind and the same bytes, where its data survives (journaled as its keeper)."""

    record: FileRecord
    dest: bytes
    twin: FileRecord


@dataclass
class PurgeResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def acted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action in ("deleted", "trashed")]

    @property
    def skipped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action == "skipped"]


@dataclass
class PurgeContext:
    records: dict[bytes, FileRecord]  # what the store indexed, by path
    roots: Sequence[bytes]  # scanned roots that may be purged (online ones only)
    evidence: Evidence  # which contents the store pairs under the current model
    rules: Rules  # decisions, the burst guard, the multi-frame rule: re-checked for stale plans
    decisions: Callable[[], Iterable[Decision]] | None = None  # the user's decisions now (None: those in rules)
    keepers: KeeperProof = field(default_factory=KeeperProof)  # also holds the folders dedupd writes itself
    protect: Sequence[bytes] = ()
    trash_dir: bytes | None = None
    dry_run: bool = True
    journal: Journal | None = None
    already_done: set[bytes] = field(default_factory=set)  # removed by an earlier (perhaps interrupted) purge
    # Where acts still open (a kill, their folder away) put their file: a place no act of this run may take, or
    # settling such an act later would take this run's file for its own copy.
    reserved: set[bytes] = field(default_factory=set)
    # Keepers of what this run removed: removing one of them next would leave that picture only in a chain's far
    # end (A kept for B, then A removed against C: B and C may not be alike at all).
    kept: set[bytes] = field(default_factory=set)
    # The same across runs: earlier purges' acts (journal.history), and what the store knows of the photos they
    # removed (content -> facts: the capture, for the burst guard).
    earlier: EarlierActs = field(default_factory=EarlierActs)
    earlier_facts: dict[str, dict] = field(default_factory=dict)
    # What this run removed, by its keeper's path and by the bytes the keeper held: a keeper stands for one picture.
    removed_against: dict[bytes | str, list[FileRecord]] = field(default_factory=dict)
    stopping: Callable[[], bool] = lambda: False  # the daemon told to stop: the items left wait for its next start


def run_purge(items: Iterable[PurgeItem], ctx: PurgeContext) -> PurgeResult:
    result = PurgeResult()
    for item in items:
        if ctx.stopping():  # between acts, each journaled whole: a SIGTERM ends the run before systemd's SIGKILL
            break
        result.outcomes.append(_one(item, ctx))
    return result


def _one(item: PurgeItem, ctx: PurgeContext) -> Outcome:
    if item.victim in ctx.already_done and not os.path.lexists(item.victim):
        return Outcome(item, "already done")
    try:
        victim, dest, along = verify(item, ctx)
    except Refused as exc:
        return Outcome(item, "skipped", str(exc))
    except OSError as exc:  # a bad sector, a cloud placeholder, a share timing out: this item only
        return Outcome(item, "skipped", f"cannot read {os.fsdecode(exc.filename or b'') or 'a file'}: {exc.strerror}")
    fault_point("after-verify")
    if ctx.dry_run:
        going = [a.record.path for a in along]
        outcome = Outcome(item, "would trash" if ctx.trash_dir else "would delete", companions=going)
    else:
        outcome = _act(item, victim, dest, along, ctx)
    if outcome.action != "skipped":
        ctx.kept.add(item.keeper)
        for key in (item.keeper, item.keeper_content or ctx.records[item.keeper].content):
            ctx.removed_against.setdefault(key, []).append(victim)
    return outcome


def _act(item: PurgeItem, victim: FileRecord, dest: bytes, along: list[Along], ctx: PurgeContext) -> Outcome:
    """The photo, then its companions, each journaled; every companion's intent is written before the photo moves,
    so a run killed in between is finished by the next one (recovery moves a companion whose photo went, and puts
    back one whose photo stayed): a companion is never left without its photo."""
    keeper = planned(ctx.records[item.keeper], item.keeper_content)
    entry = _intent(ctx, victim, dest, keeper)
    companion_entries = [_intent(ctx, a.record, a.dest, a.twin, of=entry.id if entry else 0) for a in along]
    try:
        fault_point("after-intent")
        _remove(victim, dest, ctx, lambda: _keeper_lost(item, victim, ctx))
    except (Refused, OSError) as exc:
        reason = str(exc) if isinstance(exc, Refused) else f"{exc.strerror or exc}"
        if not isinstance(exc, Stranded):
            _finish(ctx, entry, "skipped", reason)
            for companion_entry in companion_entries:
                _finish(ctx, companion_entry, "skipped", "its photo stayed")
        return Outcome(item, "skipped", reason)
    ctx.keepers.forget(item.victim)  # gone from its path: never a keeper later in this run
    fault_point("before-done")
    _finish(ctx, entry, "done")
    outcome = Outcome(item, "trashed" if ctx.trash_dir else "deleted", destination=dest if ctx.trash_dir else None)
    for companion, companion_entry in zip(along, companion_entries):
        _move_along(companion, companion_entry, outcome, ctx)
    return outcome


# Asked once the victim is out of everyone's way, just before it goes for good: why the picture may not survive
# ("" when it does). A companion has none: its photo's act has already passed this.
StillProven = Callable[[], str]


def _remove(record: FileRecord, dest: bytes, ctx: PurgeContext, keeper_lost: StillProven = lambda: "") -> None:
    if ctx.trash_dir:
        trash(record, dest, keeper_lost)
    else:
        delete(record, dest, keeper_lost)


def _keeper_lost(item: PurgeItem, victim: FileRecord, ctx: PurgeContext) -> str:
    """The keeper's bytes read again at the act, not trusted from the gate's once-a-run hash: an editor may have
    saved over it since, and then the victim may be the picture's last copy."""
    try:
        _prove_keeper(planned(ctx.records[item.keeper], item.keeper_content), victim, ctx, again=True)
    except Refused as exc:
        return str(exc)
    return ""


def _prove_keeper(keeper: FileRecord, victim: FileRecord, ctx: PurgeContext, again: bool = False) -> None:
    identity = ctx.keepers.check(keeper.path, keeper.content, again)
    if identity == (victim.device, victim.inode):  # the keeper's path leads to the victim (a swapped folder)
        raise Refused("the keeper's path now leads to the victim itself")


def _move_along(along: Along, entry: Entry | None, outcome: Outcome, ctx: PurgeContext) -> None:
    fault_point("before-companion")
    try:
        _remove(along.record, along.dest, ctx, lambda: _twin_lost(along))
    except (Refused, OSError) as exc:
        reason = str(exc) if isinstance(exc, Refused) else f"{exc.strerror or exc}"
        if not isinstance(exc, Stranded):  # as for its photo: an open intent is settled by the next recovery
            _finish(ctx, entry, "skipped", reason)
        outcome.left.append(f"{os.fsdecode(along.record.path)}: {reason}")
        return
    _finish(ctx, entry, "done")
    outcome.companions.append(along.record.path)


def _intent(ctx: PurgeContext, record: FileRecord, dest: bytes, keeper: FileRecord, of: int = 0) -> Entry | None:
    """`keeper`: where the file's data survives (the photo's keeper; a companion's twin), which recovery and the
    trash's expiry prove again before they finish or empty anything."""
    if ctx.journal is None:
        return None
    action = "trash" if ctx.trash_dir else "delete"
    identity = (record.device, record.inode, record.content)
    return ctx.journal.intent(action, record.path, keeper.path, dest, *identity, keeper.content, of)


def _finish(ctx: PurgeContext, entry: Entry | None, state: str, reason: str = "") -> None:
    if ctx.journal is not None and entry is not None:
        ctx.journal.finish(entry, state, reason)


# --- checks ----------------------------------------------------------------------------------------------------


def verify(item: PurgeItem, ctx: PurgeContext) -> tuple[FileRecord, bytes, list[Along]]:
    """Every check that must hold for this victim right now, the picture's survival first; returns the victim's
    store record with the content the plan was made on, where the act puts it, and the companions that go with it
    (each checked too)."""
    check_path_shape(item.victim)
    check_path_shape(item.keeper)  # one file under two names would slip past the by-path guards (ctx.kept)
    if item.victim in ctx.kept:
        raise Refused("it is the keeper of a file this run removed; scan and report again")
    victim = planned(_indexed(item.victim, ctx), item.victim_content)
    keeper = planned(_indexed(item.keeper, ctx), item.keeper_content)
    _check_placement(victim, ctx)
    if item.victim == item.keeper or (victim.device, victim.inode) == (keeper.device, keeper.inode):
        raise Refused("the victim is the keeper itself (same path or hard link)")
    if keeper.status != OK:
        raise Refused("the keeper was not decoded successfully")
    _refuse_if(ctx.evidence.refusal(keeper.content, victim.content))
    _refuse_if(_chain_from_earlier(victim, keeper, ctx))
    if ctx.decisions is not None:  # a decision made while this run goes on counts from the next item on
        ctx.rules = ctx.rules.with_decisions(ctx.decisions())
    _refuse_if(ctx.rules.held_back(keeper, victim))  # a plan made before a decision must not outlive it
    _refuse_if(_another_picture_went(victim, keeper, ctx))
    _prove_keeper(keeper, victim, ctx)
    _check_victim(victim)
    dest = destination(victim, ctx)
    return victim, dest, companions_along(victim, keeper, ctx, dest)


def _chain_from_earlier(victim: FileRecord, keeper: FileRecord, ctx: PurgeContext) -> str:
    """An earlier purge removed a photo against this victim, whose bytes carry that picture now. The victim may go
    only to a keeper that is that picture too (the same bytes, or a stored pair at the threshold that no rule holds
    apart: another burst frame is another picture); else the picture would survive only at a chain's far end (C
    removed for B, then B for A: A and C may not be alike at all)."""
    if keeper.content == victim.content or not ctx.earlier:  # a byte copy carries whatever the victim carries
        return ""
    for act in _earlier_acts_carried(victim, ctx):
        why = ctx.evidence.refusal(keeper.content, act.content) or ctx.rules.apart(keeper, _removed(act, ctx))
        if why:
            return (
                f"it carries the picture of {os.fsdecode(act.victim_path)}, which an earlier purge removed against "
                f"{os.fsdecode(act.keeper_path)}, and the keeper is not that picture ({why}; `dedupd decide keep` "
                f"on this file makes it the keeper)"
            )
    return ""


def _another_picture_went(victim: FileRecord, keeper: FileRecord, ctx: PurgeContext) -> str:
    """A keeper stands for one picture. A photo whose picture the keeper carries already (removed against it, by this
    run or an earlier purge, or against a file that went against it since) that the rules hold apart from this
    victim (another burst frame close to one export without EXIF, a not-duplicate decision on the two) leaves this
    victim the only file of its picture."""
    if keeper.content == victim.content:  # a byte copy of the keeper: the keeper is its picture, whatever else
        return ""
    for other in _carried(keeper, ctx):
        why = "" if other.content == victim.content else ctx.rules.apart(other, victim)
        if why:
            return (
                f"{os.fsdecode(other.path)} went against the same keeper, and this is another picture ({why}); the "
                f"keeper can be only one of the two"
            )
    return ""


def _carried(keeper: FileRecord, ctx: PurgeContext) -> list[FileRecord]:
    """The photos removed against `keeper`, and against those, and so on down the chain: every picture it stands
    for now. Found by its path, its bytes and the bytes the store pairs with them (edited and moved since)."""
    found: dict[tuple[bytes, str], FileRecord] = {}
    todo = [keeper]
    while todo:
        for other in _removed_against(todo.pop(), ctx):
            if (other.path, other.content) not in found:
                found[other.path, other.content] = other
                todo.append(other)
    return list(found.values())


def _removed_against(keeper: FileRecord, ctx: PurgeContext) -> list[FileRecord]:
    found = [*ctx.removed_against.get(keeper.path, ()), *ctx.removed_against.get(keeper.content, ())]
    return found + [_removed(act, ctx) for act in _earlier_acts_carried(keeper, ctx)]


def _earlier_acts_carried(record: FileRecord, ctx: PurgeContext) -> list[Entry]:
    """The earlier purges' acts whose picture `record` carries: their keeper was at its path or held its bytes, or
    held bytes the store pairs with its bytes (the file edited in place, and moved, since: its old content's vector
    stays in the store). A pair alone is not the same file: another burst frame close to it, which the rules hold
    apart from it, carries its own acts, not this file's."""
    if not ctx.earlier:
        return []
    direct = ctx.earlier.carried_by(record.path, [record.content])
    paired = ctx.earlier.carried_by(b"", ctx.evidence.partners(record.content))
    return direct + [act for act in paired if act not in direct and not ctx.rules.apart(_kept(act, ctx), record)]


def _removed(act: Entry, ctx: PurgeContext) -> FileRecord:
    """The photo an earlier act removed, as the rules see it: its content, and the capture the store holds for it."""
    return _as_stored(act.victim_path, act.content, ctx, (act.device, act.inode))


def _kept(act: Entry, ctx: PurgeContext) -> FileRecord:
    """The keeper of an earlier act as the rules see it: the bytes it held then, and their capture."""
    return _as_stored(act.keeper_path, act.keeper_content or act.content, ctx)


def _as_stored(path: bytes, content: str, ctx: PurgeContext, identity: tuple[int, int] = (0, 0)) -> FileRecord:
    facts = ctx.earlier_facts.get(content, {})
    capture = {name: facts[name] for name in ("taken", "camera", "burst", "frames") if name in facts}
    return FileRecord(path, b"", 0, 0, *identity, content=content, status=OK, **capture)


def planned(record: FileRecord, content: str) -> FileRecord:
    """The record as the plan saw it: the report's content hash where it carries one."""
    return replace(record, content=content) if content else record


def _refuse_if(reason: str) -> None:
    if reason:
        raise Refused(reason)


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
    if not inside_any(victim.path, ctx.roots):
        raise Refused("not inside a scanned root that is online")
    if inside_any(victim.path, ctx.protect):
        raise Refused("inside a protected root")
    if ctx.keepers.off_limits.lies_in(victim.path):
        raise Refused(f"inside {OFF_LIMITS}")


def _check_victim(victim: FileRecord) -> None:
    if not victim.content:
        raise Refused("the victim has no content hash in the store (scan again)")
    fd = open_regular(victim.path, "victim")
    try:
        st = os.fstat(fd)
        if not victim.same_stat(st.st_size, st.st_mtime_ns, st.st_ino):
            raise Refused("the victim changed since it was indexed")
        if fd_hash(fd) != victim.content:
            raise Refused("the victim's content changed since the plan was made")
    finally:
        os.close(fd)


def companions_along(victim: FileRecord, keeper: FileRecord, ctx: PurgeContext, dest: bytes = b"") -> list[Along]:
    """The victim's companions that go with it, each checked now; a companion another photo beside it still claims
    stays with that photo. Refused when one cannot follow, or when the keeper has no byte copy of it (other edits in
    an XMP, another clip under a Live Photo's name: the only copy of that data): the photo then stays too."""
    out = []
    for companion in ctx.rules.companions(victim.path):
        if not os.path.lexists(companion.path) or other_claimants(companion.path, victim.path):
            continue
        if claimed_by(keeper.path, companion.path):  # the keeper's own (one it found by sniffing, not by its name)
            continue
        record = _companion_record(companion.path, victim)
        out.append(
            Along(record, _companion_destination(record, victim, dest, ctx), _twin(record, companion.kind, keeper, ctx))
        )
    return out


def _companion_destination(record: FileRecord, photo: FileRecord, photo_dest: bytes, ctx: PurgeContext) -> bytes:
    """A companion goes under its photo's name in the trash (beside that name if it is taken), so the two still pair
    up there by name."""
    if not ctx.trash_dir or not photo_dest:
        return destination(record, ctx)
    return destination(replace(record, path=follow_photo(record.path, photo.path, photo_dest)), ctx)


def follow_photo(companion: bytes, photo: bytes, photo_now: bytes) -> bytes:
    """The companion's name in its own folder once its photo is called `photo_now` (in the trash, or put back beside
    a name taken since): with x.jpg now `x (dedupd 1).jpg`, x.jpg.xmp becomes `x (dedupd 1).jpg.xmp` and x.MOV
    `x (dedupd 1).MOV`. A name that does not begin with the photo's stem (in any case) keeps its own."""
    stem = os.path.splitext(os.path.basename(photo))[0]
    name = os.path.basename(companion)
    same = os.path.basename(photo_now) == os.path.basename(photo)
    if same or not name.lower().startswith(stem.lower()):  # `img_8.xmp` is IMG_8.JPG's as much as `IMG_8.xmp`
        return companion
    moved_stem = os.path.splitext(os.path.basename(photo_now))[0]
    return os.path.join(os.path.dirname(companion), moved_stem + name[len(stem) :])


def _twin(record: FileRecord, kind: str, keeper: FileRecord, ctx: PurgeContext) -> FileRecord:
    """The keeper's companion of this kind that is a byte copy of `record`."""
    for candidate in by_kind_and_size(ctx.rules.companions(keeper.path)).get((kind, record.size), []):
        if candidate != record.path:
            with contextlib.suppress(Refused):
                twin = _companion_record(candidate, keeper)
                if twin.content == record.content:
                    return twin
    name = os.fsdecode(os.path.basename(record.path))
    raise Refused(f"its companion {name} has no byte copy beside the keeper: it may be the only copy of its data")


def _twin_lost(along: Along) -> str:
    """Asked at the companion's act, as the photo's act asks for its keeper: is the twin still a byte copy?"""
    try:
        found, _ = current_identity(along.twin.path, "keeper's companion")
    except Refused as exc:
        return str(exc)
    return "" if found == along.twin.content else "the keeper's companion changed"


def _companion_record(path: bytes, photo: FileRecord) -> FileRecord:
    try:
        fd = open_regular(path, "companion")
    except Refused as exc:
        raise Refused(f"{exc}: {os.fsdecode(path)}") from None
    try:
        st = os.fstat(fd)
        content = fd_hash(fd)
    finally:
        os.close(fd)
    return FileRecord.of(path, photo.root, st, content=content, status=OK)


# --- acts (recovery finishes an interrupted purge's acts with these too) -----------------------------------------


def delete(victim: FileRecord, aside: bytes, keeper_lost: StillProven) -> None:
    os.rename(victim.path, aside)
    try:
        fault_point("after-aside")
        _hold(victim, aside, keeper_lost)
        os.unlink(aside)
    except OSError as exc:  # a disk gone read-only, a share gone away: the file must not stay hidden unsaid
        raise _back_or_stranded(aside, victim.path, exc.strerror or str(exc)) from None


def _hold(victim: FileRecord, moved: bytes, keeper_lost: StillProven) -> None:
    """The file now at `moved`, where no other program looks for it, must be the verified victim (same inode, same
    bytes: an in-place save keeps the inode) and its picture must survive in the keeper; else it goes back."""
    why = _not_the_victim(victim, moved) or keeper_lost()
    if why:
        raise _back_or_stranded(moved, victim.path, f"{why} between the check and the act")


def _back_or_stranded(moved: bytes, path: bytes, why: str) -> Refused:
    try:
        where = put_back(moved, path)
    except OSError as exc:
        trouble = exc.strerror or str(exc)
        return Stranded(f"{why}; it could not be put back ({trouble}) and waits at {os.fsdecode(moved)}")
    if where == path:
        return Refused(f"{why}; put back")
    return Refused(f"{why}; another file is at its name now, so it was put back as {os.fsdecode(where)}")


def _not_the_victim(victim: FileRecord, moved: bytes) -> str:
    try:
        found, identity = current_identity(moved, "file")
    except Refused as exc:
        return str(exc)
    if identity != (victim.device, victim.inode):
        return "the file was swapped"
    return "" if found == victim.content else "the file was rewritten"


def put_back(moved: bytes, path: bytes) -> bytes:
    """Where a file we moved went back to: its own path, or, when another file has taken that name since, the first
    free name beside it (`x (dedupd 1).jpg`), in plain sight where the next scan indexes it and the user finds it.
    Never over another file."""
    for name in names_beside(path):
        if move_unless_taken(moved, name):
            return name
    raise FileExistsError(errno.EEXIST, "every name beside it is taken", os.fsdecode(path))


def names_beside(path: bytes) -> Iterator[bytes]:
    """`path` itself, then `x (dedupd 1).jpg`, `x (dedupd 2).jpg`... beside it."""
    return itertools.chain([path], (_beside(path, n) for n in range(1, 1000)))


_NAME_MAX = 255  # bytes, on every filesystem Linux mounts for photos


def _beside(path: bytes, n: int) -> bytes:
    """`x (dedupd N).jpg` beside `x.jpg`; the stem cut where the name would pass NAME_MAX. What follows a dot is kept
    as the extension only while it is short (`Dr. Smith at the lake` has none)."""
    folder, name = os.path.split(path)
    stem, extension = os.path.splitext(name)
    if len(extension) > _LONGEST_EXTENSION:
        stem, extension = name, b""
    mark = b" (dedupd %d)" % n
    return os.path.join(folder, _cut(stem, _NAME_MAX - len(mark) - len(extension)) + mark + extension)


_LONGEST_EXTENSION = 16  # bytes, dot included: ".supplemental-metadata" is a stem, ".jpeg" an extension


def _cut(stem: bytes, room: int) -> bytes:
    """At most `room` bytes, never ending inside a UTF-8 character (other bytes are left as they are)."""
    if len(stem) <= room:
        return stem
    cut = stem[:room]
    lead = len(cut) - 1
    while lead > 0 and len(cut) - lead < 4 and cut[lead] & 0xC0 == 0x80:  # back over continuation bytes
        lead -= 1
    if cut[lead] >= 0xC0 and len(cut) - lead < _utf8_length(cut[lead]):
        return cut[:lead] or cut  # the last character lost bytes to the cut: it goes whole
    return cut


def _utf8_length(lead: int) -> int:
    return 4 if lead >= 0xF0 else 3 if lead >= 0xE0 else 2


ASIDE_PREFIX = b".dedupd-purge-"  # the walk ignores these names: a half-finished delete is never indexed


def aside_name(path: bytes) -> bytes:
    """A short name beside the victim: a digest of its name, not the name itself, so a victim whose name is close to
    NAME_MAX (255 bytes) can still be renamed aside. A delete's journal entry records it; a move to a trash on
    another filesystem records the trash path, and recovery finds this name again with asides_of()."""
    head, tail = os.path.split(path)
    once = os.urandom(4).hex().encode()  # rename replaces: a name of an earlier act (same pid) must never be reused
    return os.path.join(head, ASIDE_PREFIX + str(os.getpid()).encode() + b"-" + once + b"-" + _name_digest(tail))


def asides_of(path: bytes) -> list[bytes]:
    """The aside names any purge process may have left for this path."""
    head, tail = os.path.split(path)
    suffix = b"-" + _name_digest(tail)
    try:
        names = os.listdir(head)
    except OSError:
        return []
    return [os.path.join(head, n) for n in names if n.startswith(ASIDE_PREFIX) and n.endswith(suffix)]


def _name_digest(name: bytes) -> bytes:
    return hashlib.blake2b(name, digest_size=8).hexdigest().encode()


def destination(record: FileRecord, ctx: PurgeContext) -> bytes:
    """Where the act puts the file: its aside name for a delete; for a trash, its path relative to its root in the
    trash, or the first free name beside that (`x (dedupd 1).jpg`) where an earlier purge's file, or another root's
    file of the same relative path, lies there, or an act still open may put its file. Chosen before the intent names
    it, never over another file: recovery must never take another act's trashed file for its own copy, and the act
    refuses a place taken since."""
    if not ctx.trash_dir:
        return aside_name(record.path)
    place = os.path.join(ctx.trash_dir, os.path.relpath(record.path, record.root))
    free = next((n for n in names_beside(place) if n not in ctx.reserved and not os.path.lexists(n)), None)
    if free is None:
        raise Refused(f"{os.fsdecode(place)} and every name beside it are taken in the trash")
    return free


def trash(victim: FileRecord, dest: bytes, keeper_lost: StillProven) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fault_point("before-move")
    try:
        moved = move_unless_taken(victim.path, dest)  # a file put at dest since the gate's check stays
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_then_delete(victim, dest, keeper_lost)
        return
    if not moved:
        raise _taken(dest)
    try:
        _hold(victim, dest, keeper_lost)
    except OSError as exc:  # the keeper unreadable at the act (a share timing out): the file must not stay unsaid
        raise _back_or_stranded(dest, victim.path, exc.strerror or str(exc)) from None


def _copy_then_delete(victim: FileRecord, dest: bytes, keeper_lost: StillProven) -> None:
    """Across filesystems: copy the verified file, fsync, verify the copy's hash, and only then delete the original
    the way a delete does (aside, proven again), so a file saved at the victim's name meanwhile is never the one
    removed. Whatever goes wrong, the copy in the trash goes and the original stays (unless the original could not
    be put back: then the verified copy stays too)."""
    if not _copy_verified(victim, dest):
        raise _taken(dest)  # whatever is at dest now: the copy did not get there
    fault_point("after-copy")
    try:
        delete(victim, aside_name(victim.path), keeper_lost)
    except Stranded:
        raise
    except BaseException:
        os.unlink(dest)
        raise


def move_verified(moved: FileRecord, path: bytes) -> bool:
    """The proven file at moved.path goes to path, never over another file (False, and it stays, when path is
    taken): on one filesystem as move_unless_taken; across filesystems a verified copy takes path first
    (_copy_verified) and only then does the file at moved.path go. Undo brings trashed files back with it."""
    try:
        return move_unless_taken(moved.path, path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    if not _copy_verified(moved, path):
        return False
    os.unlink(moved.path)
    return True


PARTIAL_SUFFIX = b".dedupd-partial"  # a copy being written beside its destination; at dest only once it verified


def _copy_verified(source: FileRecord, dest: bytes) -> bool:
    """A copy of the very inode proven (opened once, not by name twice), on disk and hashing to its content, at
    dest; False, and no copy, when another file took dest meanwhile. It is written under a name of its own and
    takes dest only once verified, never over another file, so a file at dest is always a whole copy: recovery
    never has to guess whether one there is a partial copy of this act."""
    partial = dest + PARTIAL_SUFFIX
    with os.fdopen(open_regular(source.path, "file"), "rb") as reader:
        st = os.fstat(reader.fileno())
        if (st.st_dev, st.st_ino) != (source.device, source.inode):
            raise Refused("the file was swapped between check and move; left in place")
        # O_NOFOLLOW: a symlink planted at the partial name must not lead the copy anywhere else
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        with os.fdopen(os.open(partial, flags, 0o600), "w+b") as writer:
            try:
                _copy_synced(reader, writer)
                os.utime(writer.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
                os.fchmod(writer.fileno(), stat.S_IMODE(st.st_mode))
                ok = fd_hash(writer.fileno()) == source.content
            except BaseException:
                os.unlink(partial)
                raise
    if not ok:
        os.unlink(partial)
        raise Refused("its copy did not verify; the original was left in place")
    if not move_unless_taken(partial, dest):
        os.unlink(partial)
        return False
    return True


def _taken(dest: bytes) -> Refused:
    return Refused(f"{os.fsdecode(dest)} already exists in the trash")


def _copy_synced(reader: BinaryIO, writer: BinaryIO) -> None:
    shutil.copyfileobj(reader, writer)
    writer.flush()
    os.fsync(writer.fileno())
