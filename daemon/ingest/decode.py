"""Turn any photo file into an upright RGB picture, or a DecodeError saying why not.

Everything that is known to go wrong with real photo libraries ends up here: EXIF
rotation, CMYK and 16-bit files, transparency, animations, HEIC from phones, truncated
copies, macOS ``._`` sidecars and hostile headers. Callers only ever see ``Decoded`` or
``DecodeError``; no Pillow exception type leaks out.
"""

from __future__ import annotations

import functools
import io
import os
import re
import struct
import threading
from dataclasses import dataclass, replace
from importlib import metadata
from typing import IO, Generic, TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, PngImagePlugin, TiffImagePlugin, UnidentifiedImageError, features

from dedupd.ingest.capture import Capture, read_capture, tiff_capture
from dedupd.ingest.hashing import bytes_hash, open_regular
from dedupd.ingest.raw import RawError, read_preview, upright
from dedupd.paths import SNIFF_BYTES, raw_format

# Twice Pillow's default MAX_IMAGE_PIXELS: the point where Pillow itself stops warning
# and refuses, so by default our refusal and Pillow's coincide.
DEFAULT_MAX_PIXELS = 178_956_970

# Only photo formats are tried. Pillow would otherwise also try ~40 exotic plugins
# (EPS even shells out to Ghostscript), and random bytes would now and then "decode" as
# a TGA. AVIF goes before HEIF because both accept the generic "mif1" brand and only
# Pillow's AVIF plugin rejects a foreign codec at open time instead of at load time.
# (No "MPO": Pillow opens those through the JPEG factory and has no opener by that name.)
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "AVIF", "HEIF")

_HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_WHITE = (255, 255, 255)

# ISO-BMFF brands: a file carrying one is a HEIF/AVIF we may merely lack a codec for.
_BMFF_IMAGE_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
)
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
_BOMB_MESSAGE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")

# A file is read whole (its bytes are the ones hashed), so a cap keeps a worker's memory bounded: 8 bytes a pixel of
# max_pixels (16-bit RGBA, uncompressed), but never under 2 GiB, because a RAW's sensor data and a TIFF's later pages
# do not count against max_pixels (only the preview and the first page are decoded): a 600 MP panorama DNG is a photo.
_MOST_BYTES_A_PIXEL = 8
_LEAST_SIZE_CAP = 2 << 30

_open_formats: tuple[str, ...] = ()
_registered = False
_register_lock = threading.Lock()


class DecodeError(Exception):
    """A file that cannot be turned into a picture; ``reason`` is short and stable enough to group on, ``content``
    the hash of the bytes the verdict is about ("" when none were read: then it belongs to the path)."""

    def __init__(self, reason: str, content: str = "") -> None:
        super().__init__(reason)
        self.reason, self.content = reason, content

    def __reduce__(self) -> tuple:
        return DecodeError, (self.reason, self.content)


Pixels = TypeVar("Pixels")


@dataclass(frozen=True)
class Decoded(Generic[Pixels]):
    # decode(): an RGB PIL image, upright, possibly reduced by draft; decode_pool.decode_for_model with the model's
    # preprocessing: that image already preprocessed (a preprocess.Prepared).
    image: Pixels
    width: int  # full resolution as displayed (after orientation), never the draft size
    height: int
    format: str  # Pillow's format name: "JPEG", "PNG", "HEIF", ...
    capture: Capture = Capture()  # EXIF/XMP capture facts (burst guard, keep-policy ties)
    frames: int = 1  # pages or animation frames: only the first is decoded and embedded
    content: str = ""  # the hash of the very bytes decoded (hashing.bytes_hash): what the picture is evidence for


# Raised when dedupd's own decoding learns to read something it refused before (a format, a tolerated defect).
DECODE_REVISION = 1
_DECODING_LIBRARIES = ("pillow", "pillow-heif", "rawpy")


