"""The HTML gallery: static checks on the written files, and a real headless Chromium rendering them from file://."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import imagegen
import pytest
from PIL import Image
from support import PixelEmbedder, b, make_library

from dedupd import commands
from dedupd.config import load_config
from dedupd.dedup.groups import Group, Member
from dedupd.errors import UsageError
from dedupd.ingest.decode import DecodeError, decode
from dedupd.ingest.hashing import content_hash
from dedupd.output import gallery
from dedupd.output.report import build_report, entry_path
from dedupd.own_folders import remembered
from dedupd.paths import normalise_root
from dedupd.store import OK, OWN_MARKER, FileRecord

SIDE = 128  # small thumbnails keep the whole file fast; nothing here depends on the size
HOSTILE = b"caf\xff <b>\"x\"<i> & 'y'.jpg"  # not UTF-8, and every HTML special character


@dataclass
class Built:
    root: Path
    report: dict
    rotated: bytes  # EXIF orientation 6, displayed portrait
    rotated_twin: bytes  # the same picture stored upright
    broken: bytes  # in the report, but truncated since the scan


class CountingDecoder:
    """The decode seam: counts calls so that a test can see the cache being used."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, path, **kwargs):
        self.calls.append(os.fsencode(path))
        return decode(path, **kwargs)


def record(path: bytes, root: Path) -> FileRecord:
    st = os.stat(path)
    try:
        shown = decode(path)
        width, height = shown.width, shown.height
    except DecodeError:  # the broken file: the scan saw it whole
        width, height = 640, 480
    return FileRecord(
        path, b(root), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, content_hash(path), width, height, OK
    )


def build_library(root: Path) -> Built:
    """Three groups: exact copy + resize + hostile-named similar; a rotated duplicate; an undecodable duplicate."""
    for folder in ("camera", "backup", "odd"):
        (root / folder).mkdir(parents=True)
    a, a_copy, a_small = (b(root / p) for p in ("camera/a.jpg", "backup/a.jpg", "camera/a_small.jpg"))
    imagegen.photo(1, (640, 480)).save(os.fsdecode(a), quality=92)
    shutil.copyfile(a, a_copy)
    imagegen.photo(1, (320, 240)).save(os.fsdecode(a_small), quality=80)
    odd = os.path.join(b(root / "odd"), HOSTILE)
    imagegen.photo(1, (480, 360)).save(odd, "JPEG", quality=70)
    upright, rotated = b(root / "camera/portrait.jpg"), b(root / "backup/portrait_rot6.jpg")
    imagegen.photo(2, (300, 400)).save(os.fsdecode(upright), quality=92)
    imagegen.save_oriented_jpeg(imagegen.photo(2, (300, 400)), os.fsdecode(rotated), 6)
    c, broken = b(root / "camera/c.jpg"), b(root / "backup/c_broken.jpg")
    imagegen.photo(3, (640, 480)).save(os.fsdecode(c), quality=92)
    imagegen.write_truncated(c, broken, 0.05)
    r = {p: record(p, root) for p in (a, a_copy, a_small, odd, upright, rotated, c, broken)}
    groups = [
        Group(r[a], [Member(r[a_copy], 1.0), Member(r[a_small], 0.99312)], [Member(r[odd], 0.95071)]),
        Group(r[upright], [Member(r[rotated], 0.99876)]),
        Group(r[c], [Member(r[broken], 0.98765)]),
    ]
    report = build_report(groups, len(r), "lexi", 0.985, "test/pixels-v1", roots=[b(root)])
    return Built(root, report, rotated, upright, broken)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    return build_library(tmp_path_factory.mktemp("gallery") / "photos")


