"""The purge journal: one JSON line per step, fsynced before the next step, so a purge killed at any moment can be
finished (or undone) by the next run without acting twice.

Each action writes `intent` before touching anything and `done` after. A run that finds an intent without its done
looks at the disk to learn how far the act got: still in place (nothing happened), renamed aside (finish the
delete), or in the trash (the move happened). A torn last line (a kill in the middle of a write) is ignored.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

log = logging.getLogger("dedupd")


def _b64(path: bytes) -> str:
    return base64.b64encode(path).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


@dataclass
class Entry:
    id: int
    state: str  # intent | done | skipped | undone | emptied | forgotten
    action: str = ""  # delete | trash
    victim: str = ""  # base64 of the path bytes (exact for any name)
    keeper: str = ""
    dest: str = ""  # trash destination, or the aside name of a delete
    device: int = 0
    inode: int = 0
    content: str = ""
    reason: str = ""
    time: float = field(default_factory=time.time)
    keeper_content: str = ""  # what the keeper held when the act was proven safe ("" in journals before 2026-12)
    of: int = 0  # a companion (sidecar, Live Photo video...) moving with its photo: the id of the photo's entry
    folder: str = ""  # the victim's folder when the intent was written, folder_identity() ("" before 2026-12-06)

    @property
    def victim_path(self) -> bytes:
        return _unb64(self.victim)

    @property
    def keeper_path(self) -> bytes:
        return _unb64(self.keeper)

    @property
    def dest_path(self) -> bytes:
        return _unb64(self.dest) if self.dest else b""

    def in_folder(self, folder: bytes) -> Entry:
        """This entry with its victim's folder at `folder` (the folder was renamed since): the victim, and a delete's
        aside name beside it, in there; a trash destination stays where it is."""
        victim = os.path.join(folder, os.path.basename(self.victim_path))
        dest = os.path.join(folder, os.path.basename(self.dest_path)) if self.action == "delete" else self.dest_path
        return replace(self, victim=_b64(victim), dest=_b64(dest) if dest else "")


class Journal:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._next = 1 + max((e.id for e in read_entries(path)), default=0) if path.exists() else 1

    @classmethod
    def create(cls, folder: Path) -> Journal:
        folder.mkdir(parents=True, exist_ok=True)
        name = time.strftime("purge-%Y%m%d-%H%M%S") + f"-{os.getpid()}.jsonl"
        return cls(folder / name)

    def intent(
        self,
        action: str,
        victim: bytes,
        keeper: bytes,
        dest: bytes,
        device: int,
        inode: int,
        content: str,
        keeper_content: str = "",
        of: int = 0,
    ) -> Entry:
        dest_text = _b64(dest) if dest else ""
        entry = Entry(self._next, "intent", action, _b64(victim), _b64(keeper), dest_text, device, inode, content)
        entry.keeper_content, entry.of = keeper_content, of
        entry.folder = folder_identity(os.path.dirname(victim))
        self._next += 1
        self.write(entry)
        return entry

    def finish(self, entry: Entry, state: str = "done", reason: str = "") -> None:
        self.write(replace(entry, state=state, reason=reason, time=time.time()))

    def write(self, entry: Entry) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            _fsync_dir(self.path.parent)
            _end_torn_line(self._fd)
        os.write(self._fd, (json.dumps(asdict(entry), separators=(",", ":")) + "\n").encode())
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def folder_identity(folder: bytes) -> str:
    """Which folder this is, whatever its name now: a folder renamed keeps it, one made anew at the old name gets
    another. The filesystem's id (statvfs f_fsid, which ext4, XFS and Btrfs derive from the filesystem's UUID)
    rather than st_dev: a drive back under another device number (sdb1 -> sdc1) is still the same drive. ""
    when the folder cannot be looked at."""
    try:
        st = os.stat(folder)
        fsid = os.statvfs(folder).f_fsid or st.st_dev  # 0 where a filesystem gives none
    except OSError:
        return ""
    return f"{fsid:x}:{st.st_ino}"


def _end_torn_line(fd: int) -> None:
    """A write cut short by a kill leaves a line without its newline: close it, so the next record stands alone."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_entries(path: Path) -> list[Entry]:
    """All well-formed lines; a torn or corrupt line is skipped with a warning, never fatal."""
    entries = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        entry = _entry(line)
        if entry is None:
            log.warning("%s line %d is torn or corrupt; ignored", path, number)
        else:
            entries.append(entry)
    return entries


