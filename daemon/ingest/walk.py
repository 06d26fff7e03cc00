"""Walk the photo roots: every image file once, with the stat facts the store compares against."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from dedupd.own_folders import OffLimits
from dedupd.paths import (
    Ignore,
    is_companion_name,
    is_image_name,
    looks_like_image,
    normalise_root,
    read_head,
)
from dedupd.store import FileStat

log = logging.getLogger("dedupd")

# NAS, desktop and OS metadata folders/files: thumbnails, recycle bins, snapshots, AppleDouble forks. A copy in a
# recycle bin must never be indexed: it could be kept while the photo is purged, and the bin is emptied at will. Only
# names a user's own folder is unlikely to have: the freedesktop home trash is plainly "Trash", so it is known by its
# shape instead (own_folders.is_desktop_trash), for the walk and the daemon's events alike.
NAS_IGNORE = (
    "@eaDir",  # Synology thumbnails
    "#recycle",  # Synology recycle bin
    "#SynoRecycle",
    "#snapshot",  # Synology snapshots
    ".snapshot",  # NetApp-style snapshots
    ".@__thumb",  # QNAP thumbnails
    "@Recycle",  # QNAP recycle bin
    "@Recently-Snapshot",  # QNAP snapshots
    ".recycle",  # Samba vfs_recycle
    ".Trash-*",  # freedesktop trash of a volume (.Trash-UID)
    ".Trash",  # freedesktop trash of a volume (.Trash/UID), macOS ~/.Trash
    ".Trashes",  # macOS trash of a volume
    "$RECYCLE.BIN",  # Windows recycle bin of a volume
    "._*",  # AppleDouble forks
)
# Our own half-finished purge renames (see purge/execute.ASIDE_PREFIX) and copies to another filesystem being written
# beside their destination, which undo puts in the photo tree (purge/execute.PARTIAL_SUFFIX; with scan.sniff their
# bytes are a picture's): never indexed, whatever the config says.
INTERNAL_IGNORE = (".dedupd-purge-*", "*.dedupd-partial")


def entry_for(path: bytes, root: bytes, st: os.stat_result) -> FileStat | None:
    """The walk's entry for what lstat found at an image name; None for a symlink or a folder. A FIFO, socket or
    device is listed (status names it, with why it is skipped) but marked, so nothing ever opens it."""
    special = _special_kind(st.st_mode)
    if not stat.S_ISREG(st.st_mode) and not special:
        return None  # symlinks to files are never indexed: deleting through them is a hazard
    return FileStat.of(path, root, st, special=special)


def _special_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device"))
    return next((name for test, name in kinds if test(mode)), "")


@dataclass
class ScanOptions:
    ignore: tuple[str, ...] = NAS_IGNORE + INTERNAL_IGNORE
    follow_symlinks: bool = False
    # Never entered, nor anything in them: this store's own folders, any store's marked ones, a desktop trash. The
    # indexer asks the same instance of each event's path, so both share its per-folder answers.
    off_limits: OffLimits = field(default_factory=OffLimits)
    sniff: bool = False  # scan.sniff: a file whose name says nothing is indexed when its magic bytes are a picture's
    on_error: Callable[[bytes, OSError], None] | None = None


def is_picture(path: bytes, sniff: bool = False) -> bool:
    """The one test of whether a file is indexed: its name says image or RAW, or (scan.sniff) its first bytes do."""
    name = os.path.basename(path)
    if is_image_name(name):
        return True
    return sniff and not is_companion_name(name) and looks_like_image(read_head(path))


def scan(roots: Iterable[bytes], options: ScanOptions | None = None) -> Iterator[FileStat]:
    """Yield image files under the roots, sorted per directory, each (device, inode) once."""
    walker = _Walker(options or ScanOptions())
    for root in roots:
        yield from walker.walk(normalise_root(root))


class _Walker:
    def __init__(self, options: ScanOptions):
        self.options = options
        self.ignore = Ignore.of(options.ignore)
        self.seen_files: set[tuple[int, int]] = set()
        self.seen_dirs: set[tuple[int, int]] = set()

    def walk(self, root: bytes) -> Iterator[FileStat]:
        stack = [root]
        while stack:
            directory = stack.pop()
            if self._enter(directory):
                subdirs, files = self._list(directory)
                yield from (e for e in (self._file(root, d) for d in files) if e is not None)
                stack.extend(reversed(subdirs))

    def _enter(self, directory: bytes) -> bool:
        try:
            st = os.stat(directory)
        except OSError as exc:
            self._error(directory, exc)
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs:
            return False  # a root listed twice, nested roots, or a symlink loop
        if self.options.off_limits.closed(directory):
            return False  # a store, trash or gallery of some dedupd store, a desktop trash (a root inside one too)
        self.seen_dirs.add(key)
        return True

    def _list(self, directory: bytes) -> tuple[list[bytes], list[os.DirEntry]]:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self._error(directory, exc)
            return [], []
        kept = [e for e in entries if not self.ignore.name(e.name)]
        return [e.path for e in kept if self._is_dir(e)], [e for e in kept if is_picture(e.path, self.options.sniff)]

    def _is_dir(self, entry: os.DirEntry) -> bool:
        try:
            return entry.is_dir(follow_symlinks=self.options.follow_symlinks)
        except OSError:
            return False

    def _file(self, root: bytes, entry: os.DirEntry) -> FileStat | None:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:  # vanished or unreadable mid-scan: skip it, keep walking
            self._error(entry.path, exc)
            return None
        if (st.st_dev, st.st_ino) in self.seen_files:
            return None
        self.seen_files.add((st.st_dev, st.st_ino))
        return entry_for(entry.path, root, st)

    def _error(self, path: bytes, exc: OSError) -> None:
        if self.options.on_error is not None:
            self.options.on_error(path, exc)
        else:
            log.warning("cannot read %s: %s", os.fsdecode(path), exc.strerror or exc)
