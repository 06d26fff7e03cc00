"""Apple's Live Photo ContentIdentifier: in the photo's MakerNote (tag 0x11) and in the video's QuickTime metadata
(key com.apple.quicktime.content.identifier). A photo and a video of one Live Photo carry the same value."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from PIL import Image

from dedupd.ingest.decode import register_plugins
from dedupd.ingest.hashing import open_regular

_MAKERNOTE = 0x927C
_EXIF_IFD = 0x8769
_APPLE = b"Apple iOS\x00"
_CONTENT_ID_TAG = 0x0011
_QT_KEY = b"com.apple.quicktime.content.identifier"
_CONTAINERS = {b"moov", b"udta", b"meta", b"ilst"}
_VIDEO_HEAD_LIMIT = 64 << 20  # the moov atom of a phone's clip is small; never read a whole film


def photo_content_id(path: bytes) -> str:
    register_plugins()  # a Live Photo is most often a HEIC
    try:
        with open_regular(path) as fp, Image.open(fp) as im:
            note = im.getexif().get_ifd(_EXIF_IFD).get(_MAKERNOTE, b"")
    except Exception:  # noqa: BLE001 - a photo we cannot read carries no identifier we could trust
        return ""
    return _apple_note_value(note, _CONTENT_ID_TAG) if isinstance(note, bytes) else ""


def _apple_note_value(note: bytes, wanted: int) -> str:
    # "Apple iOS\0", version (2 bytes), "MM", then a big-endian IFD; offsets count from the note's start.
    if not note.startswith(_APPLE) or note[12:14] not in (b"MM", b"II"):
        return ""
    order = ">" if note[12:14] == b"MM" else "<"
    try:
        (count,) = struct.unpack_from(order + "H", note, 14)
        for i in range(count):
            tag, kind, n, value = struct.unpack_from(order + "HHI4s", note, 16 + 12 * i)
            if tag == wanted and kind == 2:
                raw = value[:n] if n <= 4 else note[struct.unpack(order + "I", value)[0] :][:n]
                return raw.split(b"\0", 1)[0].decode("ascii", "replace")
    except struct.error:
        return ""
    return ""


def content_id(path: bytes) -> str:
    """The identifier a photo or a video carries, "" when none (or the file cannot be read)."""
    return video_content_id(path) if path.lower().endswith((b".mov", b".mp4")) else photo_content_id(path)


def video_content_id(path: bytes) -> str:
    try:
        with open_regular(path) as f:
            moov = _find_top(f, b"moov")
    except (OSError, struct.error):
        return ""
    if moov is None:
        return ""
    for meta in _atoms_named(moov, b"meta"):
        value = _meta_value(meta, _QT_KEY)
        if value:
            return value
    return ""


def _find_top(f: BinaryIO, name: bytes) -> bytes | None:
    """The body of a top-level atom, seeking past the others (the media data may come first and be large)."""
    offset, size_total = 0, os.fstat(f.fileno()).st_size
    while offset + 8 <= size_total:
        f.seek(offset)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = size_total - offset
        if size < header:
            return None
        if kind == name:
            return f.read(min(size - header, _VIDEO_HEAD_LIMIT))
        offset += size
    return None


def _children(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size < 8 or offset + size > len(data):
            return
        yield kind, data[offset + 8 : offset + size]
        offset += size


def _atoms_named(data: bytes, name: bytes) -> Iterator[bytes]:
    for kind, body in _children(data):
        if kind == name:
            yield body
        if kind in _CONTAINERS and kind != b"meta":
            yield from _atoms_named(body, name)


def _meta_value(meta: bytes, key: bytes) -> str:
    # QuickTime's meta is a plain container; ISO's (under udta) has a 4-byte version/flags first.
    if meta[4:8] != b"hdlr" and meta[:4] == b"\0\0\0\0":
        meta = meta[4:]
    atoms = dict(_children(meta))
    keys = atoms.get(b"keys", b"")
    index = _key_index(keys, key)
    if not index:
        return ""
    for kind, item in _children(atoms.get(b"ilst", b"")):
        if int.from_bytes(kind, "big") == index:
            for sub, body in _children(item):
                if sub == b"data":
                    return body[8:].decode("utf-8", "replace")
    return ""


def _key_index(keys: bytes, key: bytes) -> int:
    # version/flags (4), entry count (4), then (size, namespace, name) entries numbered from 1.
    offset, number = 8, 1
    while offset + 8 <= len(keys):
        (size,) = struct.unpack_from(">I", keys, offset)
        if size < 8:
            return 0
        if keys[offset + 8 : offset + size] == key:
            return number
        offset, number = offset + size, number + 1
    return 0