@functools.cache
def decoders(max_pixels: int) -> str:
    """What an unreadable verdict is reached with: dedupd's decode revision, the decoding libraries' versions and
    the pixel limit. The store keeps it with the verdict, and a verdict reached otherwise is tried again: an
    upgraded Pillow, pillow-heif or LibRaw may read what the old ones could not, and a raised scan.max_pixels
    admits what it refused."""
    libraries = (f"{name} {_version(name)}" for name in _DECODING_LIBRARIES)
    return ", ".join([f"dedupd {DECODE_REVISION}", *libraries, f"max_pixels {max_pixels}"])


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def register_plugins() -> None:
    """Make HEIF (and, on Pillow builds without it, AVIF) openable. Safe to call repeatedly."""
    global _registered, _open_formats
    if _registered:  # lock-free fast path: decode() calls this for every file
        return
    with _register_lock:
        if _registered:
            return
        _register_pillow_heif()
        Image.init()
        # Image.open raises KeyError for a listed format nobody registered (e.g. no pillow-heif).
        _open_formats = tuple(name for name in _FORMATS if name in Image.OPEN)
        _registered = True


def _register_pillow_heif() -> None:
    try:
        import pillow_heif
    except ImportError:  # HEIC files then fail with "unsupported format", everything else works
        return
    pillow_heif.register_heif_opener()
    register_avif = getattr(pillow_heif, "register_avif_opener", None)  # gone in pillow-heif >= 1.0
    if not features.check("avif") and register_avif is not None:
        register_avif()


