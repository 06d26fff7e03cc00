"""Real camera-side files written byte by byte: a DNG with an embedded JPEG preview (LibRaw opens it), and a Live
Photo's two halves (a photo whose Apple MakerNote and a QuickTime video whose metadata carry a ContentIdentifier).

A DNG is a TIFF: IFD0 holds the sensor's CFA data (16-bit, uncompressed) with the DNG tags, a SubIFD holds the
preview as baseline JPEG (Compression 7, YCbCr), which is what LibRaw's extract_thumb returns.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

BYTE, ASCII, SHORT, LONG, SRATIONAL = 1, 2, 3, 4, 10
_SIZE = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, SRATIONAL: 8}
_IDENTITY = [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]


def _pack(kind: int, values) -> bytes:
    if kind == ASCII:
        return values.encode() + b"\0"
    if kind == BYTE:
        return bytes(values)
    if kind == SRATIONAL:
        return b"".join(struct.pack("<ii", n, d) for n, d in values)
    return struct.pack(f"<{len(values)}{'H' if kind == SHORT else 'I'}", *values)


class _Tiff:
    def __init__(self) -> None:
        self.buf = bytearray(b"II*\0\0\0\0\0")

    def blob(self, data: bytes) -> int:
        if len(self.buf) % 2:
            self.buf += b"\0"
        at = len(self.buf)
        self.buf += data
        return at

    def ifd(self, tags: list[tuple[int, int, object]]) -> int:
        entries = []
        for tag, kind, values in sorted(tags, key=lambda t: t[0]):
            data = _pack(kind, values)
            count = len(data) // _SIZE[kind]
            field = data.ljust(4, b"\0") if len(data) <= 4 else struct.pack("<I", self.blob(data))
            entries.append(struct.pack("<HHI", tag, kind, count) + field)
        return self.blob(struct.pack("<H", len(entries)) + b"".join(entries) + b"\0\0\0\0")


def write_dng(
    path: Path,
    preview: Image.Image | None,
    sensor: tuple[int, int] = (320, 240),
    taken: str = "2024:05:06 07:08:09",
    make: str = "Dedupd",
    model: str = "TestCam",
    orientation: int = 1,
    seed: int = 0,
    exif_time: bool = True,
) -> Path:
    """A DNG whose sensor is `sensor` (stored, before orientation) with `preview` as its embedded JPEG.

    Laid out as cameras do: header and IFDs first, pixel data last. Without exif_time the capture time is only in
    IFD0's DateTime (which LibRaw reads, and EXIF readers do not take for the capture time)."""
    cfa = np.random.default_rng(seed).integers(0, 4095, size=sensor[::-1], dtype=np.uint16).tobytes()
    jpeg = b""
    if preview is not None:
        buffer = io.BytesIO()
        preview.convert("RGB").save(buffer, "JPEG", quality=92)
        jpeg = buffer.getvalue()
    facts = (sensor, taken, exif_time, make, model, orientation, preview.size if preview else None, len(cfa), len(jpeg))
    head = len(_dng_head(0, *facts))  # the IFDs' size does not depend on where the data goes
    return _write(path, _dng_head(head, *facts) + cfa + jpeg)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _dng_head(data_at, sensor, taken, exif_time, make, model, orientation, preview_size, cfa_len, jpeg_len) -> bytes:
    width, height = sensor
    out = _Tiff()
    exif = out.ifd([(0x9003, ASCII, taken)] if exif_time else [(0x9000, BYTE, list(b"0231"))])
    tags: list[tuple[int, int, object]] = [
        (254, LONG, [0]), (256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [16]), (259, SHORT, [1]),
        (262, SHORT, [32803]), (273, LONG, [data_at]), (277, SHORT, [1]), (278, LONG, [height]),
        (279, LONG, [cfa_len]), (284, SHORT, [1]), (33421, SHORT, [2, 2]), (33422, BYTE, [0, 1, 1, 2]),
        (50717, LONG, [4095]), (271, ASCII, make), (272, ASCII, model), (274, SHORT, [orientation]),
        (306, ASCII, taken), (34665, LONG, [exif]), (50706, BYTE, [1, 4, 0, 0]), (50707, BYTE, [1, 1, 0, 0]),
        (50708, ASCII, f"{make} {model}"), (50721, SRATIONAL, _IDENTITY), (50778, SHORT, [21]),
    ]  # fmt: skip
    if preview_size is not None:
        sub = out.ifd([
            (254, LONG, [1]), (256, LONG, [preview_size[0]]), (257, LONG, [preview_size[1]]),
            (258, SHORT, [8, 8, 8]), (259, SHORT, [7]), (262, SHORT, [6]), (273, LONG, [data_at + cfa_len]),
            (277, SHORT, [3]), (278, LONG, [preview_size[1]]), (279, LONG, [jpeg_len]), (284, SHORT, [1]),
        ])  # fmt: skip
        tags.append((330, LONG, [sub]))
    out.buf[4:8] = struct.pack("<I", out.ifd(tags))
    if len(out.buf) % 2:
        out.buf += b"\0"
    return bytes(out.buf)


# --- Live Photos -----------------------------------------------------------------------------------------------------


def _atom(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def write_live_video(path: Path, content_id: str | None) -> Path:
    """A QuickTime file, media data first, whose moov/meta carries com.apple.quicktime.content.identifier."""
    meta = b""
    if content_id is not None:
        key = b"com.apple.quicktime.content.identifier"
        keys = _atom(b"keys", b"\0\0\0\0" + struct.pack(">I", 1) + struct.pack(">I4s", 8 + len(key), b"mdta") + key)
        data = _atom(b"data", struct.pack(">II", 1, 0) + content_id.encode())
        hdlr = _atom(b"hdlr", b"\0" * 8 + b"mdta" + b"\0" * 13)
        meta = _atom(b"meta", hdlr + keys + _atom(b"ilst", _atom(struct.pack(">I", 1), data)))
    video = _atom(b"ftyp", b"qt  \0\0\0\0qt  ") + _atom(b"mdat", bytes(range(256)) * 16) + _atom(b"moov", meta)
    path.write_bytes(video)
    return path


def apple_exif(content_id: str) -> bytes:
    """EXIF whose MakerNote is Apple's ("Apple iOS", big-endian IFD) with tag 0x11, the ContentIdentifier."""
    text = content_id.encode() + b"\0"
    ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0x11, 2, len(text), 14 + 2 + 12 + 4) + b"\0\0\0\0"
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif.get_ifd(0x8769)[0x927C] = b"Apple iOS\0" + b"\0\x01" + b"MM" + ifd + text
    return exif.tobytes()
