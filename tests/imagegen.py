"""Deterministic test images and deliberately broken image files.

Shared by the test suite (``import imagegen`` from any test module: pytest's default
rootdir import mode puts ``tests/`` on ``sys.path``). Everything here is a pure function
of its arguments so that a failing test reproduces byte for byte.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dedupd.photos import photo  # noqa: F401 - the tests call imagegen.photo

PathLike = str | bytes | os.PathLike

# Orientation tag value -> the transpose that turns the *displayed* picture into the
# pixels a camera would store, i.e. the inverse of what a viewer applies.
_STORE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}

ORIENTATION_TAG = 0x0112


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return exif.tobytes()


def stored_pixels(displayed: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores so that a viewer honouring ``orientation`` shows ``displayed``."""
    method = _STORE_FOR_ORIENTATION.get(orientation)
    return displayed.copy() if method is None else displayed.transpose(method)


def save_jpeg(img: Image.Image, path: PathLike, quality: int = 90, exif_orientation: int | None = None) -> None:
    """Save ``img`` as stored pixels; ``exif_orientation`` only adds the tag, pixels stay as given."""
    extra = {} if exif_orientation is None else {"exif": exif_bytes(exif_orientation)}
    img.save(path, "JPEG", quality=quality, **extra)


def save_oriented_jpeg(displayed: Image.Image, path: PathLike, orientation: int, quality: int = 95) -> None:
    """A JPEG that a correct decoder shows as ``displayed`` (pixels stored rotated, tag set)."""
    save_jpeg(stored_pixels(displayed, orientation), path, quality=quality, exif_orientation=orientation)


def save_animation(frames: Sequence[Image.Image], path: PathLike, fmt: str) -> None:
    """Multi-frame GIF / WEBP / PNG (APNG) / TIFF."""
    first, rest = frames[0], list(frames[1:])
    first.save(path, fmt, save_all=True, append_images=rest, duration=40, loop=0)


def solid_frames(count: int, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    """Frames of distinct flat colours; frame 0 is pure red, no later frame is."""
    colours = [(255, 0, 0)] + [(0, (37 * i) % 200 + 40, (91 * i) % 256) for i in range(1, count)]
    return [Image.new("RGB", size, c) for c in colours]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_png_bomb_header(path: PathLike, w: int, h: int) -> None:
    """A well-formed PNG whose IHDR claims ``w`` x ``h`` RGB pixels but carries a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    Path(os.fsdecode(path)).write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def write_gif_with_huge_frame(path: PathLike, frame: int = 1, w: int = 60000, h: int = 60000) -> None:
    """A 32x32 GIF whose frame 0 (``frame=0``) or an appended frame 1 (``frame=1``) claims ``w`` x ``h``.

    Only the image descriptor lies; the pixel data stays a few bytes, as in a hostile file.
    """
    buf = io.BytesIO()
    Image.new("P", (32, 32), 1).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    assert data.endswith(b";")
    if frame == 0:
        at = _first_image_descriptor(bytes(data))
        data[at + 5 : at + 9] = struct.pack("<HH", w, h)
    else:
        # LZW min code size 2, one 2-byte sub-block (clear, a pixel, end), block terminator.
        data[-1:] = b"," + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x4c\x01\x00;"
    Path(os.fsdecode(path)).write_bytes(bytes(data))


def _first_image_descriptor(gif: bytes) -> int:
    """Offset of the first ',' block, skipping the colour table and extension blocks."""
    flags = gif[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while gif[pos : pos + 1] == b"!":
        pos += 2  # '!' and the extension label
        while gif[pos]:
            pos += gif[pos] + 1
        pos += 1  # sub-block terminator
    assert gif[pos : pos + 1] == b","
    return pos


def write_truncated(path_src: PathLike, path_dst: PathLike, fraction: float) -> None:
    """Copy the first ``fraction`` of ``path_src`` to ``path_dst`` (at least one byte)."""
    data = Path(os.fsdecode(path_src)).read_bytes()
    Path(os.fsdecode(path_dst)).write_bytes(data[: max(1, int(len(data) * fraction))])


def write_appledouble(path: PathLike) -> None:
    """A macOS AppleDouble ``._name`` resource-fork sidecar (magic 00 05 16 07)."""
    header = b"\x00\x05\x16\x07" + b"\x00\x02\x00\x00" + b"Mac OS X        " + struct.pack(">H", 1)
    entry = struct.pack(">III", 9, 50, 32)  # one Finder-info entry
    Path(os.fsdecode(path)).write_bytes((header + entry).ljust(82, b"\x00"))


def random_bytes(path: PathLike, n: int = 4096, seed: int = 0) -> None:
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    Path(os.fsdecode(path)).write_bytes(data)


def grey16(values: np.ndarray) -> Image.Image:
    """A 16-bit greyscale image ("I;16") from a uint16 array."""
    return Image.fromarray(np.asarray(values, dtype=np.uint16))


def palette_with_transparency(size: tuple[int, int] = (40, 30)) -> Image.Image:
    """Mode "P": left half index 0 (transparent, palette colour black), right half index 1 (blue)."""
    img = Image.new("P", size, 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    ImageDraw.Draw(img).rectangle((size[0] // 2, 0, size[0], size[1]), fill=1)
    img.info["transparency"] = 0
    return img


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute per-channel difference (0..255) of two same-size RGB images."""
    x = np.asarray(a.convert("RGB"), dtype=np.int16)
    y = np.asarray(b.convert("RGB"), dtype=np.int16)
    return float(np.abs(x - y).mean())


def write_chain(folder: Path, names: Sequence[str], step: float = 0.1425) -> None:
    """PNGs along one line in picture space, one `step` apart: under the PixelEmbedder (an 8x8 box thumbnail)
    neighbours are at cosine ~0.99 (duplicates at the default 0.985) and the two ends of three at ~0.96 (two
    pictures). 8x8 blocks scaled up with NEAREST, so the thumbnail sees exactly these values."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 8, 3))
    x -= x.mean()
    x /= np.linalg.norm(x)
    d = np.random.default_rng(2).normal(size=(8, 8, 3))
    d -= d.mean()
    d -= (d * x).sum() * x  # orthogonal to x, still zero-mean
    d *= step / np.linalg.norm(d)
    folder.mkdir(parents=True, exist_ok=True)
    scale = 100 / np.abs(x + d).max()
    for t, name in enumerate(names):
        v = x + (t - (len(names) - 1) / 2) * d
        pixels = np.clip(128 + v * scale, 0, 255).round().astype(np.uint8)
        Image.fromarray(pixels, "RGB").resize((96, 96), Image.Resampling.NEAREST).save(folder / name)
