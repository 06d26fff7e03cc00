"""A static HTML gallery of a duplicate report, for eyes rather than scripts.

The page is opened straight from disk (``file://``), often on a machine with no network, and it shows file names
that anyone could have chosen. So everything is inline or relative (no scripts, fonts, CDNs or absolute URLs),
every piece of text is escaped, and a Content-Security-Policy forbids scripts and remote loads in case an escaping
bug ever slips through.

Thumbnails are expensive (a decode per photo) and identical for identical bytes, so they are cached under the
store keyed by content hash and size, and only hard-linked or copied into the gallery. A gallery is a folder dedupd
writes itself: it is marked and remembered as one (own_folders.remember) before its first file lands.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from dedupd.ingest.decode import Decoded, DecodeError, decode
from dedupd.ingest.hashing import DIGEST_SIZE
from dedupd.output.report import entry_path, human_bytes
from dedupd.own_folders import remember
from dedupd.paths import atomic_write, normalise_root

Decoder = Callable[..., Decoded]
Info = dict[str, Any]

THUMBS = "thumbs"
INDEX = "index.html"
JPEG_QUALITY = 85

KEEP, DUPLICATE, SIMILAR = "keep", "duplicate", "similar"
# Follows the role's badge, so the card reads e.g. "duplicate — will be removed by purge".
ROLE_TEXT = {
    KEEP: "— the copy that stays",
    DUPLICATE: "— will be removed by purge",
    SIMILAR: "— never removed",
}

# The two keys cache_name makes: a content hash as ingest.hashing writes it, or _FROM_PATH and a digest of the same
# size of the path and stat. _THUMB_NAME is built from the same pieces, so it matches every name cache_name makes
# and nothing a user is likely to have put in DIR/thumbs (holiday-1.jpg, DSC-0042.jpg): only those are pruned.
_CONTENT = re.compile(f"[0-9a-f]{{{2 * DIGEST_SIZE}}}")
_FROM_PATH = "p"
_THUMB_NAME = re.compile(rf"{_FROM_PATH}?{_CONTENT.pattern}-[1-9][0-9]*\.jpg")
# C0 controls and DEL in a file name would be invisible (or break lines): show them as Unicode control pictures.
# C1 controls and bidi overrides are spelled out, since an override can make "evil\u202egpj.exe" read "evilexe.jpg".
_BIDI = [*range(0x200E, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_VISIBLE = {c: 0x2400 + c for c in range(0x20)} | {0x7F: 0x2421}
_VISIBLE |= {c: f"<U+{c:04X}>" for c in [*range(0x80, 0xA0), *_BIDI]}

# script-src 'none' turns "no JS" into a guarantee. img-src also allows file: because browsers disagree on whether a
# file:// page's 'self' covers the files beside it; file: is local either way, and no host is allowed anywhere.
CSP = "default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


@dataclass(frozen=True)
class Thumb:
    src: str | None  # relative to index.html; None when the photo could not be decoded
    error: str | None = None


@dataclass(frozen=True)
class Tile:
    """One member as a card shows it: its report entry, its role (keeper, duplicate, similar) and thumbnail."""

    info: Info
    role: str
    thumb: Thumb


# --- entry point -------------------------------------------------------------------------------------------------


def write_gallery(
    report: dict,
    out_dir: str | os.PathLike,
    store_path: str | os.PathLike,
    thumb_side: int = 256,
    *,
    decoder: Decoder = decode,
) -> Path:
    """Write OUT_DIR/index.html and OUT_DIR/thumbs/*.jpg for ``report``, thumbnails cached in the store's thumbs/;
    returns the index.html path."""
    folder = normalise_root(out_dir)  # ~ expanded: the folder written is the one marked and remembered
    # Here, not in each caller: whoever writes a gallery (the daemon's report.html_dir, `report --format html`),
    # it is never indexed, even once the config names another html_dir and the old gallery stays inside a root.
    remember(Path(store_path), folder)
    out = Path(os.fsdecode(folder))
    thumbs = Thumbnails(Path(store_path) / THUMBS, out / THUMBS, thumb_side, decoder)
    listed = [*report.get("groups", []), *report.get("similar_groups", [])]
    groups = sorted(listed, key=lambda g: -int(g.get("bytes_reclaimable") or 0))
    cards = [render_card(n, group_tiles(g, thumbs)) + "\n" for n, g in enumerate(groups, 1)]
    thumbs.prune()
    index = out / INDEX
    atomic_write(index, render_page(report, groups, cards).encode("utf-8"))
    return index


def group_tiles(group: dict, thumbs: Thumbnails) -> list[Tile]:
    members = [(group.get("keep_info") or {"path": group["keep"]}, KEEP)]
    members += [(info, DUPLICATE) for info in duplicate_infos(group)]
    members += [(info, SIMILAR) for info in group.get("similar", [])]
    return [Tile(info, role, thumbs.get(info)) for info, role in members]


def duplicate_infos(group: dict) -> list[Info]:
    # A report from the old tool has bare paths only; it still gets a gallery, with "unknown" for the rest.
    details = group.get("duplicate_details")
    return details if details is not None else [{"path": path} for path in group.get("duplicates", [])]


# --- thumbnails --------------------------------------------------------------------------------------------------


class Thumbnails:
    """Cached thumbnails, published into one gallery's thumbs/ folder."""

    def __init__(self, cache: Path, published: Path, side: int, decoder: Decoder) -> None:
        self.cache, self.published, self.side, self.decoder = cache, published, side, decoder
        self.used: set[str] = set()
        published.mkdir(parents=True, exist_ok=True)

    def get(self, info: Info) -> Thumb:
        name = cache_name(info, self.side)
        cached = self.cache / name
        if not is_cached(cached):
            try:
                render_thumbnail(entry_path(info), cached, self.side, self.decoder)
            except DecodeError as exc:  # not cached: the file may be readable again next time
                return Thumb(None, exc.reason)
        publish(cached, self.published / name)
        self.used.add(name)
        return Thumb(f"{THUMBS}/{name}")

    def prune(self) -> None:
        """Drop thumbnails an earlier gallery in the same folder used and this one does not."""
        if self.published.resolve() == self.cache.resolve():  # --out pointed into the store: that is the cache
            return
        for path in self.published.iterdir():
            if is_thumb_name(path.name) and path.name not in self.used:
                path.unlink(missing_ok=True)


def is_cached(path: Path) -> bool:
    # Thumbnails are written without fsync (thousands of them); a power cut can leave an empty one behind.
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def cache_name(info: Info, side: int) -> str:
    # Same bytes, same picture: exact copies share one thumbnail. A report without a usable content hash falls
    # back to the path and stat, which still changes whenever the file does.
    content = str(info.get("content") or "")
    if not _CONTENT.fullmatch(content):
        stamp = f"{info.get('size')}:{info.get('mtime_ns')}".encode()
        digest = hashlib.blake2b(entry_path(info) + b"\0" + stamp, digest_size=DIGEST_SIZE)
        content = _FROM_PATH + digest.hexdigest()
    return f"{content}-{side}.jpg"


def is_thumb_name(name: str) -> bool:
    """A name cache_name could have made (side >= 1): the only files prune() may remove from DIR/thumbs."""
    return _THUMB_NAME.fullmatch(name) is not None


def render_thumbnail(path: bytes, target: Path, side: int, decoder: Decoder) -> None:
    # draft_side lets a JPEG decode at 1/2..1/8 scale; decode has already applied the EXIF orientation.
    picture = decoder(path, draft_side=side).image
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True, icc_profile=rgb_profile(picture))
    atomic_write(target, buffer.getvalue(), durable=False)  # other galleries share the cache: never a half thumbnail


def rgb_profile(picture: Image.Image) -> bytes | None:
    # Keeps wide-gamut (Display P3) phone photos from looking washed out. A CMYK or grey profile would mislabel
    # the RGB pixels decode produced, so only an RGB one is carried over.
    icc = picture.info.get("icc_profile")
    return icc if isinstance(icc, bytes) and icc[16:20] == b"RGB " else None


def publish(cached: Path, target: Path) -> None:
    if target.exists():  # the name is the content hash: whatever is there already is this picture
        return
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        os.link(cached, temp)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(cached, temp)
    os.replace(temp, target)


# --- HTML --------------------------------------------------------------------------------------------------------


def render_page(report: dict, groups: Sequence[dict], cards: Iterable[str]) -> str:
    body = "".join(cards) or '<p class="empty">No duplicates found.</p>\n'
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>dedupd — {len(groups)} duplicate groups</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"{render_header(report, groups)}<main>\n{body}</main>\n</body>\n</html>\n"
    )


def render_header(report: dict, groups: Sequence[dict]) -> str:
    duplicates = report.get("total_duplicates", sum(len(g.get("duplicates", [])) for g in groups))
    reclaim = int(report.get("bytes_reclaimable") or sum(int(g.get("bytes_reclaimable") or 0) for g in groups))
    facts = [
        ("groups", str(len(groups))),
        ("duplicates", str(duplicates)),
        ("reclaimable", human_size(reclaim)),
        ("images scanned", str(report.get("total_images", "?"))),
        ("threshold", str(report.get("threshold", "?"))),
        ("model", str(report.get("model", "?"))),
        ("keep policy", str(report.get("keep_policy", "?"))),
        ("generated", str(report.get("generated_at", "?"))),
    ]
    roots = ", ".join(readable(r) for r in report.get("roots", []))
    return (
        '<header>\n<h1>dedupd duplicate report</h1>\n<dl class="totals">'
        + "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)
        + "</dl>\n"
        + (f'<p class="roots">roots: <code>{esc(roots)}</code></p>\n' if roots else "")
        + "</header>\n"
    )


def render_card(number: int, entries: Sequence[Tile]) -> str:
    dups = sum(e.role == DUPLICATE for e in entries)
    similar = sum(e.role == SIMILAR for e in entries)
    freed = sum(int(e.info.get("size") or 0) for e in entries if e.role == DUPLICATE)
    title = f"Group {number}: {human_size(freed)} reclaimable · {dups} duplicate(s) · {similar} similar"
    members = "".join(render_member(e) for e in entries)
    return f'<section class="group" id="group-{number}">\n<h2>{esc(title)}</h2>\n<ul>\n{members}</ul>\n</section>'


def render_member(entry: Tile) -> str:
    info = entry.info
    return (
        f'<li class="member {entry.role}">\n{render_thumb(entry)}\n'
        f'<p class="role"><span class="badge">{esc(entry.role)}</span> {esc(ROLE_TEXT[entry.role])}</p>\n'
        f"<dl>{render_facts(entry)}</dl>\n"
        f'<p class="path"><code>{esc(display_path(info))}</code></p>\n</li>\n'
    )


def render_thumb(entry: Tile) -> str:
    if entry.thumb.src is None:  # a box, not an <img>: a missing picture must not look like a broken page
        return '<div class="thumb none" role="img" aria-label="no preview"><span>no preview</span></div>'
    alt = f"thumbnail of {display_path(entry.info)}"
    return f'<img class="thumb" src="{esc(entry.thumb.src)}" alt="{esc(alt)}" loading="lazy">'


def render_facts(entry: Tile) -> str:
    info = entry.info
    rows = [
        ("cosine", esc("keeper" if entry.role == KEEP else cosine_text(info.get("cosine")))),
        ("size", esc(human_size(info.get("size")))),
        ("resolution", esc(resolution(info))),
        ("modified", time_html(info.get("mtime_ns"))),
    ]
    rows += [("held back", esc(str(info["why"])))] if info.get("why") else []  # burst guard, a decision...
    rows += [("preview", esc(f"not available: {entry.thumb.error}"))] if entry.thumb.error else []
    rows += [("companions", esc(companions_text(info)))] if info.get("companions") else []
    rows += [] if os.path.lexists(entry_path(info)) else [("on disk", "no longer exists")]
    return "".join(f'<dt>{esc(k)}</dt><dd class="{k.replace(" ", "-")}">{v}</dd>' for k, v in rows)


# --- text --------------------------------------------------------------------------------------------------------


def esc(text: str) -> str:
    return html.escape(readable(text), quote=True)


def readable(text: str) -> str:
    """Valid, visible Unicode: undecodable path bytes (surrogateescape) become U+FFFD, controls become symbols."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace").translate(_VISIBLE)


def display_path(info: Info) -> str:
    return entry_path(info).decode("utf-8", "replace")


def companions_text(info: Info) -> str:
    """What travels with this photo: "xmp IMG_1.xmp, live IMG_1.MOV"."""
    return ", ".join(
        f"{c['kind']} {os.path.basename(entry_path(c)).decode('utf-8', 'replace')}" for c in info["companions"]
    )


def human_size(size: object) -> str:
    return human_bytes(size) if isinstance(size, int) else "unknown"


def resolution(info: Info) -> str:
    width, height = info.get("width"), info.get("height")
    return f"{width} × {height}" if width and height else "unknown"


def time_html(mtime_ns: object) -> str:
    if not isinstance(mtime_ns, int):
        return "unknown"
    stamp = iso_time(mtime_ns)
    return f'<time datetime="{esc(stamp)}">{esc(stamp.replace("T", " "))}</time>'  # the space lets it wrap


def iso_time(mtime_ns: int) -> str:
    # Local time with its offset: what the owner's file manager shows, and still unambiguous.
    return datetime.fromtimestamp(mtime_ns / 1e9).astimezone().isoformat(timespec="seconds")


def cosine_text(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "unknown"


STYLE = """
:root { color-scheme: light dark; --bg: #f4f5f7; --card: #fff; --fg: #1d2330; --muted: #5b6475; --line: #d9dde5;
  --keep: #1a7f37; --dup: #c2410c; --sim: #2563eb; --thumb: #e6e8ed; }
@media (prefers-color-scheme: dark) { :root { --bg: #14171c; --card: #1e232b; --fg: #e6e9ef; --muted: #9aa3b2;
  --line: #323946; --keep: #3fb950; --dup: #f0883e; --sim: #6ea8fe; --thumb: #2a303a; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 1.5rem; background: var(--bg); color: var(--fg);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", "Liberation Sans", sans-serif; }
header { margin-bottom: 1.5rem; }
h1 { margin: 0 0 .75rem; font-size: 1.5rem; }
.totals { display: flex; flex-wrap: wrap; gap: .5rem; margin: 0; }
.totals div { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .35rem .7rem; }
.totals dt { font-size: .75rem; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.totals dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.roots { color: var(--muted); }
.group { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 1rem;
  margin-bottom: 1.25rem; }
.group h2 { margin: 0 0 .75rem; font-size: 1.05rem; }
.group ul { display: flex; flex-wrap: wrap; gap: 1rem; list-style: none; margin: 0; padding: 0; }
.member { width: 232px; border: 2px solid var(--line); border-radius: 8px; padding: .5rem; }
.member.keep { border-color: var(--keep); }
.member.duplicate { border-color: var(--dup); }
.member.similar { border-color: var(--sim); border-style: dashed; }
.thumb { display: flex; width: 212px; height: 212px; object-fit: contain; background: var(--thumb);
  border-radius: 4px; align-items: center; justify-content: center; color: var(--muted); }
.thumb.none { background: repeating-linear-gradient(45deg, var(--thumb) 0 10px, transparent 10px 20px);
  border: 1px dashed var(--muted); font-weight: 600; }
.role { margin: .5rem 0 .25rem; font-size: .8rem; color: var(--muted); }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 999px; color: #fff; font-weight: 700;
  text-transform: uppercase; font-size: .7rem; letter-spacing: .05em; }
.keep .badge { background: var(--keep); }
.duplicate .badge { background: var(--dup); }
.similar .badge { background: var(--sim); }
.member dl { display: grid; grid-template-columns: auto 1fr; gap: 0 .5rem; margin: .25rem 0; font-size: .8rem; }
.member dt { color: var(--muted); }
.member dd { margin: 0; overflow-wrap: anywhere; }
.member dd.preview, .member dd.on-disk { color: var(--dup); font-weight: 600; }
.path { margin: .25rem 0 0; font-size: .75rem; }
.path code, .roots code { overflow-wrap: anywhere; unicode-bidi: isolate; }
.empty { font-size: 1.2rem; color: var(--muted); }
"""
