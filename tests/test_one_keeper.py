"""A keeper stands for one picture: two duplicates the rules hold apart (two burst frames close to one export without
EXIF, two files the user decided are not duplicates) never both go against it. The report's groups keep the second
one back, and the purge's gate refuses it for a stale or hand-written report, within one run and across runs."""

from __future__ import annotations

import json
import os

import imagegen
from PIL import Image
from test_never_last_copy import QUIET, config, purge, scan
from test_review import save_with_exif

from dedupd import commands


def _burst_and_export(root):
    """Two frames of one burst (one camera, 0.1 s apart: two captures, cosine > 0.99 under the PixelEmbedder) and an
    export of the first without EXIF, which sorts first (the keeper under lexi): (export, frame 1, frame 2)."""
    root.mkdir(parents=True)
    frame1 = imagegen.photo(7, (320, 240))
    frame2 = Image.blend(frame1, imagegen.photo(8, (320, 240)), 0.1)
    save_with_exif(frame1, root / "b_frame1.jpg", "2024:05:01 10:00:00", "10")
    save_with_exif(frame2, root / "c_frame2.jpg", "2024:05:01 10:00:00", "20")
    frame1.resize((160, 120)).save(root / "a_export.jpg", quality=92)
    return root / "a_export.jpg", root / "b_frame1.jpg", root / "c_frame2.jpg"


def _listing(report: dict, *members) -> dict:
    """The report's one group rewritten to list exactly `members` as duplicates (with their details, so their
    content hashes travel): a report made before a decision, or written by hand."""
    [group] = report["groups"]
    details = {d["path"]: d for d in group["duplicate_details"] + group.get("similar", [])}
    group["duplicates"] = [str(m) for m in members]
    group["duplicate_details"] = [details[str(m)] for m in members]
    group["similar"] = []
    return report


def _write(path, report: dict):
    path.write_text(json.dumps(report))
    return path


def test_the_report_holds_back_a_second_burst_frame_close_to_the_same_export(tmp_path):
    """Missing EXIF proves nothing, so each frame alone is a duplicate of the export; both went in one purge, and
    frame 2's capture was in no file."""
    root = tmp_path / "t"
    export, one, two = _burst_and_export(root)
    cfg = config(tmp_path)

    report = scan(cfg, root, report=tmp_path / "report.json")

    [group] = report["groups"]
    assert group["keep"] == str(export) and group["duplicates"] == [str(one)], group
    [held] = group["similar"]
    assert held["path"] == str(two) and "burst guard" in held["why"] and str(one) in held["why"], held
    rc, lines = purge(cfg)
    assert rc == 0 and not one.exists() and two.exists() and export.exists(), lines


def test_the_gate_refuses_a_second_burst_frame_a_report_lists_against_the_same_keeper(tmp_path):
    root = tmp_path / "t"
    export, one, two = _burst_and_export(root)
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "scan.json")
    listed = _write(tmp_path / "both.json", _listing(report, one, two))

    rc, lines = purge(cfg, report=listed)

    assert rc == 1 and not one.exists() and two.exists() and export.exists(), lines
    refused = [line for line in lines if str(two) in line and "went against the same keeper" in line]
    assert refused and "burst guard" in refused[0], lines


def test_the_gate_refuses_it_in_a_later_purge_too(tmp_path):
    """Frame 1 goes against the export in one purge; a later report lists frame 2 against the same export."""
    root = tmp_path / "t"
    export, one, two = _burst_and_export(root)
    cfg = config(tmp_path)
    report = scan(cfg, root, report=tmp_path / "scan.json")
    first = _write(tmp_path / "first.json", _listing(json.loads(json.dumps(report)), one))
    second = _write(tmp_path / "second.json", _listing(report, two))
    assert purge(cfg, report=first)[0] == 0 and not one.exists()

    rc, lines = purge(cfg, report=second)

    assert rc == 1 and two.exists() and export.exists(), lines
    assert any(str(two) in line and f"{one} went against the same keeper" in line for line in lines), lines


