"""Issue 6: burst guard, decisions that stick, smarter keepers — on real files with crafted EXIF."""

from __future__ import annotations

import json
import os
import shutil

import imagegen
import pytest
from PIL import Image
from support import PixelEmbedder, b
from test_never_last_copy import QUIET, config, copies, purge
from test_never_last_copy import scan as never_last_copy_scan
from test_never_last_copy_more import hand_report

from dedupd import commands
from dedupd.config import load_config
from dedupd.errors import PurgeFailures, UsageError
from dedupd.faults import acting_at
from dedupd.ingest.capture import different_captures, read_capture


def save_with_exif(
    img,
    path,
    taken=None,
    subsec=None,
    make="Canon",
    model="EOS R6",
    serial="123",
    burst=None,
    extra_tags=0,
    fmt=None,
    quality=92,
):
    exif = Image.Exif()
    if make:
        exif[0x010F], exif[0x0110] = make, model
    sub = exif.get_ifd(0x8769)
    if serial:
        sub[0xA431] = serial
    if taken:
        sub[0x9003] = taken
    if subsec:
        sub[0x9291] = subsec
    for _ in range(extra_tags):
        exif[0x010E] = "described"  # ImageDescription
        sub[0x9286] = b"ASCII\0\0\0user comment"  # UserComment
    kwargs = {"exif": exif.tobytes()}
    if burst:
        kwargs["xmp"] = f'<x:xmpmeta><rdf:Description GCamera:BurstID="{burst}"/></x:xmpmeta>'.encode()
    if (fmt or path.suffix.lower()) in (".jpg", "JPEG"):
        kwargs["quality"] = quality
    img.save(path, **kwargs)
    return path


def scan(root, cfg):
    commands.scan(
        str(root), cfg, None, False, None, echo=lambda s: None, embedder=commands.LazyEmbedder(cfg, PixelEmbedder())
    )
    return json.loads((root / "dedup_report.json").read_bytes())


def cfg_for(tmp_path, **overrides):
    return load_config(None, {"store": str(tmp_path / "store"), **overrides})


def burst(tmp_path):
    """Two frames of a burst (same camera, 0.1 s apart, nearly identical) and a resized copy of frame 1."""
    root = tmp_path / "photos"
    root.mkdir()
    base = imagegen.photo(7, (320, 240))
    nudged = Image.blend(base, imagegen.photo(8, (320, 240)), 0.01)
    save_with_exif(base, root / "a_frame1.jpg", "2024:05:01 10:00:00", "10")
    save_with_exif(nudged, root / "b_frame2.jpg", "2024:05:01 10:00:00", "20")
    save_with_exif(base.resize((160, 120)), root / "c_frame1_small.jpg", "2024:05:01 10:00:00", "10")
    return root


def test_capture_facts_read_from_exif_and_xmp(tmp_path):
    path = save_with_exif(imagegen.photo(1, (64, 48)), tmp_path / "x.jpg", "2024:05:01 10:00:00", "25", burst="B-42")
    c = read_capture(Image.open(path))
    assert c.taken == "2024:05:01 10:00:00.25" and c.camera == "Canon|EOS R6|123" and c.burst == "B-42"
    assert c.exif_tags >= 4
    assert different_captures(c, {**c.to_dict(), "taken": "2024:05:01 10:00:00.30"})
    assert not different_captures(c, {**c.to_dict(), "camera": "Nikon|Z6|9", "taken": "x"})
    assert not different_captures(c, {"taken": "", "camera": "", "burst": ""})


def test_burst_frames_are_similar_but_a_resized_copy_is_a_duplicate(tmp_path):
    root = burst(tmp_path)
    cfg = cfg_for(tmp_path, **{"dedup.threshold": 0.95})
    report = scan(root, cfg)
    (group,) = report["groups"]
    assert group["keep"] == str(root / "a_frame1.jpg")
    assert group["duplicates"] == [str(root / "c_frame1_small.jpg")]
    (similar,) = group["similar"]
    assert similar["path"] == str(root / "b_frame2.jpg") and similar["cosine"] >= 0.95
    assert "burst guard" in similar["why"]


def test_burst_guard_can_be_turned_off(tmp_path):
    root = burst(tmp_path)
    cfg = cfg_for(tmp_path, **{"dedup.threshold": 0.95, "dedup.burst_guard": False})
    (group,) = scan(root, cfg)["groups"]
    assert str(root / "b_frame2.jpg") in group["duplicates"]