@pytest.fixture(scope="module")
def written(built, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("site")
    return gallery.write_gallery(built.report, base / "out", base / "store", SIDE)


def members(report: dict) -> list[dict]:
    return [info for g in report["groups"] for info in [g["keep_info"], *g["duplicate_details"], *g["similar"]]]


def member_html(page: str, path: bytes) -> str:
    """The <li> of the member with this path."""
    shown = html.escape(path.decode("utf-8", "replace"), quote=True)
    items = [li for li in page.split("<li ")[1:] if f"<code>{shown}</code>" in li]
    assert len(items) == 1, shown
    return items[0]


def thumb_of(out: Path, info: dict) -> Path:
    return out.parent / "thumbs" / gallery.cache_name(info, SIDE)


# --- static checks -----------------------------------------------------------------------------------------------


def test_every_member_is_listed_with_its_facts(built, written):
    page = written.read_text(encoding="utf-8")
    assert written.name == "index.html" and page.startswith("<!DOCTYPE html>")
    for info in members(built.report):
        item = member_html(page, entry_path(info))
        assert gallery.human_size(info["size"]) in item
        assert f"{info['width']} × {info['height']}" in item
        assert f'datetime="{gallery.iso_time(info["mtime_ns"])}"' in item
        if "cosine" in info:
            assert f'<dd class="cosine">{info["cosine"]:.4f}</dd>' in item


def test_each_group_has_one_keeper_and_roles_are_marked(built, written):
    page = written.read_text(encoding="utf-8")
    cards = page.split('<section class="group"')[1:]
    assert len(cards) == len(built.report["groups"]) == 3
    for card in cards:
        assert card.count('<li class="member keep">') == 1
        assert '<span class="badge">keep</span>' in card
    assert page.count('<li class="member duplicate">') == 4 and page.count('<li class="member similar">') == 1
    assert '<span class="badge">duplicate</span> — will be removed by purge' in page
    assert '<span class="badge">similar</span> — never removed' in page


def test_groups_are_sorted_by_bytes_reclaimable(built, tmp_path):
    report = {**built.report, "groups": sorted(built.report["groups"], key=lambda g: g["bytes_reclaimable"])}
    page = gallery.write_gallery(report, tmp_path / "out", tmp_path / "store", SIDE).read_text(encoding="utf-8")
    want = sorted(built.report["groups"], key=lambda g: -g["bytes_reclaimable"])
    shown = [page.index(f"<code>{html.escape(g['keep'])}</code>") for g in want]
    assert shown == sorted(shown)


def test_header_has_the_totals(built, written):
    header = written.read_text(encoding="utf-8").split("</header>")[0]
    report = built.report
    for value in (
        3,
        report["total_duplicates"],
        gallery.human_size(report["bytes_reclaimable"]),
        0.985,
        "test/pixels-v1",
        "lexi",
        report["generated_at"],
    ):
        assert f"<dd>{html.escape(str(value))}</dd>" in header


def test_nothing_is_fetched_from_anywhere(written):
    page = written.read_text(encoding="utf-8")
    assert not re.search(r"https?:|//[a-z]|@import|url\(|<script|<link|<iframe|<object", page, re.IGNORECASE)
    targets = re.findall(r'\s(?:src|href)="([^"]*)"', page)
    assert len(targets) == 7  # one per decodable member; the broken one has a placeholder box instead
    for target in targets:
        assert not target.startswith(("/", "file:")) and ".." not in target
        assert (written.parent / target).is_file()


def test_rotated_photo_gets_an_upright_portrait_thumbnail(built, written):
    by_path = {entry_path(i): i for i in members(built.report)}
    with (
        Image.open(thumb_of(written, by_path[built.rotated])) as rot,
        Image.open(thumb_of(written, by_path[built.rotated_twin])) as twin,
    ):
        assert rot.height == SIDE and rot.width < rot.height
        # Portrait alone would also pass for orientation 8 applied the wrong way: compare the pixels too.
        assert imagegen.mean_abs_diff(rot.resize(twin.size), twin) < 12
        assert imagegen.mean_abs_diff(rot.rotate(180).resize(twin.size), twin) > 25


def test_non_utf8_name_renders_escaped_with_replacement_chars(built, written):
    page = written.read_bytes().decode("utf-8")  # strict: the page itself is valid UTF-8
    item = member_html(page, os.path.join(b(built.root / "odd"), HOSTILE))
    assert "caf\ufffd &lt;b&gt;&quot;x&quot;&lt;i&gt; &amp; &#x27;y&#x27;.jpg" in item
    assert "<b>" not in page and "similar" in item and '<img class="thumb"' in item


def test_undecodable_member_gets_a_placeholder_and_says_why(built, written):
    item = member_html(written.read_text(encoding="utf-8"), built.broken)
    assert '<div class="thumb none"' in item and "<img" not in item
    assert "not available: truncated" in item


def test_second_run_reuses_the_cache(built, tmp_path):
    store, first = tmp_path / "store", CountingDecoder()
    cache = store / "thumbs"
    gallery.write_gallery(built.report, tmp_path / "one", store, SIDE, decoder=first)
    distinct = {i["content"] for i in members(built.report)}
    assert len(first.calls) == len(distinct)  # the exact copy shares its original's thumbnail
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(stamps) == len(distinct) - 1  # the broken file is not cached: it may be readable next time
    second = CountingDecoder()
    index = gallery.write_gallery(built.report, tmp_path / "two", store, SIDE, decoder=second)
    assert second.calls == [built.broken]
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    for name in stamps:  # same filesystem here, so hard links rather than copies
        assert os.path.samefile(cache / name, index.parent / "thumbs" / name)


def test_rerun_in_place_prunes_only_its_own_stale_thumbs(built, tmp_path):
    out, store = tmp_path / "out", tmp_path / "store"
    gallery.write_gallery(built.report, out, store, SIDE)
    (out / "thumbs" / "notes.txt").write_text("mine")
    smaller = {**built.report, "groups": built.report["groups"][:1]}
    gallery.write_gallery(smaller, out, store, SIDE)
    left = sorted(p.name for p in (out / "thumbs").iterdir())
    want = sorted({gallery.cache_name(i, SIDE) for i in members(smaller)} | {"notes.txt"})
    assert left == want
    own = os.fsdecode(OWN_MARKER)
    assert sorted(p.name for p in out.iterdir()) == sorted([own, "index.html", "thumbs"])  # no temp files left over
    assert len(list((store / "thumbs").iterdir())) == len({i["content"] for i in members(built.report)}) - 1


def test_a_gallery_is_marked_and_remembered_as_dedupds_own_by_its_writer(built, tmp_path):
    """Whoever writes it (the daemon's report.html_dir, `report --format html --out`): the walk never enters it, and
    the store's list keeps it out of the index even once the config names another html_dir."""
    out, store = tmp_path / "out", tmp_path / "store"
    gallery.write_gallery(built.report, out, store, SIDE)
    assert (out / os.fsdecode(OWN_MARKER)).is_dir()
    assert normalise_root(out) in remembered(store)


def test_folders_remembered_at_once_by_two_processes_are_all_kept(tmp_path):
    """The daemon's gallery and a purge's trash may be remembered at the same moment by two processes; the list was
    read, extended and written back unlocked, so one of them could be lost (and a keeper inside it trusted)."""
    store = tmp_path / "store"
    store.mkdir()
    script = (
        "import sys, time; from pathlib import Path; from dedupd.own_folders import remember\n"
        "while time.time() < float(sys.argv[4]): pass\n"  # both start together, imports done
        "for i in range(150): remember(Path(sys.argv[1]), f'{sys.argv[2]}/{sys.argv[3]}{i}'.encode())"
    )
    start = str(time.time() + 3)
    runs = [subprocess.Popen([sys.executable, "-c", script, str(store), str(tmp_path), tag, start]) for tag in "ab"]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    assert len(remembered(store)) == 300


def test_a_gallery_never_prunes_a_users_photo_from_a_thumbs_folder_it_did_not_write(built, tmp_path):
    """A gallery folder (`report --format html --out DIR`) whose thumbs/ the user then also keeps photos in (a web
    album): prune() unlinked every name matching [0-9A-Za-z]+-\\d+\\.jpg it did not use this time, which takes
    ordinary photo names (holiday-1.jpg, DSC-0042.jpg, IMG-20230704.jpg), unchecked and unjournaled. (A folder of the
    user's that was never a gallery is refused outright: see test_cli.)"""
    album = tmp_path / "web-album"
    gallery.write_gallery(built.report, album, tmp_path / "store", SIDE)
    names = ["holiday-1.jpg", "DSC-0042.jpg", "IMG-20230704.jpg", "deadbeef-128.jpg"]
    for seed, name in enumerate(names):
        imagegen.photo(41 + seed, (64, 48)).save(album / "thumbs" / name, quality=90)
    gallery.write_gallery(built.report, album, tmp_path / "store", SIDE)
    assert {name for name in names if (album / "thumbs" / name).exists()} == set(names)


def test_prune_recognises_every_name_the_cache_makes(tmp_path):
    """prune() removes only what is_thumb_name() accepts: a name cache_name makes that it did not accept would be
    left behind forever, so the two are checked together (a content hash, and the path fallback for a report
    without a usable one)."""
    photo = tmp_path / "a.jpg"
    imagegen.photo(5, (64, 48)).save(photo, quality=90)
    info = {"path": str(photo), "size": 1, "mtime_ns": 2}
    for content in (content_hash(b(photo)), None, "deadbeef", "A" * 32, "../../etc/passwd"):
        for side in (1, SIDE, 256):
            name = gallery.cache_name({**info, "content": content}, side)
            assert gallery.is_thumb_name(name), name


def test_thumbnail_keeps_an_rgb_colour_profile_only(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (80, 60), (200, 10, 10)).save(tmp_path / "rgb.jpg", icc_profile=srgb)
    cmyk_profile = srgb[:16] + b"CMYK" + srgb[20:]  # only the colour-space field matters here
    Image.new("CMYK", (80, 60), (0, 200, 200, 0)).save(tmp_path / "cmyk.jpg", icc_profile=cmyk_profile)
    for name, want in (("rgb", srgb), ("cmyk", None)):
        gallery.render_thumbnail(b(tmp_path / f"{name}.jpg"), tmp_path / f"{name}-t.jpg", 32, decode)
        with Image.open(tmp_path / f"{name}-t.jpg") as thumb:
            assert (thumb.mode, thumb.size, thumb.info.get("icc_profile")) == ("RGB", (32, 24), want)


def test_hostile_report_text_is_escaped(tmp_path):
    evil = '<script>alert("x")</script>'
    info = {
        "path": f"/nowhere/{evil}\n\x1b\u202egpj.exe",
        "size": 5,
        "width": 1,
        "height": 1,
        "mtime_ns": 0,
        "content": "../../etc/passwd",
    }
    group = {
        "keep": info["path"],
        "keep_info": info,
        "duplicates": [],
        "duplicate_details": [],
        "similar": [{**info, "path": "/nowhere/b\udcff.jpg", "cosine": 0.5}],
        "bytes_reclaimable": 0,
    }
    report = {"groups": [group], "model": evil, "keep_policy": evil, "roots": ["/r\udcfe"], "threshold": evil}
    index = gallery.write_gallery(report, tmp_path / "out", tmp_path / "store", SIDE)
    page = index.read_bytes().decode("utf-8")
    assert "<script" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "\u240a\u241b&lt;U+202E&gt;gpj.exe" in page and "/r\ufffd" in page and "b\ufffd.jpg" in page
    assert page.count("no longer exists") == 2
    assert not (tmp_path / "store" / "thumbs").exists()  # nothing decoded; and a bad content value never names a file


def test_groups_with_only_similar_members_still_get_a_card(tmp_path):
    info = {"path": "/nowhere/a.jpg", "size": 5, "width": 1, "height": 1, "mtime_ns": 0, "content": "a" * 32}
    similar = {**info, "path": "/nowhere/burst2.jpg", "cosine": 0.99, "why": "burst guard"}
    group = {"keep": info["path"], "keep_info": info, "duplicates": [], "similar": [similar], "bytes_reclaimable": 0}
    report = {"groups": [], "similar_groups": [group]}
    page = gallery.write_gallery(report, tmp_path / "out", tmp_path / "store", SIDE).read_text(encoding="utf-8")
    assert "/nowhere/burst2.jpg" in page and '<dd class="held-back">burst guard</dd>' in page


def test_empty_report(tmp_path):
    report = build_report([], 0, "lexi", 0.985, "m")
    page = gallery.write_gallery(report, tmp_path / "out", tmp_path / "store").read_text(encoding="utf-8")
    assert "No duplicates found." in page and "<dd>0</dd>" in page


def test_report_from_a_real_scan(tmp_path):
    lib = make_library(tmp_path / "photos")
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    commands.scan(
        str(lib.root), cfg, None, False, None, echo=lambda s: None, embedder=commands.LazyEmbedder(cfg, PixelEmbedder())
    )
    report = json.loads((lib.root / "dedup_report.json").read_bytes())
    assert report["groups"]
    page = gallery.write_gallery(report, tmp_path / "html", tmp_path / "store", SIDE).read_text("utf-8")
    for info in members(report):
        member_html(page, entry_path(info))
    assert page.count('<li class="member keep">') == len(report["groups"])


# --- a real browser ----------------------------------------------------------------------------------------------

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
# Without the networking flags headless Chromium tries to phone home and can hang; /dev/shm is tiny in containers.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,2000",
]
# Reports after the load event, by which time every (non-lazy) image has loaded or failed.
PROBE = """<img id="control" src="thumbs/missing-1.jpg" alt="">
<script>addEventListener("load", () => {
  for (const img of document.images) img.dataset.state = img.complete && img.naturalWidth > 0 ? "loaded" : "broken";
  document.body.dataset.probe = "ran";
});</script>
</body>"""


def chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def probe_copy(index: Path, allow_script: bool) -> Path:
    """index.html plus a script that marks each image loaded or broken; beside it, so relative paths still work.

    Lazy loading is switched off so that images below the fold are checked too; the CSP is only relaxed to let
    the probe run, its img-src stays the page's own.
    """
    page = index.read_text(encoding="utf-8").replace(' loading="lazy"', "").replace("</body>", PROBE)
    if allow_script:
        csp = html.escape(gallery.CSP, quote=True)
        page = page.replace(csp, csp + "; script-src &#x27;unsafe-inline&#x27;")
    probe = index.with_name("probe.html")
    probe.write_text(page, encoding="utf-8")
    return probe


@needs_chromium
def test_chromium_loads_every_thumbnail(built, tmp_path):
    index = gallery.write_gallery(built.report, tmp_path / "out", tmp_path / "store", SIDE)
    dom = chromium(tmp_path, "--dump-dom", probe_copy(index, allow_script=True).as_uri())
    assert 'data-probe="ran"' in dom
    assert dom.count('<section class="group"') == 3 and dom.count('<li class="member') == 8
    assert dom.count('data-state="loaded"') == 7  # every thumbnail; the broken member has no <img>
    assert dom.count('data-state="broken"') == 1 and 'id="control" src="thumbs/missing-1.jpg" alt="" data-state' in dom