def test_a_not_duplicate_decision_on_two_duplicates_keeps_one_of_them(tmp_path):
    """The report keeps a.png with b.png and c.png as duplicates; the user then decides b and c are two pictures.
    A purge of that report (made before the decision) removed both against a.png."""
    root = tmp_path / "t"
    imagegen.write_chain(root, ("b.png", "a.png", "c.png"), step=0.06)  # all three pairwise >= 0.985
    cfg = config(tmp_path)
    out = tmp_path / "report.json"
    report = scan(cfg, root, report=out)
    assert report["groups"][0]["duplicates"] == [str(root / "b.png"), str(root / "c.png")]
    commands.decide(cfg, "not-duplicate", [str(root / "b.png"), str(root / "c.png")], echo=QUIET)

    rc, lines = purge(cfg, report=out)

    assert rc == 1 and not (root / "b.png").exists() and (root / "c.png").exists(), lines
    assert any("decided: not-duplicate" in line and "went against the same keeper" in line for line in lines), lines
    rc, lines = purge(cfg)  # the store's groups now: c.png against a.png, which stands for b.png
    assert rc == 1 and (root / "c.png").exists(), lines


def test_a_second_export_collects_both_burst_frames_over_two_purges(tmp_path):
    """Purge 1 trashes burst frame 1 against the export a_export.jpg (frame 2 is held back, rightly). The user then
    exports frame 1 once more, as a PNG that sorts first (0_export.png). Purge 2 keeps the PNG and removes both
    a_export.jpg (it carries frame 1's picture, and the PNG is frame 1's picture too) and frame 2 (no rule holds it
    apart from a_export.jpg, an export without EXIF). Both burst frames now stand on one export: frame 2, a capture
    of its own, is gone from the library. The gate (_another_picture_went) compares the victim only with the files
    removed against the keeper, never with the pictures those files carried (frame 1, via a_export.jpg)."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    export, one, two = _burst_and_export(root)
    frame1 = imagegen.photo(7, (320, 240))  # what frame 1 holds
    cfg = config(tmp_path)
    scan(cfg, root, report=tmp_path / "r1.json")
    rc, lines = purge(cfg, trash=trash)
    assert rc == 0 and not one.exists() and two.exists(), lines

    frame1.save(root / "0_export.png")  # another export of frame 1, no EXIF: the keeper under lexi
    scan(cfg, root, report=tmp_path / "r2.json")
    rc, lines = purge(cfg, trash=trash)

    assert two.exists(), (
        f"frame 2 went against {root / '0_export.png'} after {export} (carrying frame 1) did: both frames of the "
        f"burst now stand on one export: {lines}"
    )


def test_the_keeper_titled_and_moved_into_an_album_forgets_what_went_against_it(tmp_path):
    """Purge 1 trashes burst frame 1 against the export a_export.jpg. The user then gives the export a title (an
    editor saves it in place: new bytes) and files it into an album folder (a move: new path). Purge 2 removes frame 2
    against it: the gate finds earlier acts against a keeper only by its path or its exact bytes, and the export now
    has neither, though the store still pairs its old bytes with its new ones. Both frames stand on one export."""
    root, trash = tmp_path / "t", tmp_path / "trash"
    export, one, two = _burst_and_export(root)
    cfg = config(tmp_path)
    scan(cfg, root, report=tmp_path / "r1.json")
    rc, lines = purge(cfg, trash=trash)
    assert rc == 0 and not one.exists() and two.exists(), lines

    with Image.open(export) as im:  # a title saved into the export: other bytes, the same picture
        im.save(export, quality=90, comment=b"Holiday, day 1")
    album = root / "album" / "export.jpg"
    album.parent.mkdir()
    os.rename(export, album)
    scan(cfg, root, report=tmp_path / "r2.json")
    rc, lines = purge(cfg, trash=trash)

    assert two.exists(), f"frame 2 went against the export frame 1 went against: {lines}"
