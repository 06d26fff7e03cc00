"""Paths as dedupd handles them: raw bytes inside, surrogateescape text outside, and the one atomic file writer.

Kept free of the stages' imports so every stage (ingest, output, service, purge) can use it without pulling in
another stage.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Ignore:
    """Glob patterns (NAS metadata, scan.ignore) matched against single file and folder names: the one matcher the
    walk, the watchers and the indexer share, so what one skips the others skip too."""

    patterns: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, patterns: Iterable[str | bytes]) -> Ignore:
        return cls(tuple(os.fsencode(p) for p in patterns))

    def name(self, name: bytes) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def below(self, path: bytes, root: bytes) -> bool:
        """Whether any name on the way from root down to path matches (the root's own name does not count)."""
        prefix = root.rstrip(b"/") + b"/"
        if not self.patterns or not path.startswith(prefix):
            return False
        return any(self.name(part) for part in path[len(prefix) :].split(b"/") if part)


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
