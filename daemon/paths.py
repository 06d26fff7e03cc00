"""Paths as dedupd handles them: raw bytes inside, surrogateescape text outside, and the one atomic file writer.

Kept free of the stages' imports so every stage (ingest, output, service, purge) can use it without pulling in
another stage.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dedupd.errors import UsageError

# Camera RAW files, decoded from their embedded preview through LibRaw (ingest/raw.py); the format recorded for one
# is its extension in capitals ("NEF"), which the `format` policy ranks as "raw".
RAW_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".dng",
        ".cr2",
        ".cr3",
        ".crw",
        ".nef",
        ".nrw",
        ".arw",
        ".srf",
        ".sr2",
        ".raf",
        ".orf",
        ".rw2",
        ".pef",
        ".srw",
        ".rwl",
        ".3fr",
        ".iiq",
        ".erf",
        ".mrw",
        ".x3f",
    }
)
# "RAW": a TIFF-named or sniffed file that only LibRaw could read (ingest/decode.py).
RAW_FORMATS: frozenset[str] = frozenset(ext[1:].upper() for ext in RAW_EXTENSIONS) | {"RAW"}
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".gif"} | RAW_EXTENSIONS
)
_EXTENSIONS = tuple(ext.encode() for ext in IMAGE_EXTENSIONS)
_RAW_EXTENSIONS = tuple(ext.encode() for ext in RAW_EXTENSIONS)

# Companions of photos (dedup/companions.py): never indexed, even when their bytes look like a picture's.
COMPANION_EXTENSIONS = (b".xmp", b".aae", b".json", b".mov", b".mp4")

# Magic bytes, for files whose name does not say what they are (scan.sniff) and RAW files named otherwise.
SNIFF_BYTES = 32
_BMFF_IMAGE_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
)
_RAW_MAGIC = {b"FUJIFILMCCD-RAW": "RAF", b"IIRO": "ORF", b"MMOR": "ORF", b"IIU\x00": "RW2"}
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


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


def is_companion_name(name: bytes) -> bool:
    return name.lower().endswith(COMPANION_EXTENSIONS)


def raw_format(name: bytes, head: bytes = b"") -> str:
    """ "NEF" for a RAW file by its name, else by its magic (CR3, RAF, ORF, RW2 have their own); "" otherwise."""
    if name.lower().endswith(_RAW_EXTENSIONS):
        return os.fsdecode(os.path.splitext(name)[1][1:]).upper()
    if head[4:12] == b"ftypcrx ":
        return "CR3"
    return next((fmt for magic, fmt in _RAW_MAGIC.items() if head.startswith(magic)), "")


def looks_like_image(head: bytes) -> bool:
    """Whether the first SNIFF_BYTES of a file are those of a picture format dedupd decodes."""
    if head.startswith(_SIGNATURES) or raw_format(b"", head):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[4:8] == b"ftyp" and head[8:12] in _BMFF_IMAGE_BRANDS:
        return True
    return head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES


def read_head(path: bytes) -> bytes:
    """The first SNIFF_BYTES of a regular file, b"" when it cannot be read (never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.pread(fd, SNIFF_BYTES, 0) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        return b""
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Temp file + rename, so a reader sees the old file or the new one, never half of either.

    open(..., "xb") honours the umask (mkstemp would make the file 0600 and hide a gallery from a web server or
    another user). durable fsyncs before the rename; a cache file that can be remade skips that.
    """
    if path.is_dir():
        # os.replace would fail naming the temp file, a name the user never gave.
        raise UsageError(f"{path}: a folder, where a file is wanted")
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


def inside(path: bytes, folder: bytes) -> bool:
    """path lies below folder (not folder itself); both absolute and normalised."""
    return path.startswith(folder.rstrip(b"/") + b"/")


def inside_any(path: bytes, folders: Iterable[bytes]) -> bool:
    return any(inside(path, folder) for folder in folders)
