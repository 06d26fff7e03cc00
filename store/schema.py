"""Arrow schemas of the store's tables and the records they hold.

Paths are stored as raw bytes (``os.fsencode``) so that names which are not valid UTF-8 round-trip exactly; the
string key of a file row is a digest of those bytes because LanceDB's merge keys are easiest on strings.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import KW_ONLY, asdict, dataclass, fields
from typing import Any, TypeVar

import pyarrow as pa

# 2: files.frames (a multi-frame file is the same picture only as a byte copy); 3: files.ctime_ns; 4: files.decoder
SCHEMA_VERSION = 4

FILES = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("path", pa.binary(), nullable=False),
        pa.field("root", pa.binary(), nullable=False),
        pa.field("size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("device", pa.int64()),
        pa.field("inode", pa.int64()),
        pa.field("content", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("format", pa.string()),
        pa.field("taken", pa.string()),
        pa.field("camera", pa.string()),
        pa.field("burst", pa.string()),
        pa.field("exif_tags", pa.int32()),
        pa.field("frames", pa.int32()),
        pa.field("ctime_ns", pa.int64()),
        pa.field("decoder", pa.string()),
    ]
)

VECTORS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("content", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32()), nullable=False),
        # Decoded size travels with the vector: a run killed between the vector commit and the file commit
        # resumes without decoding again and still knows each content's resolution.
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("facts", pa.string()),  # JSON: the rest of CONTENT_FACTS
    ]
)

PAIRS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("a", pa.string(), nullable=False),
        pa.field("b", pa.string(), nullable=False),
        pa.field("cosine", pa.float32(), nullable=False),
    ]
)

DECISIONS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # short id shown to the user
        pa.field("kind", pa.string(), nullable=False),  # keep | not-duplicate | keep-all
        pa.field("contents", pa.string(), nullable=False),  # JSON list of content hashes: decisions follow content
        pa.field("paths", pa.string()),  # JSON list of the paths named, for `decide list`
        pa.field("created", pa.float64()),
    ]
)

META = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])

TABLES = {"files": FILES, "vectors": VECTORS, "pairs": PAIRS, "decisions": DECISIONS, "meta": META}

# File status values.
PENDING = "pending"
OK = "ok"
UNREADABLE = "unreadable"


def path_key(path: bytes) -> str:
    return hashlib.blake2b(path, digest_size=16).hexdigest()


_Stat = TypeVar("_Stat", bound="FileStat")


@dataclass
class FileStat:
    """Where a file is and what lstat said of it: what the walk yields, and the identity half of a FileRecord."""

    path: bytes
    root: bytes
    size: int
    mtime_ns: int
    device: int
    inode: int
    _: KW_ONLY
    # A rewrite in place can keep size, mtime (os.utime) and inode, never the ctime. 0 in rows from before
    # schema 3: unknown, so the next scan hashes the file once more.
    ctime_ns: int = 0
    special: str = ""  # the walk's mark for a FIFO, socket or device (never opened); never stored

    @classmethod
    def of(cls: type[_Stat], path: bytes, root: bytes, st: os.stat_result, **rest: Any) -> _Stat:
        """From an lstat or fstat; a subclass takes its own fields as keywords (FileRecord.of(..., content=c))."""
        return cls(path, root, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, ctime_ns=st.st_ctime_ns, **rest)


@dataclass
class FileRecord(FileStat):
    """One file as the store last saw it."""

    content: str = ""
    width: int = 0
    height: int = 0
    status: str = PENDING
    error: str = ""
    format: str = ""  # decoded format (JPEG, PNG, HEIF...), whatever the extension says
    taken: str = ""  # EXIF capture time with sub-seconds and offset
    camera: str = ""  # make|model|serial
    burst: str = ""  # burst / sequence id
    exif_tags: int = 0
    frames: int = 1  # pages or animation frames (rows from before schema 2 read as 1)
    # The decoders an unreadable verdict was reached with (decode.decoders()); "" for rows from before schema 4.
    decoder: str = ""

    @classmethod
    def at(cls, where: FileStat, **facts: Any) -> FileRecord:
        """The record for a walked file: its stat, and whatever else is known yet."""
        return cls(**{name: getattr(where, name) for name in STAT_FIELDS}, **facts)

    @property
    def key(self) -> str:
        return path_key(self.path)

    def same_stat(self, size: int, mtime_ns: int, inode: int, ctime_ns: int | None = None) -> bool:
        """ctime_ns None: not compared (a purge's victim check re-hashes the bytes anyway)."""
        same = (self.size, self.mtime_ns, self.inode) == (size, mtime_ns, inode)
        return same and (ctime_ns is None or self.ctime_ns == ctime_ns)


STAT_FIELDS = [f.name for f in fields(FileStat) if f.name != "special"]
FILE_FIELDS = [f.name for f in fields(FileRecord) if f.name in FILES.names]
# Facts that belong to the bytes, not the path: every copy of a content shares them.
CONTENT_FACTS = ("width", "height", "format", "taken", "camera", "burst", "exif_tags", "frames")


def files_to_arrow(records: list[FileRecord]) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in FILES.names}
    for record in records:
        row = asdict(record)
        row["key"] = record.key
        for name in FILES.names:
            columns[name].append(row[name])
    return pa.table(columns, schema=FILES)


def files_from_arrow(table: pa.Table) -> list[FileRecord]:
    data = table.select(FILE_FIELDS).to_pydict()
    rows = (dict(zip(FILE_FIELDS, row)) for row in zip(*(data[n] for n in FILE_FIELDS)))
    return [FileRecord(**{k: v for k, v in row.items() if v is not None}) for row in rows]


@dataclass(frozen=True)
class Decision:
    key: str
    kind: str
    contents: tuple[str, ...]
    paths: tuple[str, ...] = ()
    created: float = 0.0
