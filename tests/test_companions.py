"""Companions: sidecars, Apple edit recipes, Takeout metadata and Live Photo videos are found beside their photo,
listed in the report, never indexed, and their photo is preferred as keeper (or held back when it cannot be)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import imagegen
import pytest
import rawgen
from PIL import Image
from support import PixelEmbedder, purge_lines, scan_report

from dedupd import commands
from dedupd.config import load_config
from dedupd.dedup.companions import AAE, LIVE, TAKEOUT, XMP, CompanionFinder, claims
from dedupd.errors import PurgeFailures
from dedupd.ingest.livephoto import content_id
from dedupd.store import mark_own

CID = "6D8A1F7C-0B55-4C3E-9E0A-1D2B3C4D5E6F"
_LONG = "PXL_20230704_183512345.NIGHT.a_long_name_here.jpg"


@pytest.mark.parametrize(
    "photo, other, kind",
    [
        ("IMG_1.JPG", "IMG_1.xmp", XMP),
        ("IMG_1.JPG", "IMG_1.XMP", XMP),
        ("IMG_1.CR2", "IMG_1.CR2.xmp", XMP),
        ("IMG_1.HEIC", "IMG_1.AAE", AAE),
        ("IMG_1.HEIC", "IMG_1.MOV", LIVE),
        ("IMG_1.JPG", "IMG_1.mp4", LIVE),
        ("IMG_1.JPG", "IMG_1.JPG.json", TAKEOUT),
        ("IMG_1.JPG", "IMG_1.JPG.supplemental-metadata.json", TAKEOUT),
        ("IMG_1.JPG", "IMG_1.JPG.supplemental-metad.json", TAKEOUT),  # Takeout cuts long names
        ("IMG_1.JPG", "IMG_1.JPG.s.json", TAKEOUT),
        ("IMG_1(1).JPG", "IMG_1.JPG(1).json", TAKEOUT),  # the second file of that name
        ("IMG_1(1).JPG", "IMG_1.JPG.supplemental-metadata(1).json", TAKEOUT),
        # a name Takeout cut to 51 characters, ".json" included, eating into the photo's own name
        (_LONG, "PXL_20230704_183512345.NIGHT.a_long_name_here..json", TAKEOUT),
        (_LONG, "PXL_20230704_183512345.NIGHT.a_long_name.json", ""),
        ("IMG_1.JPG", "IMG_12.JPG.json", ""),
        ("IMG_1.JPG", "IMG_1.JPG(1).json", ""),
        ("IMG_1.JPG", "IMG_12.xmp", ""),
        ("IMG_1.JPG", "IMG_1.JPG.txt", ""),
    ],
)
def test_which_names_are_companions(photo: str, other: str, kind: str) -> None:
    assert claims(photo.encode(), other.encode()) == kind


def _names(entries: list[dict]) -> list[str]:
    return [os.path.basename(e["path"]) for e in entries]


def test_the_copy_with_edits_is_kept_and_the_report_lists_companions(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "a_backup").mkdir(parents=True)
    (root / "z_edited").mkdir()
    imagegen.photo(1, (320, 240)).save(root / "z_edited" / "IMG_7.JPG", quality=90)
    (root / "z_edited" / "IMG_7.JPG.xmp").write_text("<x:xmpmeta>crop, exposure +0.3</x:xmpmeta>")
    (root / "z_edited" / "IMG_7.JPG.supplemental-metadata.json").write_text('{"title": "IMG_7.JPG"}')
    shutil.copy2(root / "z_edited" / "IMG_7.JPG", root / "a_backup" / "IMG_7.JPG")
    report, cfg = scan_report(root, tmp_path)  # lexi alone would keep a_backup/IMG_7.JPG
    [group] = report["groups"]
    assert group["keep"].endswith("z_edited/IMG_7.JPG")
    kinds = {os.path.basename(c["path"]): c["kind"] for c in group["keep_info"]["companions"]}
    assert kinds == {"IMG_7.JPG.xmp": XMP, "IMG_7.JPG.supplemental-metadata.json": TAKEOUT}
    assert _names(group["duplicate_details"]) == ["IMG_7.JPG"]
    assert group["duplicate_details"][0]["companions"] == []
    lines: list[str] = []
    commands.status(cfg, echo=lines.append, model=PixelEmbedder.model_id)
    assert "files: 2" in lines  # the sidecar and the JSON are never indexed
    commands.report(cfg, str(tmp_path / "review"), echo=lambda s: None, model=PixelEmbedder.model_id, fmt="html")
    page = (tmp_path / "review" / "index.html").read_text()
    assert "takeout IMG_7.JPG.supplemental-metadata.json, xmp IMG_7.JPG.xmp" in page


def test_a_protected_keeper_holds_the_copy_with_edits_back(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "archive").mkdir(parents=True)
    (root / "phone").mkdir()
    imagegen.photo(2, (320, 240)).save(root / "archive" / "IMG_8.JPG", quality=90)
    shutil.copy2(root / "archive" / "IMG_8.JPG", root / "phone" / "IMG_8.JPG")
    (root / "phone" / "IMG_8.AAE").write_text("<plist>adjustments</plist>")
    report, _ = scan_report(
        root, tmp_path, protect=[str(root / "archive")], **{"dedup.keep_policy": ["protected", "lexi"]}
    )
    [group] = report["similar_groups"]  # no duplicates: listed apart from the groups
    assert group["keep"].endswith("archive/IMG_8.JPG")
    assert group["duplicates"] == []
    [held] = group["similar"]
    assert held["path"].endswith("phone/IMG_8.JPG")
    assert held["why"] == "companions: has aae the keeper lacks"
    assert _names(held["companions"]) == ["IMG_8.AAE"]


def test_a_decision_to_keep_holds_the_copy_with_a_live_video_back(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    imagegen.photo(3, (320, 240)).save(root / "a" / "IMG_9.JPG", quality=90)
    imagegen.photo(3, (320, 240)).save(root / "b" / "IMG_9.JPG", quality=80)  # decisions bind contents: not a copy
    rawgen.write_live_video(root / "b" / "IMG_9.MOV", None)
    report, cfg = scan_report(root, tmp_path)
    assert report["groups"][0]["keep"].endswith("b/IMG_9.JPG")  # the photo with its video
    commands.decide(cfg, "keep", [str(root / "a" / "IMG_9.JPG")], echo=lambda s: None, model=PixelEmbedder.model_id)
    out = tmp_path / "after.json"
    commands.report(cfg, str(out), echo=lambda s: None, model=PixelEmbedder.model_id)
    [group] = json.loads(out.read_bytes())["similar_groups"]  # no duplicates left
    assert group["keep"].endswith("a/IMG_9.JPG") and group["duplicates"] == []
    assert group["similar"][0]["why"] == "companions: has live the keeper lacks"


def _heic_or_skip() -> None:
    import pillow_heif

    if not pillow_heif.libheif_info().get("HEIF"):
        pytest.skip("libheif in this pillow-heif build has no HEVC encoder, cannot write a HEIC fixture")


def test_live_photo_video_belongs_to_its_photo_only_when_the_identifiers_agree(tmp_path: Path) -> None:
    _heic_or_skip()
    import pillow_heif

    pillow_heif.register_heif_opener()
    for name, video_id in (("IMG_1", CID), ("IMG_2", "0000-OTHER"), ("IMG_3", None)):
        imagegen.photo(4, (64, 48)).save(tmp_path / f"{name}.HEIC", exif=rawgen.apple_exif(CID))
        rawgen.write_live_video(tmp_path / f"{name}.MOV", video_id)
    assert content_id(os.fsencode(tmp_path / "IMG_1.HEIC")) == CID
    assert content_id(os.fsencode(tmp_path / "IMG_1.MOV")) == CID
    finder = CompanionFinder(content_id)
    found = {n: [c.kind for c in finder(os.fsencode(tmp_path / f"{n}.HEIC"))] for n in ("IMG_1", "IMG_2", "IMG_3")}
    assert found == {"IMG_1": [LIVE], "IMG_2": [], "IMG_3": [LIVE]}  # no identifier in the video proves nothing


def test_a_sidecar_both_halves_of_a_raw_jpeg_pair_claim_is_shared(tmp_path: Path) -> None:
    rawgen.write_dng(tmp_path / "DSC_1.NEF", imagegen.photo(5, (96, 64)))
    imagegen.photo(5, (96, 64)).save(tmp_path / "DSC_1.JPG")
    (tmp_path / "DSC_1.xmp").write_text("<x:xmpmeta/>")
    (tmp_path / "DSC_1.NEF.xmp").write_text("<x:xmpmeta/>")
    finder = CompanionFinder()
    found = {(os.path.basename(c.path), c.shared) for c in finder(os.fsencode(tmp_path / "DSC_1.NEF"))}
    assert found == {(b"DSC_1.xmp", True), (b"DSC_1.NEF.xmp", False)}


def test_companions_are_never_indexed_even_when_sniffing(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    imagegen.photo(6, (64, 48)).save(root / "IMG_5.JPG", exif=rawgen.apple_exif(CID))
    rawgen.write_live_video(root / "IMG_5.MOV", CID)
    (root / "IMG_5.JPG.json").write_text("{}")
    (root / "IMG_5.xmp").write_text("<x:xmpmeta/>")
    Image.new("RGB", (8, 8)).save(root / "IMG_5.AAE", "PNG")  # even one that sniffs as a picture is a companion
    _, cfg = scan_report(root, tmp_path, **{"scan.sniff": True})
    lines: list[str] = []
    commands.status(cfg, echo=lines.append, model=PixelEmbedder.model_id)
    assert "files: 1" in lines


# --- purge: companions go with their photo, come back with it, and are never left without it ------------------------


def _write_companion(path: Path, kind: str) -> Path:
    if kind == LIVE:
        return rawgen.write_live_video(path, None)
    path.write_text(f"{kind} of {path.name}")
    return path


def _copies_with(root: Path, name: str, companion: str, kind: str) -> tuple[Path, Path]:
    """a/NAME (keeper by lexi) and b/NAME (its exact copy), each with its own companion of `kind`."""
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
        _write_companion(root / folder / companion, kind)
    imagegen.photo(9, (320, 240)).save(root / "a" / name, quality=90)
    shutil.copy2(root / "a" / name, root / "b" / name)
    return root / "a" / name, root / "b" / name


def _journal_line(lines: list[str]) -> str:
    return next(line.split()[1] for line in lines if line.startswith("journal: "))


@pytest.mark.parametrize(
    "name, companion, kind",
    [
        ("IMG_1.JPG", "IMG_1.JPG.xmp", XMP),
        ("IMG_1.HEIC", "IMG_1.AAE", AAE),
        ("IMG_1.JPG", "IMG_1.JPG.supplemental-metadata.json", TAKEOUT),
        ("IMG_1.JPG", "IMG_1.MOV", LIVE),
    ],
)
def test_purge_trashes_a_duplicate_with_its_companion_and_undo_brings_both_back(
    tmp_path: Path, name: str, companion: str, kind: str
) -> None:
    if name.endswith(".HEIC"):
        _heic_or_skip()
        import pillow_heif

        pillow_heif.register_heif_opener()
    root = tmp_path / "photos"
    keeper, copy = _copies_with(root, name, companion, kind)
    report, cfg = scan_report(root, tmp_path)
    [group] = report["groups"]
    assert group["keep"] == str(keeper)
    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"), trash=str(tmp_path / "trash"))
    assert rc == 0, lines
    trash = tmp_path / "trash"
    assert not copy.exists() and not (copy.parent / companion).exists()  # nothing left behind
    assert (trash / "b" / copy.name).exists() and (trash / "b" / companion).exists()
    assert keeper.exists() and (keeper.parent / companion).exists()
    assert any(line.endswith(f"with {companion} (keeps {keeper})") for line in lines)
    commands.undo_purge(cfg, _journal_line(lines), echo=lambda s: None)
    assert copy.exists() and (copy.parent / companion).exists()


def test_undo_brings_a_photo_and_its_companion_back_beside_a_picture_saved_at_its_name(tmp_path: Path) -> None:
    """A duplicate trashed with its XMP; another photo is saved at the duplicate's name since. Undo used to leave the
    photo in the trash (its name taken) and, before that, put the XMP back anyway beside the other picture, claiming
    it as its own. Both now come back beside it, under one new name, so they still pair up by name."""
    root = tmp_path / "photos"
    keeper, copy = _copies_with(root, "IMG_8.JPG", "IMG_8.JPG.xmp", XMP)
    _, cfg = scan_report(root, tmp_path)
    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"), trash=str(tmp_path / "trash"))
    assert rc == 0 and not copy.exists(), lines
    imagegen.photo(10, (320, 240)).save(copy, quality=90)  # another picture under the same name
    other = copy.read_bytes()

    said: list[str] = []
    assert commands.undo_purge(cfg, _journal_line(lines), echo=said.append) == 0, said
    assert copy.read_bytes() == other and not (root / "b" / "IMG_8.JPG.xmp").exists(), said
    assert (root / "b" / "IMG_8 (dedupd 1).JPG").read_bytes() == keeper.read_bytes(), said
    assert (root / "b" / "IMG_8 (dedupd 1).JPG.xmp").read_bytes() == (root / "a" / "IMG_8.JPG.xmp").read_bytes(), said
    assert not any((tmp_path / "trash").rglob("IMG_8*")), said
    assert any(line.startswith("decided ") and "keep-all" in line for line in said), said


def test_a_second_undo_brings_a_companion_back_only_beside_its_own_photo(tmp_path: Path) -> None:
    """b/IMG_8.JPG is trashed with its XMP. A first undo brings the photo back, but not the XMP: a stray sidecar sat
    at its name. The user then replaces b/IMG_8.JPG with another picture and drops the stray. A second undo restored
    the XMP because the journal said its photo was undone, beside a picture it never described."""
    root = tmp_path / "photos"
    keeper, copy = _copies_with(root, "IMG_8.JPG", "IMG_8.JPG.xmp", XMP)
    sidecar = root / "b" / "IMG_8.JPG.xmp"
    _, cfg = scan_report(root, tmp_path)
    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"), trash=str(tmp_path / "trash"))
    assert rc == 0 and not copy.exists() and not sidecar.exists(), lines
    sidecar.write_text("a stray sidecar another tool wrote")
    said: list[str] = []
    with pytest.raises(PurgeFailures):
        commands.undo_purge(cfg, _journal_line(lines), echo=said.append)
    assert copy.exists() and sidecar.read_text().startswith("a stray"), said
    sidecar.unlink()
    imagegen.photo(10, (320, 240)).save(copy, quality=90)  # another picture under the same name

    with pytest.raises(PurgeFailures):
        commands.undo_purge(cfg, _journal_line(lines), echo=said.append)

    assert not sidecar.exists() and (tmp_path / "trash" / "b" / "IMG_8.JPG.xmp").exists(), said


def test_a_companion_follows_its_photo_beside_a_taken_place_in_the_trash(tmp_path: Path) -> None:
    """An earlier purge's b/IMG_6.JPG is in the trash: the photo goes beside it as `IMG_6 (dedupd 1).JPG`, and its
    XMP under that name too, where the two still pair up (it took the plain name, IMG_6.JPG.xmp: beside the other
    photo)."""
    root = tmp_path / "photos"
    keeper, copy = _copies_with(root, "IMG_6.JPG", "IMG_6.JPG.xmp", XMP)
    _, cfg = scan_report(root, tmp_path)
    trash = tmp_path / "trash"
    (trash / "b").mkdir(parents=True)
    mark_own(trash)  # a trash an earlier purge made
    (trash / "b" / "IMG_6.JPG").write_bytes(b"an earlier purge's photo")

    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"), trash=str(trash))

    assert rc == 0 and not copy.exists(), lines
    assert sorted(p.name for p in (trash / "b").iterdir()) == [
        "IMG_6 (dedupd 1).JPG",
        "IMG_6 (dedupd 1).JPG.xmp",
        "IMG_6.JPG",
    ]
    assert commands.undo_purge(cfg, _journal_line(lines), echo=lines.append) == 0, lines
    assert copy.exists() and (root / "b" / "IMG_6.JPG.xmp").exists()


def test_a_deleted_duplicate_takes_its_companion_along(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    keeper, copy = _copies_with(root, "IMG_2.JPG", "IMG_2.xmp", XMP)
    scan_report(root, tmp_path)
    rc, lines = purge_lines(load_config(None, {"store": str(tmp_path / "store")}), str(tmp_path / "report.json"))
    assert rc == 0, lines
    assert sorted(p.name for p in (root / "b").iterdir()) == []
    assert (keeper.parent / "IMG_2.xmp").exists()


def test_the_copy_with_edits_survives_a_purge(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    imagegen.photo(3, (320, 240)).save(root / "a" / "IMG_3.JPG", quality=90)
    imagegen.photo(3, (320, 240)).save(root / "b" / "IMG_3.JPG", quality=80)
    (root / "b" / "IMG_3.JPG.xmp").write_text("<x:xmpmeta>my edits</x:xmpmeta>")
    _, cfg = scan_report(root, tmp_path)
    commands.decide(cfg, "keep", [str(root / "a" / "IMG_3.JPG")], echo=lambda s: None, model=PixelEmbedder.model_id)
    rc, lines = purge_lines(cfg)  # plan from the store: the copy with edits is held back, nothing to do
    assert rc == 0, lines
    assert (root / "b" / "IMG_3.JPG").exists() and (root / "b" / "IMG_3.JPG.xmp").exists()
    # a report made before the decision names it a duplicate: the gate refuses it now
    stale = {"groups": [{"keep": str(root / "a" / "IMG_3.JPG"), "duplicates": [str(root / "b" / "IMG_3.JPG")]}]}
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    rc, lines = purge_lines(cfg, str(tmp_path / "stale.json"))
    assert rc == 1 and (root / "b" / "IMG_3.JPG.xmp").exists()


def test_a_sidecar_another_photo_still_claims_stays(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    picture = imagegen.photo(5, (320, 240))
    rawgen.write_dng(root / "DSC_1.NEF", picture, sensor=(640, 480))
    picture.save(root / "DSC_1.JPG", quality=90)
    (root / "DSC_1.xmp").write_text("<x:xmpmeta>the raw's edits</x:xmpmeta>")
    report, cfg = scan_report(root, tmp_path, **{"dedup.keep_policy": ["format"], "dedup.raw_jpeg": "dedupe"})
    assert report["groups"][0]["keep"].endswith("DSC_1.NEF")
    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"))
    assert rc == 0, lines
    assert not (root / "DSC_1.JPG").exists()
    assert (root / "DSC_1.xmp").exists()  # shared with the NEF, which stays


def test_kill_9_between_the_photo_and_its_companion_then_rerun_moves_it(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    root = tmp_path / "photos"
    keeper, copy = _copies_with(root, "IMG_4.JPG", "IMG_4.JPG.xmp", XMP)
    _, cfg = scan_report(root, tmp_path)
    trash = tmp_path / "trash"
    argv = [sys.executable, "-m", "dedupd", "purge", "--store", str(cfg.store_path()), "--report"]
    argv += [str(tmp_path / "report.json"), "--inplace", "--trash", str(trash)]
    killed = subprocess.run(argv, env={**os.environ, "DEDUPD_FAULT": "before-companion:1"}, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert not copy.exists() and (copy.parent / "IMG_4.JPG.xmp").exists()  # the moment of death: photo moved
    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"), trash=str(trash))
    assert any("IMG_4.JPG.xmp: done (moved with its photo" in line for line in lines), lines
    assert not (copy.parent / "IMG_4.JPG.xmp").exists() and (trash / "b" / "IMG_4.JPG.xmp").exists()
    assert keeper.exists() and (keeper.parent / "IMG_4.JPG.xmp").exists()


# --- a companion is the only copy of its data unless the keeper has a byte copy of it ------------------------------


@pytest.mark.parametrize(
    "companion",
    [
        "IMG_1.JPG.xmp",  # an editor's sidecar: other edits, keywords, ratings than the keeper's
        "IMG_1.JPG.supplemental-metadata.json",  # Takeout: another title, description, people
        "IMG_1.MOV",  # another clip altogether under the Live Photo's name (no identifier in the JPEG)
    ],
)
@pytest.mark.parametrize("same_size", [False, True])
def test_a_companion_with_data_of_its_own_is_not_removed_with_its_photo(
    tmp_path: Path, companion: str, same_size: bool
) -> None:
    """Both copies carry a companion of the same kind with different bytes. The gate compared kinds only, so the
    victim's companion, the only copy of its data, went with the photo. Now a report holds the copy back where a
    sidecar's bytes or a video's size differ; a video of the same size (bytes differ all the same) is refused by
    the purge at the gate."""
    root = tmp_path / "photos"
    keeper, victim = _copies_with(root, "IMG_1.JPG", "IMG_1.JPG.txt", XMP)
    ours = (keeper.parent / companion, victim.parent / companion)
    if companion.endswith(".MOV"):
        rawgen.write_live_video(ours[0], CID)
        other = bytearray(ours[0].read_bytes())
        other[-8:] = os.urandom(8)
        ours[1].write_bytes(bytes(other) + (b"" if same_size else b"more"))
    else:
        ours[0].write_text("<x:xmpmeta>crop 3:2</x:xmpmeta>")
        ours[1].write_text("<x:xmpmeta>b/w +1.3</x:xmpmeta>" if same_size else "<x:xmpmeta>b/w, +1.3, tags</x:xmpmeta>")
    only_copy = ours[1].read_bytes()
    report, cfg = scan_report(root, tmp_path)
    video = companion.endswith(".MOV")
    if not (same_size and video):  # no duplicates: listed apart from the groups
        [group] = report["similar_groups"]
        kind = LIVE if video else TAKEOUT if companion.endswith(".json") else XMP
        assert group["similar"][0]["why"] == f"companions: its {kind} differs from the keeper's"
    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"))
    assert victim.exists() and ours[1].read_bytes() == only_copy, lines
    if same_size and video:
        assert rc == 1 and any(f"its companion {companion} has no byte copy" in line for line in lines), lines


def test_a_companion_whose_twin_beside_the_keeper_changes_before_its_act_stays(tmp_path: Path) -> None:
    """The keeper's sidecar was a byte copy at the gate and is edited before the victim's sidecar goes: the victim's
    sidecar is then the last copy of the edits both had, and stays (the photo, a byte copy, goes)."""
    from dedupd.faults import acting_at

    root = tmp_path / "photos"
    keeper, victim = _copies_with(root, "IMG_5.JPG", "IMG_5.JPG.xmp", XMP)
    edits = (victim.parent / "IMG_5.JPG.xmp").read_bytes()
    _, cfg = scan_report(root, tmp_path)
    with acting_at("before-companion", lambda: (keeper.parent / "IMG_5.JPG.xmp").write_text("new edits")):
        rc, lines = purge_lines(cfg, str(tmp_path / "report.json"), trash=str(tmp_path / "trash"))
    assert not victim.exists() and (victim.parent / "IMG_5.JPG.xmp").read_bytes() == edits, lines
    assert any("the keeper's companion changed" in line for line in lines), lines


def test_trash_empty_keeps_a_trashed_sidecar_whose_twin_beside_the_keeper_is_gone(tmp_path: Path) -> None:
    """The purge trashed b/IMG_1.JPG with its XMP because a/IMG_1.JPG had a byte copy of it. The user then deletes
    a/IMG_1.JPG.xmp: the trashed sidecar is the only copy of those edits, but `trash empty` proved only the keeper
    photo and removed it. A companion's journal entry now names its twin as its keeper. Its photo stays with it:
    emptied alone, it left the sidecar in the trash for good (undo brings a companion back only with its photo)."""
    root = tmp_path / "photos"
    keeper, _ = _copies_with(root, "IMG_1.JPG", "IMG_1.JPG.xmp", XMP)
    edits = (keeper.parent / "IMG_1.JPG.xmp").read_text()
    _, cfg = scan_report(root, tmp_path)
    trash = tmp_path / "trash"
    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"), trash=str(trash))
    assert rc == 0 and (trash / "b" / "IMG_1.JPG.xmp").exists(), lines
    (keeper.parent / "IMG_1.JPG.xmp").unlink()
    out: list[str] = []
    with pytest.raises(PurgeFailures):
        commands.empty_trash(cfg, "0", echo=out.append)
    assert (trash / "b" / "IMG_1.JPG.xmp").read_text() == edits, out
    assert (trash / "b" / "IMG_1.JPG").exists(), out  # its keeper holds it, yet it stays with its sidecar
    assert commands.undo_purge(cfg, _journal_line(lines), echo=out.append) == 0, out
    assert (root / "b" / "IMG_1.JPG").exists() and (root / "b" / "IMG_1.JPG.xmp").read_text() == edits


def test_a_companion_that_cannot_be_put_back_stays_journaled_open_and_the_next_purge_settles_it(
    tmp_path: Path,
) -> None:
    """The disk fails after the photo went and while its sidecar sat aside, and the sidecar's name (and every name
    beside it) is taken meanwhile: its journal entry was closed as skipped, so no recovery ever looked at the file
    left under a hidden name. Like its photo's, the entry now stays open and the next purge settles it."""
    from dedupd.faults import acting_at

    root = tmp_path / "photos"
    keeper, victim = _copies_with(root, "IMG_6.JPG", "IMG_6.JPG.xmp", XMP)
    edits = (victim.parent / "IMG_6.JPG.xmp").read_bytes()
    _, cfg = scan_report(root, tmp_path)
    calls = []

    def disk_fails_on_the_sidecar() -> None:
        calls.append(1)
        if len(calls) == 2:  # the photo's aside was the first
            (victim.parent / "IMG_6.JPG.xmp").write_text("another program's file")
            for n in range(1, 1000):
                (victim.parent / f"IMG_6.JPG (dedupd {n}).xmp").touch()
            raise OSError(30, "Read-only file system")

    with acting_at("after-aside", disk_fails_on_the_sidecar):
        rc, lines = purge_lines(cfg, str(tmp_path / "report.json"))
    [aside] = victim.parent.glob(".dedupd-purge-*")
    assert aside.read_bytes() == edits and any(f"waits at {aside}" in line for line in lines), lines
    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"))
    assert any("IMG_6.JPG.xmp: done (finished the interrupted delete)" in line for line in lines), lines
    assert not list(victim.parent.glob(".dedupd-purge-*")) and (keeper.parent / "IMG_6.JPG.xmp").read_bytes() == edits


def test_a_sidecar_a_photo_without_an_extension_claims_stays_with_it(tmp_path: Path) -> None:
    """scan.sniff on. b/ holds IMG_1 (a JPEG without an extension, a picture of its own), IMG_1.JPG (a byte copy of
    a/IMG_1.JPG) and IMG_1.xmp, which both b/ photos claim by name. The purge took b/IMG_1.xmp along with
    b/IMG_1.JPG: only files with an image name counted as other claimants, so b/IMG_1 lost its edits."""
    root = tmp_path / "photos"
    keeper, copy = _copies_with(root, "IMG_1.JPG", "IMG_1.xmp", XMP)
    shutil.copy2(root / "b" / "IMG_1.xmp", root / "a" / "IMG_1.xmp")  # the keeper has a byte copy: it could go
    imagegen.photo(11, (320, 240)).save(root / "b" / "IMG_1", "JPEG", quality=90)
    _, cfg = scan_report(root, tmp_path, **{"scan.sniff": True})

    rc, lines = purge_lines(cfg, str(tmp_path / "report.json"))

    assert rc == 0 and not copy.exists() and (root / "b" / "IMG_1").exists(), lines
    assert (root / "b" / "IMG_1.xmp").exists(), lines