def test_different_burst_ids_are_different_captures(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    img = imagegen.photo(3, (320, 240))
    save_with_exif(img, root / "a.jpg", burst="one")
    save_with_exif(img.resize((300, 225)), root / "b.jpg", burst="two")
    report = scan(root, cfg_for(tmp_path, **{"dedup.threshold": 0.95}))
    (group,) = report["similar_groups"]  # nothing to purge: not among the groups an old consumer reads
    assert report["groups"] == [] and report["duplicate_groups"] == 0
    assert not group["duplicates"] and group["similar"][0]["why"].startswith("burst guard")


@pytest.fixture
def pair(tmp_path):
    """A JPEG and its PNG conversion: near-duplicates."""
    root = tmp_path / "photos"
    root.mkdir()
    img = imagegen.photo(11, (320, 240))
    save_with_exif(img, root / "a.jpg", make=None, serial=None)
    img.save(root / "b.png")
    return root, cfg_for(tmp_path)


def test_decide_not_duplicate_sticks_across_rescan_and_rename(pair):
    root, cfg = pair
    assert scan(root, cfg)["total_duplicates"] == 1
    commands.decide(
        cfg,
        "not-duplicate",
        [str(root / "a.jpg"), str(root / "b.png")],
        echo=lambda s: None,
        model=PixelEmbedder.model_id,
    )
    report = scan(root, cfg)
    assert report["total_duplicates"] == 0 and report["groups"] == []
    assert report["similar_groups"][0]["similar"][0]["why"].startswith("decided")
    os.rename(root / "b.png", root / "renamed.png")
    report = scan(root, cfg)
    assert report["total_duplicates"] == 0
    assert report["similar_groups"][0]["similar"][0]["path"] == str(root / "renamed.png")


def test_decide_not_duplicate_of_one_file_with_itself_is_refused(pair, monkeypatch):
    """`decide not-duplicate F F` (or `F ./F`): once stored as a decision on F's content alone, which then held back
    every exact copy of F; now a usage error (exit 2) naming both, and no decision stored."""
    root, cfg = pair
    scan(root, cfg)
    monkeypatch.chdir(root)
    with pytest.raises(UsageError, match=f"^decide not-duplicate: {root / 'a.jpg'} and ./a.jpg are the same file"):
        commands.decide(
            cfg, "not-duplicate", [str(root / "a.jpg"), "./a.jpg"], echo=QUIET, model=PixelEmbedder.model_id
        )
    lines: list[str] = []
    commands.decide(cfg, "list", [], echo=lines.append)
    assert lines == ["no decisions"]


def test_decide_keep_makes_that_file_the_keeper_and_never_a_victim(pair):
    root, cfg = pair
    assert scan(root, cfg)["groups"][0]["keep"] == str(root / "a.jpg")
    commands.decide(cfg, "keep", [str(root / "b.png")], echo=lambda s: None, model=PixelEmbedder.model_id)
    (group,) = scan(root, cfg)["groups"]
    assert group["keep"] == str(root / "b.png") and group["duplicates"] == [str(root / "a.jpg")]


def test_decide_keep_all_by_group_id_and_purge_honours_it(pair):
    root, cfg = pair
    stale = scan(root, cfg)
    shutil.copy2(root / "dedup_report.json", root.parent / "stale.json")
    gid = stale["groups"][0]["id"]
    commands.decide(cfg, "keep-all", [gid], echo=lambda s: None, model=PixelEmbedder.model_id)
    assert scan(root, cfg)["total_duplicates"] == 0
    lines: list[str] = []
    with pytest.raises(PurgeFailures):  # a plan made before the decision is refused item by item
        commands.purge(cfg, str(root.parent / "stale.json"), True, None, echo=lines.append)
    assert (root / "b.png").exists() and any("decided" in line for line in lines)


def test_decide_list_and_undo(pair):
    root, cfg = pair
    scan(root, cfg)
    out: list[str] = []
    commands.decide(cfg, "keep", [str(root / "b.png")], echo=out.append, model=PixelEmbedder.model_id)
    key = out[0].split()[1].rstrip(":")
    listed: list[str] = []
    commands.decide(cfg, "list", [], echo=listed.append)
    assert listed[0].startswith(key) and "keep" in listed[0]
    commands.decide(cfg, "undo", [key], echo=lambda s: None)
    assert scan(root, cfg)["groups"][0]["keep"] == str(root / "a.jpg")
    with pytest.raises(UsageError):
        commands.decide(cfg, "undo", ["nope"], echo=lambda s: None)
    with pytest.raises(UsageError, match="not in the store"):
        commands.decide(cfg, "keep", [str(root / "missing.jpg")], echo=lambda s: None, model=PixelEmbedder.model_id)


def test_format_policy_prefers_png_over_jpeg_and_heic_over_png(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    img = imagegen.photo(12, (320, 240))
    img.save(root / "a.jpg", quality=95)
    img.save(root / "z.png")
    cfg = cfg_for(tmp_path, **{"dedup.keep_policy": ["format", "lexi"]})
    assert scan(root, cfg)["groups"][0]["keep"] == str(root / "z.png")
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    img.save(root / "zz.heic", quality=95)
    assert scan(root, cfg)["groups"][0]["keep"] == str(root / "zz.heic")


def test_protected_policy_keeps_the_copy_under_a_protected_root(tmp_path):
    root = tmp_path / "photos"
    (root / "archive").mkdir(parents=True)
    (root / "inbox").mkdir()
    img = imagegen.photo(13, (320, 240))
    img.save(root / "inbox" / "a.jpg", quality=95)
    shutil.copy2(root / "inbox" / "a.jpg", root / "archive" / "z.jpg")
    cfg = cfg_for(tmp_path, **{"dedup.keep_policy": "protected,lexi", "protect": [str(root / "archive")]})
    (group,) = scan(root, cfg)["groups"]
    assert group["keep"] == str(root / "archive" / "z.jpg")


def test_more_exif_wins_a_tie_before_path(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    img = imagegen.photo(14, (320, 240))
    save_with_exif(img, root / "a.jpg", make=None, serial=None)
    save_with_exif(img, root / "b.jpg", taken="2024:01:01 00:00:00", extra_tags=1)
    cfg = cfg_for(tmp_path, **{"dedup.keep_policy": "resolution"})
    assert scan(root, cfg)["groups"][0]["keep"] == str(root / "b.jpg")


def test_old_single_policy_flags_keep_working(pair):
    root, cfg = pair
    largest = load_config(None, {"store": cfg.store, "dedup.keep_policy": "largest"})
    assert scan(root, largest)["groups"][0]["keep"] == str(root / "b.png")  # the PNG is bigger
    assert scan(root, largest)["keep_policy"] == "largest"


def test_capture_facts_survive_in_the_store_and_report(pair, tmp_path):
    root, cfg = pair
    save_with_exif(imagegen.photo(20, (100, 80)), root / "c.jpg", "2023:02:03 04:05:06", "7")
    scan(root, cfg)
    from dedupd.store import Store

    record = Store.open(cfg.store_path()).files()[b(root / "c.jpg")]
    assert (record.taken, record.camera, record.format) == ("2023:02:03 04:05:06.7", "Canon|EOS R6|123", "JPEG")


def test_a_decision_made_while_a_purge_runs_holds_back_the_items_after_it(tmp_path):
    """The daemon's purge.auto (or a long purge) works through its plan; meanwhile the user decides that a pair it
    has yet to reach are two pictures. The rules were read once a run, so the decision counted only from the next
    run: the file was removed seconds after the user said not to. The gate now reads the decisions at each item."""
    root = tmp_path / "t"
    keep, victim = copies(root, 461)
    other_keep, other_victim = copies(root, 462, keep="c/y.jpg", dup="d/y.jpg")
    cfg = config(tmp_path)
    never_last_copy_scan(cfg, root)
    report = hand_report(tmp_path / "plan.json", [(keep, [victim]), (other_keep, [other_victim])])
    decided: list[str] = []

    def user_decides() -> None:
        if not decided:
            decided.append("once")
            commands.decide(
                cfg, "keep-all", [str(other_keep), str(other_victim)], echo=QUIET, model=PixelEmbedder.model_id
            )

    with acting_at("after-verify", user_decides):
        rc, lines = purge(cfg, report=report)

    assert decided and not victim.exists() and other_victim.exists(), lines
    assert rc == 1 and any("decided: keep-all" in line for line in lines), lines