@needs_chromium
def test_chromium_runs_no_script_on_the_page(built, tmp_path):
    index = gallery.write_gallery(built.report, tmp_path / "out", tmp_path / "store", SIDE)
    dom = chromium(tmp_path, "--dump-dom", probe_copy(index, allow_script=False).as_uri())
    assert '<section class="group"' in dom and "data-probe" not in dom


@needs_chromium
def test_chromium_screenshot_shows_the_gallery(built, tmp_path):
    index = gallery.write_gallery(built.report, tmp_path / "out", tmp_path / "store", 256)
    shot = tmp_path / "gallery.png"
    chromium(tmp_path, f"--screenshot={shot}", index.as_uri())
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
    assert rgb.size == (1280, 2000)
    assert len(rgb.getcolors(maxcolors=1 << 20) or []) > 1000  # photos, not a blank or text-only page
    top = rgb.crop((0, 0, 1280, 1000))
    assert len(top.getcolors(maxcolors=1 << 20) or []) > 1000  # and they are where the cards start


def test_a_gallery_folder_that_is_a_file_is_refused_naming_it(built, tmp_path):
    """`report --format html --out FILE` (the daemon's report.html_dir the same): once exit 1 with
    "b'FILE/.dedupd-own-folder': Not a directory"; now exit 2, one line naming FILE as not a folder."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UsageError, match=f"^{afile}: not a folder: a file is in the way$"):
        gallery.write_gallery(built.report, afile, tmp_path / "store", SIDE)
    assert afile.read_text() == "x"
