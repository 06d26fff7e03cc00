"""Capture facts from EXIF and XMP: when, with which camera, in which burst.

They let the burst guard tell a resized copy of one shot (same capture) from the next frame of a burst (a different
capture that merely looks the same), and let a file with richer metadata win a keep-policy tie.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from PIL import Image

EXIF_IFD = 0x8769
TAGS = {
    "taken": 0x9003,  # DateTimeOriginal
    "subsec": 0x9291,  # SubSecTimeOriginal
    "offset": 0x9011,  # OffsetTimeOriginal
    "make": 0x010F,
    "model": 0x0110,
    "serial": 0xA431,  # BodySerialNumber
    "unique_id": 0xA420,  # ImageUniqueID
}
# Burst / sequence ids that cameras and phones put in XMP (Google camera, Apple, Samsung, generic).
_XMP_BURST = re.compile(rb"(?:BurstID|BurstUUID|BurstId|SequenceID|burst_id)\s*(?:=\s*\"|>)([^\"<]{1,128})")


@dataclass(frozen=True)
class Capture:
    taken: str = ""  # "YYYY:MM:DD HH:MM:SS.subsec+offset" ("" when the file does not say)
    camera: str = ""  # make|model|serial
    burst: str = ""  # burst or sequence id
    exif_tags: int = 0  # how much metadata the file carries (a keep-policy tie-breaker)

    def to_dict(self) -> dict:
        return asdict(self)


def read_capture(im: Image.Image) -> Capture:
    """Never raises: a file with broken metadata simply has none."""
    try:
        exif = im.getexif()
    except Exception:  # noqa: BLE001 - metadata is a hint; a broken block must not make the image unreadable
        return Capture()
    return capture_from_exif(exif, _burst(im))


def capture_from_exif(exif: Image.Exif, burst: str = "") -> Capture:
    try:
        sub = exif.get_ifd(EXIF_IFD)
    except Exception:  # noqa: BLE001
        return Capture()
    values = {name: _text(sub.get(tag, exif.get(tag))) for name, tag in TAGS.items()}
    return Capture(
        taken=_taken(values),
        camera="|".join(values[k] for k in ("make", "model", "serial")).strip("|"),
        burst=burst,
        exif_tags=len(exif) + len(sub),
    )


# TIFF-based RAW files: Olympus (IIRO/MMOR) and Panasonic (IIU) only change TIFF's magic number.
_INTEL, _MOTOROLA = b"II*\x00", b"MM\x00*"
_TIFF_LIKE = {_INTEL: _INTEL, _MOTOROLA: _MOTOROLA, b"IIRO": _INTEL, b"MMOR": _MOTOROLA, b"IIU\x00": _INTEL}


def tiff_capture(head: bytes) -> Capture:
    """Capture facts from the start of a TIFF-based RAW file (DNG, CR2, NEF, ARW, PEF, ORF, RW2); never raises."""
    magic = _TIFF_LIKE.get(head[:4])
    if magic is None:
        return Capture()
    exif = Image.Exif()
    try:
        exif.load(magic + head[4:])
    except Exception:  # noqa: BLE001 - a RAW whose IFD lies beyond the head (or is broken) has no facts here
        return Capture()
    return capture_from_exif(exif)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip("\x00 ") if value is not None else ""


def _taken(values: dict[str, str]) -> str:
    if not values["taken"]:
        return ""
    sub = f".{values['subsec']}" if values["subsec"] else ""
    return f"{values['taken']}{sub}{values['offset']}"


def _burst(im: Image.Image) -> str:
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp") or b""
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", "replace")
    match = _XMP_BURST.search(xmp)
    return match.group(1).decode("utf-8", "replace").strip() if match else ""


def different_captures(a: Capture | dict, b: Capture | dict) -> bool:
    """True only when the metadata proves two shots: same camera, and different time or different burst id.

    Missing metadata proves nothing (then the embedding decides, as before); a re-encode or resize keeps the
    capture time and camera, so it stays a duplicate.
    """
    a, b = _as_dict(a), _as_dict(b)
    if not a["camera"] or a["camera"] != b["camera"]:
        return False
    if a["burst"] and b["burst"] and a["burst"] != b["burst"]:
        return True
    return bool(a["taken"] and b["taken"] and a["taken"] != b["taken"])


def _as_dict(c: Capture | dict) -> dict:
    return c.to_dict() if isinstance(c, Capture) else {**Capture().to_dict(), **c}
