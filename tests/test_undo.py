"""Undo: what comes back, under which name, and the user's word that it stays (a keep-all decision no later purge,
edit or kill undoes)."""

from __future__ import annotations

import os
import subprocess
import sys

import imagegen
import pytest
from PIL import Image
from support import purge_lines, scan_report
from test_companions import _copies_with, _journal_line
from test_never_last_copy import config, copies, photo, purge, scan
from test_never_last_copy_more import undo

from dedupd import commands
from dedupd.dedup.companions import TAKEOUT, XMP, claims
from dedupd.errors import PurgeFailures


def _journal(cfg):
    (journal,) = sorted((cfg.store_path() / "journal").glob("purge-*.jsonl"))
    return journal


def test_an_undo_killed_midway_never_records_the_keep_decision_for_what_it_already_restored(tmp_path):
    """`purge --undo` restores every file first and records the keep-all decisions only after the loop. Killed (the
    laptop's battery, a kill -9) after b/x.jpg came back and before b/y.jpg did, the journal says b/x.jpg is undone;
    the user runs the undo again, which restores b/y.jpg and decides keep-all for it alone. The next purge (the
    daemon's purge.auto, seconds later) trashes b/x.jpg again, a file the user took back out of the trash."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    copies(root, 31, "a/x.jpg", "b/x.jpg")
    copies(root, 32, "a/y.jpg", "b/y.jpg")
    cfg = config(tmp_path)
    scan(cfg, root, report=tmp_path / "r.json")
    rc, lines = purge(cfg, trash=trash)
    assert rc == 0 and not (root / "b/x.jpg").exists() and not (root / "b/y.jpg").exists(), lines
    journal = _journal(cfg)

    argv = [sys.executable, "-m", "dedupd", "purge", "--store", str(cfg.store_path()), "--undo", str(journal)]
    killed = subprocess.run(
        argv, env={**os.environ, "DEDUPD_FAULT": "before-restore:2"}, capture_output=True, text=True, timeout=120
    )
    assert killed.returncode == -9 and (root / "b/x.jpg").exists(), killed
    lines = undo(cfg, journal)
    assert (root / "b/y.jpg").exists(), lines

    scan(cfg, root, report=tmp_path / "r2.json")
    rc, purged = purge(cfg, trash=trash)

    assert (root / "b/x.jpg").exists(), f"the file undo brought back was purged again: {lines} {purged}"


@pytest.mark.parametrize(
    "name, companion, kind, back_as",
    [
        # Takeout's second file of a name: its JSON is named apart, no name pairs it with the photo's new one
        ("IMG_1(1).jpg", "IMG_1.jpg(1).json", TAKEOUT, None),
        ("IMG_8.JPG", "img_8.xmp", XMP, "IMG_8 (dedupd 1).xmp"),  # a stem in another case (claims() ignores case)
    ],
)
def test_undo_never_puts_a_companion_beside_the_picture_that_took_its_photos_name(
    tmp_path, name, companion, kind, back_as
):
    """b/NAME is trashed with its companion; another picture is saved at b/NAME since. Undo brings the photo back
    beside it (`NAME (dedupd 1)`) and the companion back under its own old name, because execute.follow_photo only
    renames a companion whose name starts with the photo's stem, case and all: Takeout's `IMG_1.jpg(1).json` of
    `IMG_1(1).jpg`, or `img_8.xmp` of `IMG_8.JPG`. It now sits beside the other picture, which claims it (the next
    report lists it as that picture's metadata, an editor applies its edits there), and the restored photo has none:
    the README promises companions come back only beside their photo, under the name it came back with."""
    root = tmp_path / "photos"
    keeper, copy = _copies_with(root, name, companion, kind)
    _, cfg = scan_report(root, tmp_path)
    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"), trash=str(tmp_path / "trash"))
    assert rc == 0 and not copy.exists() and not (root / "b" / companion).exists(), lines
    imagegen.photo(10, (320, 240)).save(copy, quality=90)  # another picture saved under the same name

    said: list[str] = []
    try:
        commands.undo_purge(cfg, _journal_line(lines), echo=said.append)
    except PurgeFailures as exc:
        said.append(str(exc))

    stem, ext = os.path.splitext(name)
    assert (root / "b" / f"{stem} (dedupd 1){ext}").read_bytes() == keeper.read_bytes(), said
    assert claims(name.encode(), companion.encode()) == kind
    assert not (root / "b" / companion).exists(), (
        f"the companion came back beside the other picture now at {copy}, which claims it: {said}"
    )
    if back_as:  # back under the photo's new name, which pairs the two again
        assert (root / "b" / back_as).read_bytes() == (root / "a" / companion).read_bytes(), said
    else:  # it stays in the trash, and undo says so
        assert (tmp_path / "trash" / "b" / companion).exists(), said
        assert any(f"not restored {root / 'b' / companion}" in line for line in said), said


def test_an_undone_removal_is_purged_again_once_the_keeper_gets_a_title(tmp_path):
    """b/x.jpg (a smaller re-encode of a/x.jpg) is trashed, and the user takes it back with `purge --undo`, which
    records keep-all on the two contents "so that no later purge takes it again". The user then gives a/x.jpg a title
    (an editor saves it in place: new bytes, the same picture). The decision names a/x.jpg's old bytes only, so the
    next purge (the daemon's purge.auto) trashes b/x.jpg again, the file the user brought back on purpose."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    keep = photo(root / "a" / "x.jpg", 41)
    copy = root / "b" / "x.jpg"
    copy.parent.mkdir(parents=True)
    with Image.open(keep) as im:
        im.resize((240, 180)).save(copy, quality=85)
    cfg = config(tmp_path)
    scan(cfg, root, report=tmp_path / "r1.json")
    rc, lines = purge(cfg, trash=trash)
    assert rc == 0 and not copy.exists(), lines
    said = undo(cfg, _journal(cfg))
    assert copy.exists(), said

    with Image.open(keep) as im:  # a title saved into the keeper
        im.save(keep, quality=92, comment=b"Grandma's garden")
    scan(cfg, root, report=tmp_path / "r2.json")
    rc, lines = purge(cfg, trash=trash)

    assert copy.exists(), f"the file the user took back with --undo was purged again: {said} {lines}"
