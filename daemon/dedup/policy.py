"""Keep policies: which member of a duplicate group survives.

A policy is an ordered list of criteria, each a sort key where smaller wins: `[protected, format, resolution,
largest, oldest, lexi]` keeps a file under a protected root first, then the preferred format, then the most
pixels, and so on. A file the user decided to keep (`dedupd decide keep`) always wins; right after `protected` (or
first, without it) comes the file with more kinds of companions (an XMP with edits, a Live Photo video...), so that
their data survives with their photo; a tie left after every criterion goes to the file with more EXIF metadata,
then to the path, so no result depends on scan order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dedupd.paths import RAW_FORMATS, inside_any

if TYPE_CHECKING:  # config imports this module; keep it free of the store's pyarrow import
    from dedupd.store import FileRecord

DEFAULT_FORMATS = ("raw", "heic", "avif", "png", "tiff", "webp", "jpeg", "gif", "bmp")
# Pillow's format names -> the names users write in dedup.format_preference.
_FORMAT_NAMES = {
    "HEIF": "heic",
    "AVIF": "avif",
    "PNG": "png",
    "TIFF": "tiff",
    "WEBP": "webp",
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "GIF": "gif",
    "BMP": "bmp",
    **dict.fromkeys(RAW_FORMATS, "raw"),
}

SINGLE = ("lexi", "smallest", "largest", "newest", "oldest", "resolution")
POLICIES = (*SINGLE, "protected", "format")


@dataclass(frozen=True)
class PolicyContext:
    protect: Sequence[bytes] = ()  # protected roots
    formats: Sequence[str] = DEFAULT_FORMATS  # most preferred first
    keep: Collection[str] = field(default_factory=frozenset)  # contents decided as keepers
    companions: Callable[[bytes], Collection[str]] = lambda path: ()  # companion kinds beside a path
    keep_paths: Collection[str] = field(default_factory=frozenset)  # the paths those decisions named

    def decided_keep(self, record: FileRecord) -> bool:
        """`decide keep` named this file: by its bytes, or by its path (a title saved into it since)."""
        return record.content in self.keep or os.fsdecode(record.path) in self.keep_paths


def _format_rank(record: FileRecord, formats: Sequence[str]) -> int:
    name = _FORMAT_NAMES.get(record.format, record.format.lower())
    return formats.index(name) if name in formats else len(formats)


def _criteria(ctx: PolicyContext) -> dict[str, Callable[[FileRecord], object]]:
    return {
        "lexi": lambda f: f.path,
        "smallest": lambda f: f.size,
        "largest": lambda f: -f.size,
        "newest": lambda f: -f.mtime_ns,
        "oldest": lambda f: f.mtime_ns,
        "resolution": lambda f: -(f.width * f.height),
        "protected": lambda f: not inside_any(f.path, ctx.protect),
        "format": lambda f: _format_rank(f, ctx.formats),
    }


def as_list(policies: Sequence[str] | str) -> list[str]:
    if isinstance(policies, str):
        return [p.strip() for p in policies.split(",") if p.strip()]
    return list(policies)


def sort_key(policies: Sequence[str] | str, ctx: PolicyContext | None = None) -> Callable[[FileRecord], tuple]:
    ctx = ctx or PolicyContext()
    criteria = _criteria(ctx)
    names = as_list(policies)
    keys = [criteria[name] for name in names]
    # Companions rank right under the user's hard rules: a keeper lacking one would hold the other copy back.
    keys.insert(names.index("protected") + 1 if "protected" in names else 0, lambda f: -len(ctx.companions(f.path)))
    return lambda f: (not ctx.decided_keep(f), *(key(f) for key in keys), -f.exif_tags, f.path)


def choose_keeper(
    members: Sequence[FileRecord], policies: Sequence[str] | str, ctx: PolicyContext | None = None
) -> FileRecord:
    unknown = [p for p in as_list(policies) if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown keep policy {unknown[0]!r} (choose from {', '.join(POLICIES)})")
    return min(members, key=sort_key(policies, ctx))
