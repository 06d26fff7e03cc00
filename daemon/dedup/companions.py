"""Companion files: what travels with a photo but is not a picture itself.

Editors' sidecars (NAME.xmp, NAME.EXT.xmp), Apple's edit recipes (NAME.aae), Google Takeout's metadata
(NAME.EXT.json, NAME.EXT.supplemental-metadata.json and the names Takeout truncates) and Live Photo videos
(NAME.MOV / NAME.mp4 beside NAME.HEIC or NAME.JPG, whose Apple ContentIdentifier must agree where both carry one).
They are found next to the photo each time a report is made, never indexed and never grouped by themselves.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dedupd.paths import is_companion_name, is_image_name, looks_like_image, read_head

XMP, AAE, TAKEOUT, LIVE = "xmp", "aae", "takeout", "live"
KINDS = (XMP, AAE, TAKEOUT, LIVE)

_VIDEO = (b".mov", b".mp4")
_SUPPLEMENTAL = b".supplemental-metadata"
_TAKEOUT_NAME_MAX = 51  # Takeout cuts a metadata file's whole name to this many characters
_COPY_SUFFIX = re.compile(rb"^(?P<base>.*?)(?P<n>\(\d+\))(?P<ext>\.[^.]*)?$")


@dataclass(frozen=True)
class Companion:
    path: bytes
    kind: str
    shared: bool = False  # another photo in the folder claims it too (NAME.xmp beside NAME.CR2 and NAME.JPG)


def _split(name: bytes) -> tuple[bytes, bytes]:
    stem, ext = os.path.splitext(name)
    return stem, ext


def _takeout_stems(photo: bytes) -> tuple[list[bytes], bytes]:
    """Exact json stems that name this photo, and the full untruncated stem for Takeout's length cap."""
    match = _COPY_SUFFIX.match(photo)
    if match and match["ext"] is not None:  # NAME(1).EXT -> NAME.EXT(1).json / NAME.EXT.supplemental-metadata(1).json
        base, copy = match["base"] + match["ext"], match["n"]
    else:
        base, copy = photo, b""
    full = base + _SUPPLEMENTAL
    stems = [base + copy] + [full[:cut] + copy for cut in range(len(base) + 2, len(full) + 1)]
    return stems, full + copy


def claims(photo: bytes, name: bytes) -> str:
    """The companion kind `name` is of the photo named `photo` (both bare names in one folder), or ""."""
    lower, stem = name.lower(), _split(photo)[0]
    if lower in (stem.lower() + b".xmp", photo.lower() + b".xmp"):
        return XMP
    if lower == stem.lower() + b".aae":
        return AAE
    if _split(name)[0] == stem and _split(lower)[1] in _VIDEO:
        return LIVE
    if lower.endswith(b".json"):
        stems, full = _takeout_stems(photo)
        json_stem = name[:-5]
        if json_stem in stems:
            return TAKEOUT
        if len(name) == _TAKEOUT_NAME_MAX and full.startswith(json_stem):
            return TAKEOUT
    return ""


def _core(photo: bytes) -> bytes:
    """A prefix every companion name of this photo starts with: its stem without a "(1)" copy mark, cut where
    Takeout may cut it."""
    match = _COPY_SUFFIX.match(photo)
    stem = _split(match["base"] + (match["ext"] or b"") if match and match["ext"] is not None else photo)[0]
    return stem[: _TAKEOUT_NAME_MAX - len(b".json") - 1]