def is_journal(path: Path) -> bool:
    """The first line is a journal record (or the file is empty: a purge that acted on nothing). A journal's first
    line is written and fsynced before anything is touched, so any other file (a report passed to `purge --undo` by
    mistake) is told apart before read_entries warns about each of its lines."""
    with open(path, "rb") as handle:
        first = handle.readline()
    return not first or _entry(first) is not None


def _entry(line: bytes) -> Entry | None:
    try:
        return Entry(**json.loads(line))
    except (ValueError, TypeError):
        return None


def latest_states(path: Path) -> dict[int, tuple[Entry, Entry]]:
    """id -> (the intent, the latest record) for every action in the journal."""
    out: dict[int, tuple[Entry, Entry]] = {}
    for entry in read_entries(path):
        if entry.state == "intent":
            out[entry.id] = (entry, entry)
        elif entry.id in out:
            out[entry.id] = (out[entry.id][0], entry)
    return out


def unfinished(path: Path) -> list[Entry]:
    return [intent for intent, last in latest_states(path).values() if last.state == "intent"]


def journals(folder: Path) -> Iterator[Path]:
    return iter(sorted(folder.glob("purge-*.jsonl"))) if folder.is_dir() else iter(())


@dataclass
class EarlierActs:
    """The acts of journaled purges that removed a photo, or may have, found by what carries its picture now. An act
    counts unless its photo stayed (skipped) or came back (undone): an intent a kill left open, and one the user
    closed with --forget, may have removed it."""

    by_content: dict[str, list[Entry]] = field(default_factory=dict)  # the bytes its keeper held when proven
    by_keeper: dict[bytes, list[Entry]] = field(default_factory=dict)  # its keeper's path

    def carried_by(self, path: bytes, contents: Iterable[str]) -> list[Entry]:
        """The acts whose picture a file at `path` holding any of `contents` carries: its keeper's bytes under any
        name, or its keeper's path, whatever it holds now (edited in place since: under another model its old bytes
        have no vector to pair with)."""
        found = [act for content in contents for act in self.by_content.get(content, ())]
        found += self.by_keeper.get(path, ())
        return list({(act.id, act.time, act.victim): act for act in found}.values())

    def contents(self) -> set[str]:
        """The removed photos' contents, and the bytes their keepers held."""
        return {c for acts in self.by_content.values() for act in acts for c in (act.content, act.keeper_content) if c}

    def add(self, intent: Entry) -> None:
        carried = intent.keeper_content or intent.content  # journals before keeper hashes: a byte copy's
        self.by_content.setdefault(carried, []).append(intent)
        self.by_keeper.setdefault(intent.keeper_path, []).append(intent)

    def __bool__(self) -> bool:
        return bool(self.by_content)


@dataclass
class History:
    """What every journal says that a purge must know before it acts, read once."""

    removed: set[bytes] = field(default_factory=set)  # victims already removed (latest record done or emptied)
    earlier: EarlierActs = field(default_factory=EarlierActs)
    reserved: set[bytes] = field(default_factory=set)  # where the acts still open would put their files


def history(folder: Path) -> History:
    out = History()
    for path in journals(folder):
        for intent, last in latest_states(path).values():
            if last.state in ("done", "emptied"):
                out.removed.add(intent.victim_path)
            if last.state == "intent" and intent.dest:
                out.reserved.add(intent.dest_path)
            if last.state not in ("skipped", "undone") and not intent.of:
                out.earlier.add(intent)
    return out
