"""Folders dedupd writes into itself: the store, every trash a purge has used, the HTML gallery.

Nothing inside them is ever indexed or kept, wherever they lie. A trash inside a photo root would otherwise be
indexed again, its copy could win the keep policy, and the next purge would remove the original; a gallery inside
a root would feed its own thumbnails back in forever.
"""

from __future__ import annotations

import json
from pathlib import Path

from dedupd.config import Config
from dedupd.paths import atomic_write, inside_any, normalise_root, path_text, text_path

TRASH_FILE = "trash-dirs.json"  # in the store folder: every trash a purge used, `--trash DIR` included


def own_folders(store_path: Path, config: Config) -> tuple[bytes, ...]:
    folders = [normalise_root(store_path), *used_trash_dirs(store_path)]
    folders += [normalise_root(p) for p in (config.purge.trash_dir, config.report.html_dir) if p]
    return tuple(dict.fromkeys(folders))


def used_trash_dirs(store_path: Path) -> list[bytes]:
    try:
        return [text_path(t) for t in json.loads((store_path / TRASH_FILE).read_bytes())]
    except FileNotFoundError:
        return []


def remember_trash(store_path: Path, trash_dir: bytes) -> None:
    """Called under the purge lock before the first file moves, so a running daemon never indexes what lands there."""
    known = used_trash_dirs(store_path)
    if trash_dir not in known:
        atomic_write(store_path / TRASH_FILE, json.dumps([path_text(p) for p in [*known, trash_dir]]).encode())


def is_own(path: bytes, folders: tuple[bytes, ...]) -> bool:
    return path in folders or inside_any(path, folders)
