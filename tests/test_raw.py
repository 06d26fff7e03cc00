"""Camera RAW files: decoded from their embedded preview through LibRaw, sized as the sensor, preferred by the
`format` policy, and a RAW+JPEG pair of one shot held back as `similar` unless dedup.raw_jpeg is dedupe.

The RAW files are real DNGs written by tests/rawgen.py that LibRaw (rawpy) opens; other RAW extensions carry the
same bytes, since LibRaw identifies a file by its content and dedupd routes it by its name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import imagegen
import pytest
import rawgen
from PIL import Image
from support import PixelEmbedder, scan_report

from dedupd import commands
from dedupd.ingest.decode import DecodeError, decode


def _members(report: dict, kind: str) -> dict[str, dict]:
    groups = report["groups"] + report["similar_groups"]
    return {os.path.basename(m["path"]): m for g in groups for m in g[kind]}


def test_dng_decodes_from_its_preview_upright_with_the_sensor_size(tmp_path: Path) -> None:
    picture = imagegen.photo(3, (160, 120))
    # Stored as the sensor lies; orientation 6 says "turn 90° clockwise to display".
    path = rawgen.write_dng(tmp_path / "shot.dng", picture, sensor=(320, 240), orientation=6)
    decoded = decode(path)
    assert (decoded.width, decoded.height) == (240, 320)  # the sensor's, turned; not the 160x120 preview's
    assert decoded.format == "DNG"
    assert decoded.image.size == (120, 160)
    assert imagegen.mean_abs_diff(decoded.image, picture.transpose(Image.Transpose.ROTATE_270)) < 6
    assert decoded.capture.taken == "2024:05:06 07:08:09"
    assert decoded.capture.camera == "Dedupd|TestCam"


def test_raw_without_an_exif_capture_time_takes_libraw_s(tmp_path: Path) -> None:
    picture = imagegen.photo(3, (96, 64))
    path = rawgen.write_dng(tmp_path / "old.dng", picture, taken="2019:02:03 04:05:06", exif_time=False)
    assert decode(path).capture.taken == "2019:02:03 04:05:06"


@pytest.mark.parametrize("ext", [".CR2", ".cr3", ".NEF", ".arw", ".RAF", ".orf", ".RW2", ".pef", ".dng"])
def test_every_raw_extension_goes_to_libraw(tmp_path: Path, ext: str) -> None:
    picture = imagegen.photo(4, (96, 64))
    path = rawgen.write_dng(tmp_path / f"shot{ext}", picture, sensor=(192, 128))
    decoded = decode(path)
    assert decoded.format == ext[1:].upper()
    assert (decoded.width, decoded.height) == (192, 128)
    assert imagegen.mean_abs_diff(decoded.image, picture) < 10  # JPEG noise; another picture is ~60


def test_raw_without_a_preview_is_unreadable_with_that_reason(tmp_path: Path) -> None:
    path = rawgen.write_dng(tmp_path / "bare.nef", None)
    with pytest.raises(DecodeError) as info:
        decode(path)
    assert info.value.reason == "no preview"
    (tmp_path / "garbage.cr2").write_bytes(b"not a raw file at all" * 50)
    with pytest.raises(DecodeError) as info:
        decode(tmp_path / "garbage.cr2")
    assert info.value.reason == "not a RAW file LibRaw can read"


def test_status_names_the_raw_without_a_preview(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    rawgen.write_dng(root / "bare.dng", None)
    rawgen.write_dng(root / "fine.dng", imagegen.photo(1, (96, 64)))
    _, cfg = scan_report(root, tmp_path)
    lines: list[str] = []
    commands.status(cfg, echo=lines.append, model=PixelEmbedder.model_id)
    assert "unreadable: 1 (1 no preview)" in lines


def test_dng_named_tif_is_read_through_libraw(tmp_path: Path) -> None:
    path = rawgen.write_dng(tmp_path / "scan.tif", imagegen.photo(5, (96, 64)), sensor=(192, 128))
    decoded = decode(path)
    assert (decoded.format, decoded.width, decoded.height) == ("RAW", 192, 128)


def test_format_policy_keeps_the_raw_over_its_jpeg_export(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "raw").mkdir(parents=True)
    (root / "export").mkdir()
    picture = imagegen.photo(6, (320, 240))
    rawgen.write_dng(root / "raw" / "DSC_0001.NEF", picture, sensor=(640, 480))
    picture.save(root / "export" / "aaa_first_by_name.jpg", quality=90)
    report, _ = scan_report(root, tmp_path, **{"dedup.keep_policy": ["format", "lexi"]})
    [group] = report["groups"]
    assert group["keep"].endswith("DSC_0001.NEF")
    assert (group["keep_info"]["width"], group["keep_info"]["height"], group["keep_info"]["format"]) == (
        640, 480, "NEF",
    )  # fmt: skip
    assert [os.path.basename(p) for p in group["duplicates"]] == ["aaa_first_by_name.jpg"]


def _raw_plus_jpeg(root: Path, jpeg_taken: str = "2024:05:06 07:08:09") -> None:
    root.mkdir(parents=True)
    picture = imagegen.photo(7, (320, 240))
    rawgen.write_dng(root / "IMG_0042.CR2", picture, sensor=(640, 480))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = jpeg_taken
    picture.save(root / "IMG_0042.JPG", quality=90, exif=exif.tobytes())


def test_raw_and_jpeg_of_one_shot_are_kept_as_a_pair(tmp_path: Path) -> None:
    _raw_plus_jpeg(tmp_path / "photos")
    report, _ = scan_report(tmp_path / "photos", tmp_path, **{"dedup.keep_policy": ["format"]})
    [group] = report["similar_groups"]  # no duplicates: listed apart from the groups
    assert group["keep"].endswith("IMG_0042.CR2")
    assert group["duplicates"] == []
    assert _members(report, "similar")["IMG_0042.JPG"]["why"].startswith("raw+jpeg")


def test_raw_jpeg_dedupe_lets_the_policy_choose(tmp_path: Path) -> None:
    _raw_plus_jpeg(tmp_path / "photos")
    report, _ = scan_report(
        tmp_path / "photos", tmp_path, **{"dedup.keep_policy": ["format"], "dedup.raw_jpeg": "dedupe"}
    )
    [group] = report["groups"]
    assert group["keep"].endswith("IMG_0042.CR2")
    assert [os.path.basename(p) for p in group["duplicates"]] == ["IMG_0042.JPG"]


def test_same_name_from_another_capture_time_is_no_pair(tmp_path: Path) -> None:
    # A JPEG that merely shares the name (another day's IMG_0042 copied in) is a duplicate like any other.
    _raw_plus_jpeg(tmp_path / "photos", jpeg_taken="2023:01:01 10:00:00")
    report, _ = scan_report(
        tmp_path / "photos", tmp_path, **{"dedup.keep_policy": ["format"], "dedup.burst_guard": False}
    )
    [group] = report["groups"]
    assert [os.path.basename(p) for p in group["duplicates"]] == ["IMG_0042.JPG"]


def test_raw_elsewhere_with_the_same_name_is_no_pair(tmp_path: Path) -> None:
    _raw_plus_jpeg(tmp_path / "photos" / "a")
    (tmp_path / "photos" / "b").mkdir()
    shutil.move(tmp_path / "photos" / "a" / "IMG_0042.JPG", tmp_path / "photos" / "b" / "IMG_0042.JPG")
    report, _ = scan_report(tmp_path / "photos", tmp_path, **{"dedup.keep_policy": ["format"]})
    [group] = report["groups"]
    assert [os.path.basename(p) for p in group["duplicates"]] == ["IMG_0042.JPG"]