def decode(
    path: str | bytes | os.PathLike, draft_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Decoded[Image.Image]:
    """Decode the first frame of ``path`` into an upright RGB image.

    With ``draft_side`` a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose
    shorter side is still >= draft_side, and a HEIF may use an embedded thumbnail of
    that size; other formats are decoded at full size.

    The file is read once, whole, and decoded from memory, and the result (or the DecodeError) carries the hash of
    those bytes: the file may be rewritten at any moment after the scan hashed it, and a vector must never be
    stored under a content other than the one it was computed from (the pipeline compares the two).
    """
    register_plugins()
    content = ""
    try:
        data = _read_whole(path, max_pixels)
        content = bytes_hash(data)
        decoded = _decode_bytes(io.BytesIO(data), os.fsencode(path), draft_side, max_pixels)
        return replace(decoded, content=content)
    except DecodeError as exc:
        raise DecodeError(exc.reason, content) from None
    except Exception as exc:  # noqa: BLE001 - the contract is that only DecodeError escapes
        raise DecodeError(_reason(exc), content) from exc


def size_cap(max_pixels: int) -> int:
    """The largest file decode() reads: a huge file with an image name must not fill a worker's memory."""
    return max(max_pixels * _MOST_BYTES_A_PIXEL, _LEAST_SIZE_CAP)


def _read_whole(path: str | bytes | os.PathLike, max_pixels: int) -> bytes:
    with open_regular(path, buffering=0) as fp:  # a FIFO swapped in must not block a worker forever
        size, limit = os.fstat(fp.fileno()).st_size, size_cap(max_pixels)
        if size > limit:
            raise DecodeError(f"too large ({size} > {limit} bytes: 2 GiB or scan.max_pixels x 8, the larger)")
        return _read_up_to(fp, size + 1)  # a file still growing reads one byte past its size: its hash then differs


def _read_up_to(fp: IO[bytes], wanted: int) -> bytes:
    """One read almost always; Linux returns at most 2 GiB - 4 KiB from one, so larger files take more."""
    chunks = [fp.read(wanted)]
    got = len(chunks[0])
    while got < wanted and (chunk := fp.read(wanted - got)):
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decode_bytes(fp: io.BytesIO, name: bytes, draft_side: int | None, max_pixels: int) -> Decoded[Image.Image]:
    head = fp.getvalue()[:SNIFF_BYTES]
    fmt = raw_format(name, head)
    if fmt:
        return _decode_raw(fp, fmt, draft_side, max_pixels)
    return _decode_file_or_raw(fp, head, draft_side, max_pixels)


def _decode_file_or_raw(fp: IO[bytes], head: bytes, draft_side: int | None, max_pixels: int) -> Decoded:
    """A DNG (or another TIFF-based RAW) named .tif or found by scan.sniff fails as a TIFF; LibRaw may read it."""
    try:
        return _decode_file(fp, draft_side, max_pixels)
    except DecodeError as error:
        if not head.startswith((b"II*\x00", b"MM\x00*")):
            raise
        fp.seek(0)
        try:
            return _decode_raw(fp, "RAW", draft_side, max_pixels)
        except DecodeError:
            raise error from None


# Enough of a TIFF-based RAW file to hold IFD0 and the EXIF IFD, where cameras write them.
_RAW_METADATA_HEAD = 256 << 10


def _decode_raw(fp: IO[bytes], fmt: str, draft_side: int | None, max_pixels: int) -> Decoded:
    head = fp.read(_RAW_METADATA_HEAD)
    own = tiff_capture(head)
    try:
        preview = read_preview(fp, known_time=bool(own.taken))
    except RawError as exc:
        raise DecodeError(exc.reason) from None
    with preview.image as im:
        _check_pixels(im.size, max_pixels)
        if draft_side:
            im.draft(None, (draft_side, draft_side))
        im.load()
        image = _to_rgb(upright(im, preview.flip))
        capture = _raw_capture(own, read_capture(im), preview.taken)
    width, height = preview.sensor
    return Decoded(image=image, width=width, height=height, format=fmt, capture=capture)


def _raw_capture(own: Capture, from_preview: Capture, libraw_taken: str) -> Capture:
    """The RAW's own EXIF where the format is TIFF-based, else the preview's (RAF, some CR3); the capture time from
    the first of those that has one, else LibRaw's."""
    base = own if own.taken or own.camera else from_preview
    return base if base.taken else replace(base, taken=from_preview.taken or libraw_taken)


def _decode_file(fp: IO[bytes], draft_side: int | None, max_pixels: int) -> Decoded[Image.Image]:
    with _identify(fp) as im:
        _check_pixels(im.size, max_pixels)
        header_size = _header_size(im)
        frames = frame_count(im)  # before load: counting seeks through the pages and would drop loaded pixels
        if draft_side:
            # The same side for both axes: draft keeps the aspect ratio, so this bounds the
            # shorter side whichever way the picture is later rotated.
            im.draft(None, (draft_side, draft_side))
        im.load()
        capture = read_capture(im)  # before the transpose, which rewrites the EXIF block
        if _orientation(im) != 1:
            ImageOps.exif_transpose(im, in_place=True)
        image = _to_rgb(im)
        width, height = _full_size(header_size, image)
        return Decoded(image, width, height, str(im.format), capture, frames)


def frame_count(im: Image.Image) -> int:
    """Pages of a TIFF, frames of a GIF/APNG/WebP animation, images of a HEIF sequence. An MPO's second image is
    the camera's own preview or depth map of the same shot, so an MPO counts as one picture."""
    return 1 if im.format == "MPO" else max(1, int(getattr(im, "n_frames", 1)))


def _identify(fp: IO[bytes]) -> ImageFile.ImageFile:
    if _size(fp) == 0:
        raise DecodeError("empty file")
    try:
        return Image.open(fp, formats=_open_formats)
    except UnidentifiedImageError:
        raise DecodeError(_unidentified_reason(fp)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's global limit fires before we see the header; reopen without it so
        # that max_pixels decides and the message can name the dimensions.
        return _open_unchecked(fp)
    except (OSError, ValueError) as exc:
        # libwebp only says "could not create decoder object"; the RIFF length tells why.
        if getattr(exc, "errno", None) is None and _riff_truncated(fp):
            raise DecodeError("truncated") from exc
        raise


def _open_unchecked(fp: IO[bytes]) -> ImageFile.ImageFile:
    """What Image.open does, minus its pixel-count check: parses the header only."""
    fp.seek(0)
    prefix = fp.read(16)
    for name in _open_formats:
        if not _accepts(name, prefix):
            continue
        fp.seek(0)
        factory = Image.OPEN[name][0]
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):  # Image.open's "not this format"
            continue
    raise DecodeError("decompression bomb")


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise DecodeError(f"corrupt (size {width}x{height})")
    if width * height > max_pixels:
        raise DecodeError(f"decompression bomb ({width}x{height} > {max_pixels} px)")


def _orientation(im: Image.Image, header_only: bool = False) -> int:
    # PngImageFile.getexif() decodes the whole image to look for an eXIf chunk after IDAT.
    if header_only and isinstance(im, PngImagePlugin.PngImageFile) and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - broken EXIF must not cost us otherwise good pixels
        return 1
    return value if value in range(1, 9) else 1


def _header_size(im: ImageFile.ImageFile) -> tuple[int, int]:
    return _displayed_size(_stored_size(im), _orientation(im, header_only=True))


def _full_size(header_size: tuple[int, int], image: Image.Image) -> tuple[int, int]:
    # An undrafted image is the truth: it also catches an orientation that only turned up
    # while decoding (PNG eXIf after the pixel data). A drafted one only has the header.
    return image.size if sorted(image.size) == sorted(header_size) else header_size


def _stored_size(im: ImageFile.ImageFile) -> tuple[int, int]:
    # Recent Pillow (13 here) reports a TIFF's size already rotated while getexif() still has the
    # orientation (it only transposes, and drops the tag, on load); the IFD has the truth.
    if isinstance(im, TiffImagePlugin.TiffImageFile):
        return im.tag_v2.get(256, im.size[0]), im.tag_v2.get(257, im.size[1])
    return im.size


def _displayed_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    width, height = size
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    if im.mode in _HIGH_BIT_MODES:
        return _high_bit_to_grey(im).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return _flatten_on_white(im)
    return im if im.mode == "RGB" else im.convert("RGB")


def _flatten_on_white(im: Image.Image) -> Image.Image:
    if im.mode == "La":  # Pillow has no direct La -> RGBA conversion
        im = im.convert("LA")
    rgba = im.convert("RGBA")  # also un-premultiplies RGBa and applies tRNS / palette alpha
    flat = Image.new("RGB", rgba.size, _WHITE)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _high_bit_to_grey(im: Image.Image) -> Image.Image:
    # Pillow's own convert("L") clips 16/32-bit values at 255, turning most photos white.
    values = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    black, white = _grey_levels(values, im.mode)
    scaled = (values - black) * (255.0 / max(white - black, 1e-6))
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))


