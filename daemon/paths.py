"""Paths as dedupd handles them: raw bytes inside, surrogateescape text outside, and the one atomic file writer.

Kept free of the stages' imports so every stage (ingest, output, service, purge) can use it without pulling in
another stage.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".gif"}
)
_EXTENSIONS = tuple(ext.encode() for ext in IMAGE_EXTENSIONS)


def path_text(path: bytes) -> str:
    return os.fsdecode(path)


def text_path(text: str) -> bytes:
    return os.fsencode(text)


def normalise_root(root: str | bytes | os.PathLike) -> bytes:
    return os.path.realpath(os.fsencode(os.path.expanduser(os.fsdecode(root))))


def is_image_name(name: bytes) -> bool:
    return name.lower().endswith(_EXTENSIONS)


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Temp file + rename, so a reader sees the old file or the new one, never half of either.

    open(..., "xb") honours the umask (mkstemp would make the file 0600 and hide a gallery from a web server or
    another user). durable fsyncs before the rename; a cache file that can be remade skips that.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# An empty folder made inside every trash and gallery dedupd writes: the walk never enters a folder holding it,
# whichever store scans the tree (a new or second store knows nothing of the first one's trash-dirs.json).
OWN_MARKER = b".dedupd-own-folder"


def inside(path: bytes, folder: bytes) -> bool:
    """path lies below folder (not folder itself); both absolute and normalised."""
    return path.startswith(folder.rstrip(b"/") + b"/")


def inside_any(path: bytes, folders: Iterable[bytes]) -> bool:
    return any(inside(path, folder) for folder in folders)
