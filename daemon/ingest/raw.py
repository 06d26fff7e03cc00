"""Camera RAW files (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2, PEF, ...) through LibRaw's Python binding rawpy.

Recognising a picture needs a few hundred pixels a side. Every camera embeds a JPEG (a few: a small bitmap) preview
for its own screen, and decoding that is about ten times faster than demosaicing the sensor data (BENCHMARKS.md),
so only the preview is decoded. The size reported is the sensor's (what the `resolution` policy should compare),
not the preview's.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import IO, Any

from PIL import Image

from dedupd.ingest.capture import read_capture

# LibRaw's flip: 3 = turn 180°, 5 = turn 90° counter-clockwise, 6 = turn 90° clockwise to display upright.
_FLIP_TRANSPOSE = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


class RawError(Exception):
    """A RAW file without a usable preview; ``reason`` is a DecodeError reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RawPreview:
    image: Image.Image  # the embedded preview as stored (not rotated, not loaded when a JPEG)
    sensor: tuple[int, int]  # the visible sensor area (width, height) as displayed, i.e. after the flip
    flip: int  # LibRaw's orientation of the sensor data
    taken: str  # LibRaw's capture time "YYYY:MM:DD HH:MM:SS", "" when unknown (no sub-seconds, no offset)


def read_preview(fp: IO[bytes], known_time: bool = False) -> RawPreview:
    """The embedded preview of an open RAW file, or RawError("no preview") and friends.

    LibRaw's capture time is asked for only when neither the file's own EXIF (known_time) nor the preview's has
    one: rawpy unpacks the whole sensor data to answer (a quarter second for 24 MP here)."""
    rawpy = _rawpy()
    fp.seek(0)  # LibRaw reads the whole file from here into a buffer of its own
    try:
        with rawpy.imread(fp) as raw:
            sizes = raw.sizes
            image = _image(rawpy, raw.extract_thumb())
            taken = "" if known_time or read_capture(image).taken else _taken(raw)
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        raise RawError("no preview") from None
    except rawpy.LibRawFileUnsupportedError:
        raise RawError("not a RAW file LibRaw can read") from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError):
        raise RawError("truncated") from None
    except rawpy.LibRawError as exc:
        raise RawError(f"corrupt ({type(exc).__name__})") from None
    sensor = (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)
    return RawPreview(image, sensor, sizes.flip, taken)


def _image(rawpy: Any, thumb: Any) -> Image.Image:
    """The preview opened lazily: a JPEG is only parsed here, so the caller can still draft it."""
    if thumb.format == rawpy.ThumbFormat.JPEG:
        return Image.open(io.BytesIO(thumb.data), formats=("JPEG",))
    return Image.fromarray(thumb.data)


def _rawpy() -> Any:
    import rawpy  # here, not at the top: a scan without RAW files never loads LibRaw

    # rawpy warns in any child process when the default start method is fork (OpenMP may deadlock after a fork).
    # Decode workers come from a forkserver (decode_pool), and extracting a preview runs no OpenMP code.
    warnings.filterwarnings("ignore", message="rawpy is being used in a process created by multiprocessing")
    return rawpy


def upright(image: Image.Image, flip: int) -> Image.Image:
    """The preview turned as the camera was held (previews are stored the way the sensor lies)."""
    transpose = _FLIP_TRANSPOSE.get(flip)
    return image.transpose(transpose) if transpose is not None else image


def _taken(raw: Any) -> str:
    stamp = getattr(getattr(raw, "other", None), "timestamp", None)  # rawpy >= 0.26
    if stamp is None or stamp.year < 1971:
        return ""
    return str(stamp.strftime("%Y:%m:%d %H:%M:%S"))
