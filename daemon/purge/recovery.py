"""Finishing, undoing and expiring journaled purges.

recover: an interrupted purge's open intents are settled by looking at the disk (never by acting blindly).
forget:  open intents in a folder the user removed are closed, on their word.
undo:    trashed files go back to their places (deleted ones cannot come back, and undo says so).
empty:   trashed files older than an age are removed for good.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dedupd.dedup.companions import claimed_by
from dedupd.errors import UsageError
from dedupd.faults import fault_point
from dedupd.ingest.hashing import content_hash
from dedupd.own_folders import OffLimits
from dedupd.paths import inside
from dedupd.purge.evidence import OFF_LIMITS, Refused, current_identity
from dedupd.purge.execute import (
    ASIDE_PREFIX,
    PARTIAL_SUFFIX,
    StillProven,
    Stranded,
    aside_name,
    asides_of,
    delete,
    follow_photo,
    move_verified,
    names_beside,
    put_back,
    trash,
)
from dedupd.purge.journal import Entry, Journal, folder_identity, journals, latest_states, unfinished
from dedupd.store import OK, FileRecord

log = logging.getLogger("dedupd")


@dataclass
class Tally:
    lines: list[str] = field(default_factory=list)
    failed: int = 0
    removed: int = 0

    def say(self, text: str, failed: bool = False) -> None:
        self.lines.append(text)
        self.failed += failed


def _same_inode(path: bytes, entry: Entry) -> bool:
    return _same_identity(path, (entry.device, entry.inode))


def _has_content(path: bytes, content: str) -> bool:
    try:
        return os.path.isfile(path) and content_hash(path) == content
    except OSError:
        return False


# --- recover -----------------------------------------------------------------------------------------------------


def recover_all(folder: Path, own: tuple[bytes, ...] = (), roots: Sequence[bytes] = ()) -> Tally:
    """Settle every open intent; `own` (dedupd's own folders) is where a keeper never proves anything, `roots` where
    a victim's folder renamed since the interruption is looked for."""
    tally, seek = Tally(), FolderSearch(roots)
    for path in journals(folder):
        open_intents = unfinished(path)
        if open_intents:
            states = {i: last.state for i, (_, last) in latest_states(path).items()}
            journal = Journal(path)
            try:
                for entry in sorted(open_intents, key=lambda e: e.id):  # a photo before its companions
                    if entry.of and states.get(entry.of) == "intent":  # its photo stays open: so does this
                        continue
                    settled = _recover_one(relocated(entry, seek), states.get(entry.of), own, tally)
                    if settled:
                        states[entry.id] = settled[0]
                        journal.finish(entry, *settled)
            finally:
                journal.close()
    return tally


def _recover_one(entry: Entry, photo: str | None, own: tuple[bytes, ...], tally: Tally) -> tuple[str, str] | None:
    """(state, reason) once settled; None while the entry must stay open (the next recovery tries again)."""
    try:
        state, reason = settle_companion(entry, photo, own) if entry.of else settle(entry, own)
    except (Stranded, OSError) as exc:
        why = str(exc) if isinstance(exc, Stranded) else _waits(entry, exc)
        tally.say(f"not recovered {os.fsdecode(entry.victim_path)}: {why}", failed=True)
        return None
    tally.say(f"recovered {os.fsdecode(entry.victim_path)}: {state} ({reason})")
    return state, reason


def still_open(folder: Path) -> Tally:
    """What recover_all would settle, left as it is, with where each file waits: a dry run changes nothing (an
    interrupted purge's acts included), and status names a file waiting under a hidden name."""
    tally = Tally()
    for path in journals(folder):
        for entry in unfinished(path):
            waiting = _waiting(entry)
            where = f"; its file waits at {os.fsdecode(waiting)}" if waiting not in (b"", entry.victim_path) else ""
            victim = os.fsdecode(entry.victim_path)
            tally.say(f"open from an interrupted purge: {victim}{where} (the next purge with --inplace settles it)")
    return tally


def relocated(entry: Entry, seek: FolderSearch) -> Entry:
    """The entry where its victim's folder is now. Renamed after the interruption (b/ -> b-2019/), the folder holds
    the file in place or under its aside name, and a new folder at the old name holds neither: settling by the old
    name would take the file for gone. Found under the scanned roots by the identity journaled with the intent; the
    entry as it is when its folder is where it was, nowhere to be found, or not journaled (older journals)."""
    folder = os.path.dirname(entry.victim_path)
    if not entry.folder or folder_identity(folder) == entry.folder:
        return entry
    found = seek(entry.folder)
    return entry.in_folder(found) if found else entry


class FolderSearch:
    """find_folder under the scanned roots, each folder looked for once a run (its entries all want the same)."""

    def __init__(self, roots: Sequence[bytes]):
        self.roots = roots
        self._found: dict[str, bytes | None] = {}

    def __call__(self, identity: str) -> bytes | None:
        if identity not in self._found:
            self._found[identity] = find_folder(identity, self.roots)
        return self._found[identity]


def find_folder(identity: str, roots: Sequence[bytes]) -> bytes | None:
    """The folder whose folder_identity() is `identity`: a root itself (a root folder renamed and scanned under its
    new name) or a folder under one (symlinks not followed)."""
    for root in roots:
        if folder_identity(root) == identity:
            return root
    inode = int(identity.rpartition(":")[2])
    pending = list(roots)
    while pending:
        try:
            with os.scandir(pending.pop()) as found:
                folders = [(f.path, f.inode()) for f in found if f.is_dir(follow_symlinks=False)]
        except OSError:  # unreadable, or gone meanwhile: not there
            continue
        for path, number in folders:
            if number == inode and folder_identity(path) == identity:
                return path
        pending.extend(path for path, _ in folders)
    return None


def _waits(entry: Entry, exc: OSError) -> str:
    """An error on one entry, with where its file may wait: the user must be able to find it."""
    found = _waiting(entry)
    return f"{exc.strerror or exc}" + (f"; the file waits at {os.fsdecode(found)}" if found else "")


def _waiting(entry: Entry) -> bytes:
    """Where the file an entry acted on is now, of the places an act puts it: b"" when in none of them."""
    places = [entry.victim_path, entry.dest_path, *asides_of(entry.victim_path)]
    return next((p for p in places if _same_inode(p, entry)), b"")


def settle_companion(entry: Entry, photo_state: str | None, own: tuple[bytes, ...] = ()) -> tuple[str, str]:
    """A companion goes where its photo went: finished when the photo's act was done (and perhaps emptied from the
    trash since), put back when it was not."""
    if photo_state in ("done", "emptied"):
        state, reason = settle(entry, own)
        if state == "skipped" and _same_inode(entry.victim_path, entry):
            if _rewritten(entry.victim_path, entry):  # edited since the kill (an XMP saved in place): new work
                return "skipped", "the companion was rewritten since the purge checked it; it stays"
            fault_point("recovery-act")
            try:
                _complete(entry, lambda: keeper_lost(entry, own))  # its twin, saved over since the kill?
            except Refused as exc:  # Stranded goes up: the intent stays open
                return "skipped", str(exc)
            return "done", "moved with its photo after the interruption"
        return state, reason
    return _put_back(entry)


def _complete(entry: Entry, keeper_lost: StillProven) -> None:
    """The interrupted act finished the way the purge acts (execute.delete / execute.trash): the file is taken out
    of every other program's way first and proven there (the inode and bytes the journal recorded), and put back
    otherwise; a check by path just before would leave a save in between to be removed. Never over a file at the
    trash place: an earlier purge's trashed file there may be the last copy of its picture."""
    if entry.action == "delete":
        delete(_as_journaled(entry), entry.dest_path, keeper_lost)  # the aside name the journal gives
    else:
        trash(_as_journaled(entry), entry.dest_path, keeper_lost)


def _as_journaled(entry: Entry) -> FileRecord:
    """The victim as the purge proved it: its path, (device, inode) and content hash, all an act's proof reads."""
    return FileRecord(entry.victim_path, b"", 0, 0, entry.device, entry.inode, content=entry.content, status=OK)


def _put_back(entry: Entry) -> tuple[str, str]:
    victim, dest = entry.victim_path, entry.dest_path
    if _same_inode(victim, entry):
        if entry.action == "trash":
            _drop_copy(entry)
        return "skipped", "its photo stayed; the companion is in place"
    if os.path.lexists(victim):
        return "skipped", "its photo stayed; another file is at the companion's place now"
    if _same_inode(dest, entry) or (entry.action == "trash" and _has_content(dest, entry.content)):
        why = _restore(entry, dest, victim)
        if why:
            return "skipped", f"its photo stayed; the companion was not put back: {why}"
        return "skipped", "its photo stayed; the companion was put back"
    return "skipped", "its photo stayed; the companion is neither in place nor moved: changed by someone else"


def settle(entry: Entry, own: tuple[bytes, ...] = ()) -> tuple[str, str]:
    """What an interrupted action left behind, brought to a clean end: (state, reason). An act is finished only
    while its keeper still holds the picture: the user may have changed it since the kill."""
    victim, dest = entry.victim_path, entry.dest_path
    if entry.action == "delete":
        return _settle_delete(entry, victim, dest, own)
    return _settle_trash(entry, victim, dest, own)


def _settle_delete(entry: Entry, victim: bytes, aside: bytes, own: tuple[bytes, ...]) -> tuple[str, str]:
    if _same_inode(aside, entry):
        return _settle_held_aside(entry, victim, aside, own)
    if os.path.lexists(aside):
        if _has_content(aside, entry.content):  # the aside name is ours alone: a drive back under another number
            return _settle_held_aside(entry, victim, aside, own)
        return "skipped", f"the aside name holds another file; left alone at {os.fsdecode(aside)}"
    if _same_inode(victim, entry):
        return "skipped", "interrupted before acting; the file is in place"
    _refuse_if_folder_away(entry)
    return "done", "the delete had completed"


def _settle_held_aside(entry: Entry, victim: bytes, aside: bytes, own: tuple[bytes, ...]) -> tuple[str, str]:
    lost = keeper_lost(entry, own) or _rewritten(aside, entry)
    if not lost:
        os.unlink(aside)
        return "done", "finished the interrupted delete"
    where = put_back(aside, victim)
    taken = f" as {os.fsdecode(where)}: another file is at its name now" if where != victim else ""
    return "skipped", f"{lost}; put back{taken}"


def _settle_trash(entry: Entry, victim: bytes, dest: bytes, own: tuple[bytes, ...]) -> tuple[str, str]:
    stray = _stray_original(entry)  # back in place if it can be, then settled below like a move killed before
    where = put_back(stray, victim) if stray else victim  # the delete
    if where != victim:
        return "skipped", f"another file is at its name now; the original was put back as {os.fsdecode(where)}"
    in_place = _same_inode(victim, entry)
    if _same_inode(dest, entry):
        return "done", "the move had completed"
    if in_place and _has_content(dest, entry.content):  # the cross-device copy had verified; the delete had not run
        lost = keeper_lost(entry, own) or _rewritten(victim, entry) or _finish_move(entry, own)
        if lost:
            os.unlink(dest)  # our verified copy; the original stays where it is
            return "skipped", f"{lost}; the original stays in place"
        return "done", "finished the interrupted move"
    if in_place:
        _remove_partial(dest)
        return "skipped", "interrupted before acting; the file is in place"
    _refuse_if_folder_away(entry)
    if _has_content(dest, entry.content):
        return "done", "the copy had completed"
    return "skipped", "file neither in place nor in the trash: changed by someone else"


def _refuse_if_folder_away(entry: Entry) -> None:
    """Finding nothing proves nothing while the victim's folder is not the one the purge acted in (a drive
    unplugged, its mount point gone or left empty; a folder renamed out of the scanned roots, another made at its
    name): the file may wait under an aside name in it. The entry stays open."""
    folder = os.path.dirname(entry.victim_path)
    if _folder_away(entry, folder):
        raise Stranded(
            f"its folder {os.fsdecode(folder)} is not there as it was (a drive offline? renamed?), and the file "
            f"may wait under a {os.fsdecode(ASIDE_PREFIX)}* name in it; settled once the folder is back. If you "
            f"removed that folder yourself: dedupd purge --forget {shlex.quote(os.fsdecode(folder))}"
        )


def _folder_away(entry: Entry, folder: bytes) -> bool:
    if entry.folder:
        return folder_identity(folder) != entry.folder
    try:  # a journal from before folder identities
        # Another device and empty: a mount point with its drive away. Another device with files in it: the same
        # drive back under another number (sdb1 -> sdc1, a share remounted), whose contents speak for themselves.
        return os.stat(folder).st_dev != entry.device and not os.listdir(folder)
    except OSError:
        return True


def _finish_move(entry: Entry, own: tuple[bytes, ...]) -> str:
    """The original deleted the way the purge deletes it after its copy (aside, proven there, put back otherwise):
    "" when it went, else why it stays. Stranded goes up, and then the verified copy stays too."""
    fault_point("recovery-act")
    try:
        delete(_as_journaled(entry), aside_name(entry.victim_path), lambda: keeper_lost(entry, own))
    except Refused as exc:
        if isinstance(exc, Stranded):
            raise
        return str(exc)
    return ""


def _drop_copy(entry: Entry) -> None:
    """The copy an interrupted move to another filesystem left in the trash, whose original stays (or comes back): a
    file at dest with the act's bytes and another inode is ours (the gate saw dest free before the intent), and so is
    a partial one."""
    dest = entry.dest_path
    if not _same_inode(dest, entry) and _has_content(dest, entry.content):
        os.unlink(dest)
    _remove_partial(dest)


def _remove_partial(dest: bytes) -> None:
    """A copy killed while being written waits under its own name in the trash: only that name is ours to remove
    (a file at dest itself may be an earlier purge's trashed file, perhaps the last copy of its picture)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dest + PARTIAL_SUFFIX)


def _stray_original(entry: Entry) -> bytes | None:
    """A move to a trash on another filesystem renames the original aside before deleting it: killed in between,
    the original waits under that name, which the walk never indexes."""
    return next((p for p in asides_of(entry.victim_path) if _same_inode(p, entry)), None)


def _rewritten(path: bytes, entry: Entry) -> str:
    if _has_content(path, entry.content):
        return ""
    return "the file was rewritten since the purge checked it"


# --- forget ------------------------------------------------------------------------------------------------------


def forget(folder: Path, gone: bytes, roots: Sequence[bytes] = ()) -> Tally:
    """Close the open entries of victims in `gone`, a folder the user removed themselves, which recovery would
    otherwise wait for for good (a drive offline looks just the same to it). Only an entry whose folder is still
    away, and whose file is in none of the places an act puts it: one that waits somewhere is named instead."""
    tally, seek = Tally(), FolderSearch(roots)
    for path in journals(folder):
        journal = Journal(path)
        try:
            for entry in unfinished(path):
                if inside(entry.victim_path, gone):
                    _forget_one(entry, relocated(entry, seek), journal, tally)
        finally:
            journal.close()
    return tally


def _forget_one(entry: Entry, now: Entry, journal: Journal, tally: Tally) -> None:
    name, waiting = os.fsdecode(entry.victim_path), _waiting(now)
    if waiting:
        tally.say(f"not forgotten {name}: its file waits at {os.fsdecode(waiting)}", failed=True)
    elif not _folder_away(now, os.path.dirname(now.victim_path)):
        tally.say(f"not forgotten {name}: its folder is there; the next purge settles it", failed=True)
    else:
        journal.finish(entry, "forgotten", "closed by dedupd purge --forget: its folder was removed")
        tally.say(f"forgot {name}")


# --- undo ----------------------------------------------------------------------------------------------------------


# The user's word that a restored photo (at this path) and its keeper both stay (a keep-all decision, so no later
# purge takes the photo again): given before the photo comes back, so that an undo killed just after cannot lose it,
# and again for the name it came back under when that is another.
KeepBoth = Callable[[Entry, bytes], None]


@dataclass
class _Undo:
    journal: Journal
    tally: Tally
    keep_both: KeepBoth


def undo(journal_path: Path, keep_both: KeepBoth = lambda entry, path: None) -> Tally:
    """Trashed files back to their places, each photo before its companions (journal order). An act a kill left open
    is undone too where its file waits where the act puts it (the trash, or a delete's aside name). A photo whose name
    another file has taken since comes back beside it (`x (dedupd 1).jpg`), never over it. A companion comes back
    only beside its own photo, back now or by an earlier undo and still there, under the photo's name: beside another
    file saved at the photo's name, an XMP or a Live Photo video would claim a picture that is not its own."""
    u = _Undo(Journal(journal_path), Tally(), keep_both)
    acts = latest_states(journal_path)
    back = {i: intent.victim_path for i, (intent, last) in acts.items() if last.state == "undone"}
    try:
        for intent, last in acts.values():
            if last.state == "intent" and not _moved(intent):
                if _left_open(intent, u):
                    back[intent.id] = intent.victim_path
            elif last.state in ("done", "intent"):
                place = _place(intent, acts[intent.of][0] if intent.of in acts else None, back)
                if place is None:
                    _companion_stays(intent, u.tally)
                elif where := _undo_one(intent, place, u):
                    back[intent.id] = where
    finally:
        u.journal.close()
    return u.tally


def _moved(entry: Entry) -> bool:
    """The open act's file waits where the act puts it: the interrupted act had moved it."""
    if _same_inode(entry.dest_path, entry):
        return True
    if entry.action != "trash" or os.path.lexists(entry.victim_path):
        return False
    return _has_content(entry.dest_path, entry.content)  # a copy to another filesystem: its own inode


def _left_open(entry: Entry, u: _Undo) -> bool:
    """An open act whose file is not where the act puts it: in place (undone: a verified copy of ours in a trash on
    another filesystem goes), or somewhere recovery must settle first."""
    name = os.fsdecode(entry.victim_path)
    if not _same_inode(entry.victim_path, entry):
        u.tally.say(
            f"not restored {name}: its purge was interrupted mid-act and the file is not where the act puts it; "
            f"`dedupd purge --inplace` settles the act first, then undo again",
            failed=True,
        )
        return False
    if not entry.of:
        u.keep_both(entry, entry.victim_path)
    if entry.action == "trash":
        _drop_copy(entry)
    u.journal.finish(entry, "undone", "interrupted before the file left its place")
    u.tally.say(f"restored {name}: its purge was interrupted before the file left its place")
    return True


def _place(entry: Entry, photo: Entry | None, back: dict[int, bytes]) -> bytes | None:
    """Where the act's file goes back to: a photo to its own path; a companion beside its photo, under the name the
    photo came back with, only while that photo is back and holds its bytes, and only under a name that pairs it
    with that photo (None: it stays; a Takeout `IMG_1.jpg(1).json` keeps its name, which would give it to the
    picture saved at `IMG_1(1).jpg` since)."""
    if not entry.of:
        return entry.victim_path
    if photo is None or photo.id not in back or not _has_content(back[photo.id], photo.content):
        return None
    place = follow_photo(entry.victim_path, photo.victim_path, back[photo.id])
    return place if claimed_by(back[photo.id], place) else None


def _companion_stays(entry: Entry, tally: Tally) -> None:
    name, dest = os.fsdecode(entry.victim_path), os.fsdecode(entry.dest_path)
    tally.say(f"not restored {name}: its photo is not back under a name it pairs with; it stays at {dest}", failed=True)


def _undo_one(entry: Entry, place: bytes, u: _Undo) -> bytes | None:
    """The act's file back at `place` (a photo beside it when it is taken): where it went, or None."""
    dest = entry.dest_path
    name = os.fsdecode(entry.victim_path)
    stray = _stray_original(entry) if entry.action == "trash" else None
    if stray is not None:  # a move to another filesystem killed after its verified copy: the original comes back
        moved = stray
    elif entry.action == "delete" and not _same_inode(dest, entry):  # an open delete's file waits aside
        u.tally.say(f"cannot restore {name}: it was deleted, not trashed", failed=True)
        return None
    elif not os.path.isfile(dest):
        u.tally.say(f"not restored {name}: {os.fsdecode(dest)} is no longer in the trash", failed=True)
        return None
    else:
        moved = dest
    if not entry.of:
        u.keep_both(entry, place)
    where, why = _restore(entry, moved, place)
    if where is None:
        u.tally.say(f"not restored {name}: {why}", failed=True)
        return None
    if where != place and not entry.of:
        u.keep_both(entry, where)
    if stray is not None:
        _drop_copy(entry)  # the copy in the trash, ours
    u.journal.finish(entry, "undone")
    beside = f" as {os.fsdecode(where)}: another file is at its name" if where != entry.victim_path else ""
    u.tally.say(f"restored {name}{beside}")
    return where


def _names(entry: Entry, place: bytes) -> Iterable[bytes]:
    """A photo may come back beside a file saved at its name since; a companion only at `place`, the name that pairs
    it with its photo."""
    return [place] if entry.of else names_beside(place)


def _restore(entry: Entry, moved: bytes, place: bytes) -> tuple[bytes | None, str]:
    """The file the purge moved goes back from `moved` to `place` or a free name beside it (_names), only while it is
    still that file and never over another (one saved at a name since stays): (where it went, "") or (None, why not,
    and it waits where it is). Across filesystems a verified copy takes the name before the trashed file goes."""
    try:
        record = _as_moved(entry, moved)
        for name in _names(entry, place):
            os.makedirs(os.path.dirname(name), exist_ok=True)
            fault_point("before-restore")
            if move_verified(record, name):
                return name, ""
    except Refused as exc:
        return None, str(exc)
    except OSError as exc:  # this entry only (a read-only folder, a disk full): the others are still restored
        return None, f"{exc.strerror or exc}; it stays at {os.fsdecode(moved)}"
    return None, f"something is at {os.fsdecode(place)} now; it stays at {os.fsdecode(moved)}"


def _as_moved(entry: Entry, moved: bytes) -> FileRecord:
    """The file at `moved` as a record to move, once proven to be the one the purge moved there: the journal's
    bytes, and on the victim's filesystem its inode too (a copy to another filesystem has an inode of its own)."""
    found, (device, inode) = current_identity(moved, "trashed file")
    if found != entry.content:
        raise Refused(f"{os.fsdecode(moved)} no longer holds the bytes the purge moved there; it stays")
    if device == entry.device and inode != entry.inode:
        raise Refused(f"{os.fsdecode(moved)} is another file than the one the purge moved there; it stays")
    return FileRecord(moved, b"", 0, 0, device, inode, content=found, status=OK)


# --- empty ---------------------------------------------------------------------------------------------------------


def empty_trash(folder: Path, older_than: float, now: float | None = None, own: tuple[bytes, ...] = ()) -> Tally:
    """Remove trashed files whose move is older than `older_than` seconds (by the journal's own timestamps), each
    only while its keeper still holds the picture outside the folders in `own` (the trash, the gallery, the
    store); otherwise the trashed file may be the last copy and stays. A photo and its companions go together or
    stay together: a sidecar kept (its twin changed: the last copy of those edits) keeps its photo, so that undo can
    bring both back."""
    tally = Tally()
    cutoff = (now or time.time()) - older_than
    for path in journals(folder):
        journal = Journal(path)
        try:
            acts = latest_states(path)
            due = [i for i, last in acts.values() if _due(i, last, cutoff)]
            unsettled = {i.of for i, last in acts.values() if i.of and last.state == "intent"}
            for together in _with_companions(due):
                if together[0].id in unsettled:  # its companion's act is still open: they go together later
                    _kept_open(together, tally)
                else:
                    _empty_together(together, journal, tally, own)
        finally:
            journal.close()
    return tally


def _due(intent: Entry, last: Entry, cutoff: float) -> bool:
    return last.state == "done" and intent.action == "trash" and last.time < cutoff


def _with_companions(entries: list[Entry]) -> list[list[Entry]]:
    """Each photo with its companions; a companion whose photo is not among them stands alone."""
    photos = {e.id: [e] for e in entries if not e.of}
    alone = []
    for entry in (e for e in entries if e.of):
        if entry.of in photos:
            photos[entry.of].append(entry)
        else:
            alone.append([entry])
    return [*photos.values(), *alone]


def _empty_together(entries: list[Entry], journal: Journal, tally: Tally, own: tuple[bytes, ...]) -> None:
    whys = {e.id: _kept_why(e, own) for e in entries}
    first = next((why for why in whys.values() if why), "")
    for entry in entries:
        dest = os.fsdecode(entry.dest_path)
        if first:
            why = whys[entry.id] or f"it goes only together with its photo and companions, and one stays: {first}"
            tally.say(f"kept {dest}: {why}", failed=True)
            continue
        if _in_trash(entry.dest_path):
            os.unlink(entry.dest_path)
            tally.say(f"removed {dest}")
            tally.removed += 1
        journal.finish(entry, "emptied")


def _kept_open(entries: list[Entry], tally: Tally) -> None:
    for entry in entries:
        why = "a companion's act is still open (settled by the next purge --inplace)"
        tally.say(f"kept {os.fsdecode(entry.dest_path)}: {why}", failed=True)


def _kept_why(entry: Entry, own: tuple[bytes, ...]) -> str:
    """Why this trashed file must stay ("" when it may go, or is gone already)."""
    if not _in_trash(entry.dest_path):
        return ""
    return _not_as_trashed(entry, entry.dest_path) or keeper_lost(entry, own)


def _in_trash(dest: bytes) -> bool:
    return os.path.isfile(dest) and not os.path.islink(dest)


def _not_as_trashed(entry: Entry, dest: bytes) -> str:
    """Only the file the purge put there goes: not another one moved in since, nor one a trash folder swapped
    for a symlink now leads to."""
    if os.path.realpath(dest) != dest or not _has_content(dest, entry.content):
        return "it is no longer the file the purge trashed there"
    return ""


def _kept_content(entry: Entry) -> str:
    """What the keeper must hold. A companion's keeper is its twin, a byte copy: its own bytes, also in a journal
    written before twins were proven, whose companion entries name the photo's keeper and content."""
    return entry.content if entry.of else (entry.keeper_content or entry.content)


def keeper_lost(entry: Entry, own: tuple[bytes, ...]) -> str:
    """Why the keeper no longer proves the picture survives ("" when it does). A journal from before keeper
    hashes were recorded is satisfied only by a byte copy."""
    keeper = entry.keeper_path
    if OffLimits(own).lies_in(keeper, resolve=True):  # the purge's own test (KeeperProof), any store's marks too
        return f"its keeper {os.fsdecode(keeper)} lies in {OFF_LIMITS}"
    try:
        found, identity = current_identity(keeper, "keeper")
    except Refused as exc:
        return f"{exc} ({os.fsdecode(keeper)}): this may be the last copy"
    if found != _kept_content(entry):
        return f"its keeper {os.fsdecode(keeper)} changed since the purge: this may be the last copy"
    if _same_identity(entry.dest_path, identity):
        return f"its keeper {os.fsdecode(keeper)} leads to the trashed file itself: this may be the last copy"
    return ""


def _same_identity(path: bytes, identity: tuple[int, int]) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == identity


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '45s' or plain seconds: finite and not negative (a negative age would put the cutoff in
    the future, and every trashed file, moved a second ago, would go)."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        age = float(number) * unit
    except ValueError:
        age = math.nan
    if not math.isfinite(age) or age < 0:
        raise UsageError(f"--older-than: cannot read {text!r} as an age (use e.g. 30d, 12h, 90m)")
    return age
