"""Folders dedupd writes into itself: the store, every trash a purge has used, every HTML gallery written.

Nothing inside them is ever indexed or kept, wherever they lie. A trash inside a photo root would otherwise be
indexed again, its copy could win the keep policy, and the next purge would remove the original; a gallery inside
a root would feed its own thumbnails back in forever.
"""

from __future__ import annotations

import json
from pathlib import Path

from dedupd.config import Config
from dedupd.errors import UsageError
from dedupd.paths import atomic_write, inside_any, normalise_root, path_text, text_path
from dedupd.store import FileLock, mark_own

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


def is_own(path: bytes, folders: tuple[bytes, ...]) -> bool:
    return path in folders or inside_any(path, folders)
