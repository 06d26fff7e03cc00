"""Folders dedupd writes into itself: the store, every trash a purge has used, every HTML gallery written.

Nothing inside them is ever indexed or kept, wherever they lie. A trash inside a photo root would otherwise be
indexed again, its copy could win the keep policy, and the next purge would remove the original; a gallery inside
a root would feed its own thumbnails back in forever. Another store's folders are known by their mark
(store/own.py), a desktop trash by its shape: `OffLimits` asks all three, for the walk, the daemon's events and
every keeper.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from dedupd.config import Config
from dedupd.errors import UsageError
from dedupd.paths import atomic_write, normalise_root, path_text, text_path
from dedupd.store import OWN_MARKER, FileLock, mark_own, marked_own

# In the store folder: every trash a purge used (`--trash DIR` included) and every gallery `report --out DIR` wrote.
# The name is older than the galleries in it.
TRASH_FILE = "trash-dirs.json"
TRASH_LOCK = "trash-dirs.lock"


def own_folders(store_path: Path, config: Config) -> tuple[bytes, ...]:
    folders = [normalise_root(store_path), *remembered(store_path)]
    folders += [normalise_root(p) for p in (config.purge.trash_dir, config.report.html_dir) if p]
    return tuple(dict.fromkeys(folders))


def remembered(store_path: Path) -> list[bytes]:
    try:
        return [text_path(t) for t in json.loads((store_path / TRASH_FILE).read_bytes())]
    except FileNotFoundError:
        return []


def remember(store_path: Path, folder: bytes) -> None:
    """Called before the first file lands in a trash or a gallery, so neither scan nor daemon ever indexes it. Under
    a lock: the daemon's gallery and a purge from the command line may remember at once, and a lost entry would let
    a keeper inside that folder prove a picture survives."""
    if folder not in remembered(store_path):
        _refuse_a_folder_of_yours(folder)
    try:
        mark_own(folder)
    except NotADirectoryError:
        # A file where the trash or gallery folder should be (or above it): name the folder given, not the marker.
        raise UsageError(f"{path_text(folder)}: not a folder: a file is in the way") from None
    store_path.mkdir(parents=True, exist_ok=True)  # a gallery may be written before the store's first scan
    with FileLock(store_path / TRASH_LOCK, "own folders").acquire(blocking=True):
        known = remembered(store_path)
        if folder not in known:
            atomic_write(store_path / TRASH_FILE, json.dumps([path_text(p) for p in [*known, folder]]).encode())


def _refuse_a_folder_of_yours(folder: bytes) -> None:
    """The mark takes everything under a folder out of every index, for good: a trash or gallery folder must be new,
    empty, or one dedupd made (`--trash ~`, a slip for `--trash ~/.trash`, would otherwise hide the library)."""
    try:
        with os.scandir(folder) as entries:
            holds = any(e.name != OWN_MARKER for e in entries)
    except (FileNotFoundError, NotADirectoryError):
        return  # made new (a file there fails at the mark, named)
    if holds and not marked_own(folder):
        raise UsageError(
            f"{path_text(folder)}: holds files of yours; a trash or gallery folder must be new or empty (everything "
            "in it is kept out of the index)"
        )


class OffLimits:
    """The one test of whether a path lies where dedupd never indexes a file nor takes a keeper as proof that a
    picture survives: this store's own folders (by path: remembered even where the mark was removed), any folder
    some dedupd marked as its own (another store's trash, gallery or thumbnail cache, which this store never heard
    of) and a desktop trash (a file there is one the user threw away, and the trash is emptied at will). The walk,
    the indexer's event path and the purge's keeper proof all ask this one test, so none of them
    lets in what another skips.

    Each folder is looked at once and its answer kept: make one per run (a walk, an event batch, a purge), so a
    trash another store makes while the daemon runs is seen from the next batch on."""

    def __init__(self, known: Iterable[bytes] = ()) -> None:
        self.known = tuple(known)  # this store's own folders, absolute and normalised
        self._known = frozenset(self.known)
        self._closed: dict[bytes, bool] = {}  # folder -> it or a folder above it is off limits

    def lies_in(self, path: bytes, resolve: bool = False) -> bool:
        """Whether the file or folder at path lies inside such a folder; with resolve, also where path leads once
        its symlinks are followed (a folder swapped for a symlink must not lead a keeper into a trash)."""
        paths = (path, os.path.realpath(path)) if resolve else (path,)
        return any(self.closed(os.path.dirname(p)) for p in paths)

    def closed(self, folder: bytes) -> bool:
        """Whether folder is such a folder or lies inside one: it and each folder above it, up to /."""
        unknown: list[bytes] = []
        while folder and folder not in self._closed:
            unknown.append(folder)
            parent = os.path.dirname(folder)
            folder = parent if parent != folder else b""
        verdict = self._closed.get(folder, False)
        for below in reversed(unknown):  # top down: whatever lies inside a closed folder is closed too
            verdict = verdict or self._closes(below)
            self._closed[below] = verdict
        return verdict

    def _closes(self, folder: bytes) -> bool:
        return folder in self._known or marked_own(folder) or is_desktop_trash(folder)


def is_desktop_trash(folder: bytes) -> bool:
    """A freedesktop trash (~/.local/share/Trash: a file manager's Delete moves the file to files/, its origin to
    info/). Known by that shape, not as $XDG_DATA_HOME/Trash: a daemon run as a service user, or a scan of a copied
    home, has another XDG_DATA_HOME than the trash's owner. Not by the name alone either, which a user's own folder
    may have; a folder wrongly taken for a trash is only left unindexed, never purged."""
    return os.path.basename(folder) == b"Trash" and all(
        os.path.isdir(os.path.join(folder, part)) for part in (b"files", b"info")
    )