@dataclass
class CompanionFinder:
    """Companions of photos, from one sorted directory listing per folder (a finder lives for one report)."""

    content_id: Callable[[bytes], str] = lambda path: ""
    _listings: dict[bytes, list[bytes]] = field(default_factory=dict)
    _found: dict[bytes, tuple[Companion, ...]] = field(default_factory=dict)

    def __call__(self, photo: bytes) -> tuple[Companion, ...]:
        if photo not in self._found:
            self._found[photo] = self._find(photo)
        return self._found[photo]

    def _find(self, photo: bytes) -> tuple[Companion, ...]:
        folder, name = os.path.split(photo)
        nearby = self._starting_with(folder, _core(name))
        photos = [n for n in nearby if is_image_name(n)]
        out = []
        for other in nearby:
            kind = "" if is_image_name(other) else claims(name, other)
            if not kind or (kind == LIVE and not self._same_capture(photo, os.path.join(folder, other))):
                continue
            shared = any(p != name and claims(p, other) for p in photos)
            out.append(Companion(os.path.join(folder, other), kind, shared))
        return tuple(out)

    def _starting_with(self, folder: bytes, prefix: bytes) -> list[bytes]:
        names = self._listing(folder)
        lower = prefix.lower()
        # Companions differ from the photo in case now and then (IMG_1.JPG / IMG_1.xmp): compare lowered names.
        start = bisect.bisect_left(names, lower, key=bytes.lower)
        out = []
        for name in names[start:]:
            if not name.lower().startswith(lower):
                break
            out.append(name)
        return out

    def _listing(self, folder: bytes) -> list[bytes]:
        if folder not in self._listings:
            try:
                self._listings[folder] = sorted(os.listdir(folder), key=bytes.lower)
            except OSError:
                self._listings[folder] = []
        return self._listings[folder]

    def _same_capture(self, photo: bytes, video: bytes) -> bool:
        """A Live Photo's video is the photo's only where both carry Apple's ContentIdentifier and they agree, or
        where at least one carries none."""
        a, b = self.content_id(photo), self.content_id(video)
        return not (a and b) or a == b


def other_claimants(companion: bytes, photo: bytes) -> list[bytes]:
    """Photos other than `photo` beside the companion that claim it now (NAME.xmp of NAME.CR2 and NAME.JPG): while
    one is there, the companion stays with it."""
    folder, name = os.path.split(companion)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    mine = os.path.basename(photo)
    claiming = (n for n in names if n not in (mine, name) and claims(n, name))
    return [os.path.join(folder, n) for n in claiming if _is_photo(os.path.join(folder, n))]


def _is_photo(path: bytes) -> bool:
    """A photo by its name, or by its first bytes whatever its name (one `scan.sniff` indexes: `IMG_1` without an
    extension claims `IMG_1.xmp` as much as `IMG_1.JPG` does)."""
    name = os.path.basename(path)
    if is_image_name(name):
        return True
    return not is_companion_name(name) and looks_like_image(read_head(path))


def claimed_by(photo: bytes, companion: bytes) -> bool:
    """Whether `photo` claims `companion`, by their names, beside it."""
    (folder, name), (its_folder, its_name) = os.path.split(photo), os.path.split(companion)
    return folder == its_folder and bool(claims(name, its_name))


def no_companions(photo: bytes) -> tuple[Companion, ...]:
    return ()


def kinds(companions: Iterable[Companion]) -> frozenset[str]:
    return frozenset(c.kind for c in companions)


def differing(member: Iterable[Companion], keeper: Iterable[Companion]) -> frozenset[str]:
    """Kinds the keeper has too, but where a companion of the member has no keeper companion of that kind and size:
    it is not a byte copy of one (other edits in an XMP, another clip under the Live Photo's name), so its data
    would go with the member. A sidecar (small) by its bytes too; a video by its size only, so that a report never
    reads videos: the purge compares their bytes when it acts."""
    theirs = list(keeper)
    copies = by_kind_and_size(theirs)
    return frozenset(c.kind for c in member if c.kind in kinds(theirs) and not _has_copy(c, copies))


_SIDECAR_MAX = 1 << 20  # bytes: an XMP, AAE or Takeout JSON is a few KB; a larger one is compared by size only


def _has_copy(companion: Companion, copies: dict[tuple[str, int], list[bytes]]) -> bool:
    size = size_of(companion.path)
    same_size = copies.get((companion.kind, size), [])
    if companion.kind == LIVE or size > _SIDECAR_MAX or not same_size:
        return bool(same_size)
    mine = _read(companion.path)
    return mine is not None and any(_read(path) == mine for path in same_size)


def _read(path: bytes) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(_SIDECAR_MAX + 1)
    except OSError:
        return None


def by_kind_and_size(companions: Iterable[Companion]) -> dict[tuple[str, int], list[bytes]]:
    """Companions by what a byte copy of one must share with it: its kind and its size."""
    out: dict[tuple[str, int], list[bytes]] = {}
    for companion in companions:
        out.setdefault((companion.kind, size_of(companion.path)), []).append(companion.path)
    return out


def size_of(path: bytes) -> int:
    """-1 for a file that is gone or cannot be stat'ed: equal to no real size."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1