def _grey_levels(values: np.ndarray, mode: str) -> tuple[float, float]:
    """Black and white levels: the smallest conventional full scale that holds the data, else min..max."""
    if mode.startswith("I;16"):
        return 0.0, 65535.0
    low, high = float(values.min()), float(values.max())
    scales = (1.0, 255.0, 65535.0) if mode == "F" else (255.0, 65535.0)
    fitting = [top for top in scales if low >= 0 and high <= top]
    return (0.0, fitting[0]) if fitting else (low, high)


def _unidentified_reason(fp: IO[bytes]) -> str:
    fp.seek(0)
    head = fp.read(32)
    if head[4:8] == b"ftyp" and head[8:12] in _BMFF_IMAGE_BRANDS:
        return _bmff_reason(head[:16])
    if _riff_truncated(fp):
        return "truncated"
    if head.startswith(_IMAGE_SIGNATURES):
        return "corrupt (unreadable header)"
    return "not an image"


def _bmff_reason(prefix: bytes) -> str:
    # A HEIF/AVIF that no registered plugin even claims means a missing codec, not a bad file.
    claimed = any(_accepts(name, prefix) for name in _open_formats)
    return "corrupt (unreadable header)" if claimed else "unsupported format"


def _accepts(name: str, prefix: bytes) -> bool:
    # Pillow's AVIF plugin answers with a string (not True) when its codec is not compiled in.
    accept = Image.OPEN[name][1]
    return accept is None or accept(prefix) is True


def _riff_truncated(fp: IO[bytes]) -> bool:
    """Whether a RIFF (WebP) file is shorter than the length its header declares."""
    fp.seek(0)
    head = fp.read(12)
    if len(head) < 12 or not head.startswith(b"RIFF") or head[8:12] != b"WEBP":
        return False
    declared = struct.unpack("<I", head[4:8])[0] + 8
    return _size(fp) < declared


def _size(fp: IO[bytes]) -> int:
    here = fp.tell()
    end = fp.seek(0, io.SEEK_END)
    fp.seek(here)
    return end


def _reason(exc: BaseException) -> str:
    """Map whatever Pillow, a plugin or the OS raised to a DecodeError reason."""
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return _bomb_reason(str(exc))  # raised by a plugin itself (WebP, GIF frames)
    if isinstance(exc, OSError) and exc.errno is not None:  # Pillow's own OSErrors carry no errno
        return f"io error: {exc.strerror or exc}"
    if isinstance(exc, MemoryError):
        return "out of memory"
    message = str(exc)
    if isinstance(exc, EOFError | struct.error) or _says_truncated(message):
        return "truncated"
    detail = " ".join(message.split())[:100] or type(exc).__name__
    return f"corrupt ({detail})"


def _says_truncated(message: str) -> bool:
    lowered = message.lower()
    return "truncated" in lowered or "end of file" in lowered or "premature end" in lowered


def _bomb_reason(message: str) -> str:
    match = _BOMB_MESSAGE.search(message)
    return f"decompression bomb ({match[1]} > {match[2]} px)" if match else "decompression bomb"
