"""dedupd.ingest.decode: every photo file becomes an upright RGB picture or a DecodeError."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import imagegen
import numpy as np
import pytest
from PIL import Image, ImageFile, features

from dedupd.ingest.decode import (
    Decoded,
    DecodeError,
    _read_up_to,
    decode,
    register_plugins,
)
from dedupd.ingest.hashing import content_hash
from dedupd.paths import IMAGE_EXTENSIONS, RAW_EXTENSIONS

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _reason(path: Path | bytes, **kwargs: object) -> str:
    with pytest.raises(DecodeError) as info:
        decode(path, **kwargs)
    return info.value.reason


def _close(pixel: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True))


def _header(path: Path) -> tuple[str, int, dict[str, object]]:
    """(mode, frame count, info) as Pillow reports them, without leaking the file handle."""
    with Image.open(path) as im:
        return im.mode, getattr(im, "n_frames", 1), dict(im.info)


def _heif_encoder_or_skip() -> None:
    import pillow_heif

    if not pillow_heif.libheif_info().get("HEIF"):
        pytest.skip("libheif in this pillow-heif build has no HEVC encoder, cannot write a HEIC fixture")


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "12mp.jpg"
    imagegen.save_jpeg(imagegen.photo(7, (4000, 3000)), path, quality=85)
    return path


# --- basics -------------------------------------------------------------------------


def test_image_extensions_are_lowercase_with_dot() -> None:
    expected = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".gif"}
    assert expected | RAW_EXTENSIONS == IMAGE_EXTENSIONS
    assert {".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef"} <= RAW_EXTENSIONS
    assert isinstance(IMAGE_EXTENSIONS, frozenset)


def test_plain_jpeg(tmp_path: Path) -> None:
    src = imagegen.photo(1, (320, 240))
    imagegen.save_jpeg(src, tmp_path / "a.jpg", quality=95)
    result = decode(tmp_path / "a.jpg")
    assert isinstance(result, Decoded)
    assert (result.width, result.height, result.format) == (320, 240, "JPEG")
    assert result.image.mode == "RGB" and result.image.size == (320, 240)
    assert imagegen.mean_abs_diff(result.image, src) < 6


def test_accepts_str_bytes_and_pathlike(tmp_path: Path) -> None:
    imagegen.photo(2, (64, 48)).save(tmp_path / "a.png")
    for path in (tmp_path / "a.png", str(tmp_path / "a.png"), os.fsencode(tmp_path / "a.png")):
        assert decode(path).image.size == (64, 48)


def test_register_plugins_is_idempotent_and_leaves_pillow_globals_alone() -> None:
    before = Image.MAX_IMAGE_PIXELS
    register_plugins()
    register_plugins()
    assert "HEIF" in Image.OPEN
    assert before == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decode_error_survives_pickling() -> None:
    # decode() may run in a process pool; the reason and the bytes it is about have to make it back.
    err = pickle.loads(pickle.dumps(DecodeError("truncated", "ab" * 16)))
    assert isinstance(err, DecodeError) and err.reason == "truncated" and str(err) == "truncated"
    assert err.content == "ab" * 16


def test_a_picture_and_a_verdict_name_the_bytes_they_come_from(tmp_path: Path) -> None:
    """The hash of the very bytes decoded: the pipeline files a vector or a verdict only under that content."""
    photo, junk = tmp_path / "a.jpg", tmp_path / "b.jpg"
    imagegen.photo(3, (64, 48)).save(photo, quality=90)
    junk.write_bytes(b"not a picture" * 10)
    assert decode(photo).content == content_hash(photo)
    with pytest.raises(DecodeError) as info:
        decode(junk)
    assert (info.value.reason, info.value.content) == ("not an image", content_hash(junk))
    with pytest.raises(DecodeError) as info:
        decode(tmp_path / "gone.jpg")
    assert info.value.reason.startswith("io error") and info.value.content == ""  # nothing read: the path failed


def test_a_file_past_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    """A decoder reads a file whole, so a cap keeps a worker's memory bounded: 2 GiB, or 8 bytes for each pixel
    max_pixels allows if that is more. Here a 1 200-pixel JPEG with 2 GiB of trailing data (sparse: no disk used),
    as a tool may append."""
    huge = tmp_path / "huge.jpg"
    imagegen.photo(4, (40, 30)).save(huge, quality=90)
    os.truncate(huge, (2 << 30) + 1)
    size = huge.stat().st_size
    rule = "bytes: 2 GiB or scan.max_pixels x 8, the larger"
    assert _reason(huge, max_pixels=2_000) == f"too large ({size} > {2 << 30} {rule})"
    assert _reason(huge, max_pixels=size // 8) == f"too large ({size} > {size // 8 * 8} {rule})"


class ShortReads(io.RawIOBase):
    """A file that, like Linux for any read past 2 GiB - 4 KiB, returns fewer bytes than asked."""

    def __init__(self, data: bytes, most: int):
        self.data, self.most, self.at = data, most, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self.data[self.at : self.at + min(size, self.most)]
        self.at += len(chunk)
        return chunk


def test_a_file_is_read_whole_even_when_one_read_returns_only_part_of_it() -> None:
    """Read in one call, a file over 2 GiB came back as a prefix: its hash never matched the scan's, and it was
    reported 'changed while it was read' on every scan."""
    data = os.urandom(10_000)
    assert _read_up_to(ShortReads(data, 4_096), len(data) + 1) == data


# --- orientation --------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    displayed = imagegen.photo(3, (120, 80))
    path = tmp_path / f"o{orientation}.jpg"
    imagegen.save_oriented_jpeg(displayed, path, orientation)
    result = decode(path)
    assert (result.width, result.height) == (120, 80)
    assert result.image.size == (120, 80)
    assert imagegen.mean_abs_diff(result.image, displayed) < 8
    with Image.open(path) as stored:
        if orientation != 1 and stored.size == displayed.size:
            assert imagegen.mean_abs_diff(stored, displayed) > 20  # the fixture really was transformed


def test_orientation_6_swaps_reported_size_and_rotates_clockwise(tmp_path: Path) -> None:
    # Stored landscape 90x60 with a red top-left corner; a viewer turns it 90 degrees
    # clockwise, so it is shown as portrait 60x90 with red at the top-right.
    stored = Image.new("RGB", (90, 60), BLUE)
    stored.paste(RED, (0, 0, 20, 20))
    imagegen.save_jpeg(stored, tmp_path / "o6.jpg", quality=95, exif_orientation=6)
    result = decode(tmp_path / "o6.jpg")
    assert (result.width, result.height) == (60, 90)
    assert result.image.size == (60, 90)
    assert _close(result.image.getpixel((55, 5)), RED, tol=30)
    assert _close(result.image.getpixel((5, 5)), BLUE, tol=30)


@pytest.mark.parametrize("fmt,ext", [("TIFF", "tif"), ("PNG", "png"), ("WEBP", "webp")])
def test_orientation_in_other_containers(tmp_path: Path, fmt: str, ext: str) -> None:
    displayed = imagegen.photo(4, (90, 60))
    stored = imagegen.stored_pixels(displayed, 6)
    path = tmp_path / f"o6.{ext}"
    if fmt == "TIFF":
        stored.save(path, fmt, tiffinfo={imagegen.ORIENTATION_TAG: 6})
    else:
        stored.save(path, fmt, exif=imagegen.exif_bytes(6), **({"lossless": True} if fmt == "WEBP" else {}))
    result = decode(path)
    assert (result.width, result.height) == (90, 60) == result.image.size
    assert imagegen.mean_abs_diff(result.image, displayed) < 1


# --- colour modes -------------------------------------------------------------------


def test_cmyk_jpeg_colours_are_right(tmp_path: Path) -> None:
    # Pillow writes CMYK JPEGs the Adobe way (inverted + APP14); reading must undo that.
    cmyk = Image.new("CMYK", (60, 20), (0, 0, 0, 0))
    cmyk.paste((0, 255, 255, 0), (0, 0, 20, 20))  # red
    cmyk.paste((255, 0, 255, 0), (20, 0, 40, 20))  # green
    cmyk.paste((255, 255, 0, 0), (40, 0, 60, 20))  # blue
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    assert _header(tmp_path / "cmyk.jpg")[2].get("adobe") is not None
    image = decode(tmp_path / "cmyk.jpg").image
    assert image.mode == "RGB"
    assert _close(image.getpixel((10, 10)), RED)
    assert _close(image.getpixel((30, 10)), GREEN)
    assert _close(image.getpixel((50, 10)), BLUE)


def test_cmyk_tiff_colours_are_right(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    assert decode(tmp_path / "cmyk.tif").image.getpixel((4, 4)) == RED


def _ramp16(width: int = 256) -> np.ndarray:
    return np.tile(np.linspace(0, 65535, width).astype(np.uint16), (16, 1))


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    imagegen.grey16(_ramp16()).save(tmp_path / "g16.png")
    assert _header(tmp_path / "g16.png")[0].startswith("I;16")
    pixels = np.asarray(decode(tmp_path / "g16.png").image)[0]
    assert pixels[0].tolist() == [0, 0, 0] and pixels[-1].tolist() == [255, 255, 255]
    assert abs(int(pixels[128][0]) - 128) <= 2
    assert np.all(np.diff(pixels[:, 0].astype(int)) >= 0)  # monotonic ramp, no wrap or clip


def test_16bit_big_endian_grey_tiff(tmp_path: Path) -> None:
    ramp = _ramp16()
    Image.frombytes("I;16B", (256, 16), ramp.astype(">u2").tobytes()).save(tmp_path / "g16b.tif")
    assert _header(tmp_path / "g16b.tif")[0] == "I;16B"
    pixels = np.asarray(decode(tmp_path / "g16b.tif").image)[0, :, 0]
    assert pixels[0] == 0 and pixels[-1] == 255 and abs(int(pixels[128]) - 128) <= 2


def test_32bit_int_and_float_modes(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 32768, dtype=np.int32)).save(tmp_path / "i.tif")
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(tmp_path / "f.tif")
    assert _header(tmp_path / "i.tif")[0] == "I" and _header(tmp_path / "f.tif")[0] == "F"
    assert abs(decode(tmp_path / "i.tif").image.getpixel((1, 1))[0] - 127) <= 1
    assert abs(decode(tmp_path / "f.tif").image.getpixel((1, 1))[0] - 127) <= 1


def test_palette_transparency_composited_on_white(tmp_path: Path) -> None:
    imagegen.palette_with_transparency((40, 30)).save(tmp_path / "p.png")
    image = decode(tmp_path / "p.png").image
    assert image.getpixel((5, 5)) == WHITE  # transparent index whose colour is black
    assert image.getpixel((35, 5)) == BLUE


def test_palette_transparency_gif_on_white(tmp_path: Path) -> None:
    imagegen.palette_with_transparency((40, 30)).save(tmp_path / "p.gif", transparency=0)
    image = decode(tmp_path / "p.gif").image
    assert image.getpixel((5, 5)) == WHITE and image.getpixel((35, 5)) == BLUE


def test_rgba_and_la_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 128), (10, 0, 20, 10))
    rgba.save(tmp_path / "rgba.png")
    image = decode(tmp_path / "rgba.png").image
    assert image.getpixel((2, 2)) == WHITE
    assert _close(image.getpixel((15, 2)), (255, 127, 127), tol=2)
    Image.new("LA", (4, 4), (0, 0)).save(tmp_path / "la.png")
    assert decode(tmp_path / "la.png").image.getpixel((1, 1)) == WHITE


def test_one_bit_and_grey(tmp_path: Path) -> None:
    Image.new("1", (8, 8), 1).save(tmp_path / "one.png")
    Image.new("L", (8, 8), 77).save(tmp_path / "l.bmp")
    assert decode(tmp_path / "one.png").image.getpixel((0, 0)) == WHITE
    result = decode(tmp_path / "l.bmp")
    assert result.image.getpixel((0, 0)) == (77, 77, 77) and result.format == "BMP"


# --- animations ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt,ext", [("GIF", "gif"), ("WEBP", "webp"), ("PNG", "png"), ("TIFF", "tif")])
def test_animation_yields_first_frame(tmp_path: Path, fmt: str, ext: str) -> None:
    path = tmp_path / f"anim.{ext}"
    imagegen.save_animation(imagegen.solid_frames(100), path, fmt)
    assert _header(path)[1] == 100
    result = decode(path)
    assert result.image.mode == "RGB" and result.image.size == (64, 48)
    assert _close(result.image.getpixel((10, 10)), RED, tol=8)


def _run_with_memory_cap(code: str, cap_bytes: int = 1536 * 2**20) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child whose address space is capped, so an unbounded allocation fails loudly."""
    prelude = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({cap_bytes}, {cap_bytes}))\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics are Linux-specific")
def test_gif_with_huge_second_frame_decodes_first_frame_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge2.gif"
    imagegen.write_gif_with_huge_frame(path, frame=1)  # frame 1 claims 60000x60000 (3.6 GB as "P")
    code = (
        f"from dedupd.ingest.decode import decode\nr = decode({str(path)!r})\nprint(r.image.size, r.width, r.height)\n"
    )
    proc = _run_with_memory_cap(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(32, 32) 32 32"


def test_gif_with_huge_first_frame_is_a_bomb(tmp_path: Path) -> None:
    # The logical screen is 32x32 but frame 0 claims 60000x60000: Pillow grows the size at open.
    path = tmp_path / "huge1.gif"
    imagegen.write_gif_with_huge_frame(path, frame=0)
    assert _reason(path).startswith("decompression bomb")
    imagegen.write_gif_with_huge_frame(path, frame=0, w=3000, h=3000)  # under Pillow's limit, over ours
    assert _reason(path, max_pixels=1_000_000) == "decompression bomb (3000x3000 > 1000000 px)"


# --- HEIF / AVIF --------------------------------------------------------------------


def test_heic(tmp_path: Path) -> None:
    _heif_encoder_or_skip()
    register_plugins()
    src = imagegen.photo(5, (160, 120))
    src.save(tmp_path / "a.heic", "HEIF", quality=95)
    result = decode(tmp_path / "a.heic")
    assert (result.format, result.width, result.height) == ("HEIF", 160, 120)
    assert result.image.mode == "RGB"
    assert imagegen.mean_abs_diff(result.image, src) < 10


def test_heic_orientation_is_applied_once(tmp_path: Path) -> None:
    _heif_encoder_or_skip()
    register_plugins()
    displayed = imagegen.photo(6, (90, 60))
    imagegen.stored_pixels(displayed, 6).save(tmp_path / "o6.heic", "HEIF", quality=95, exif=imagegen.exif_bytes(6))
    result = decode(tmp_path / "o6.heic")
    assert (result.width, result.height) == (90, 60) == result.image.size
    assert imagegen.mean_abs_diff(result.image, displayed) < 10


def test_heic_draft_may_use_embedded_thumbnail(tmp_path: Path) -> None:
    _heif_encoder_or_skip()
    register_plugins()
    # Small on purpose: x265 takes seconds per megapixel on a CI core.
    imagegen.photo(8, (480, 360)).save(tmp_path / "t.heic", "HEIF", quality=50, thumbnails=[240])
    result = decode(tmp_path / "t.heic", draft_side=160)
    assert (result.width, result.height) == (480, 360)
    assert result.image.size == (240, 180)
    assert decode(tmp_path / "t.heic", draft_side=200).image.size == (480, 360)  # thumbnail too small


def test_heic_with_generic_mif1_brand(tmp_path: Path) -> None:
    # Some cameras write major brand "mif1"; Pillow's AVIF plugin also claims it.
    _heif_encoder_or_skip()
    register_plugins()
    Image.new("RGB", (32, 32), GREEN).save(tmp_path / "a.heic", "HEIF", quality=95)
    data = bytearray((tmp_path / "a.heic").read_bytes())
    assert data[4:8] == b"ftyp"
    data[8:12] = b"mif1"
    (tmp_path / "b.heic").write_bytes(bytes(data))
    assert _close(decode(tmp_path / "b.heic").image.getpixel((16, 16)), GREEN)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow build has no AVIF support")
def test_avif(tmp_path: Path) -> None:
    displayed = imagegen.photo(22, (90, 60))
    try:
        displayed.save(tmp_path / "a.avif", "AVIF", quality=95)
        stored = imagegen.stored_pixels(displayed, 6)
        stored.save(tmp_path / "o6.avif", "AVIF", quality=95, exif=imagegen.exif_bytes(6))
    except (OSError, ValueError, KeyError) as exc:
        pytest.skip(f"Pillow cannot encode AVIF here: {exc}")
    for name in ("a.avif", "o6.avif"):
        result = decode(tmp_path / name)
        assert (result.format, result.width, result.height) == ("AVIF", 90, 60)
        assert result.image.size == (90, 60)
        assert imagegen.mean_abs_diff(result.image, displayed) < 10


def test_heif_without_a_plugin_is_unsupported_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _heif_encoder_or_skip()
    register_plugins()
    Image.new("RGB", (32, 32), GREEN).save(tmp_path / "a.heic", "HEIF")
    import dedupd.ingest.decode

    without = tuple(name for name in dedupd.ingest.decode._open_formats if name not in ("HEIF", "AVIF"))
    monkeypatch.setattr(dedupd.ingest.decode, "_open_formats", without)
    assert _reason(tmp_path / "a.heic") == "unsupported format"


# --- draft --------------------------------------------------------------------------


def test_draft_reduces_a_12mp_jpeg(big_jpeg: Path) -> None:
    result = decode(big_jpeg, draft_side=256)
    assert (result.width, result.height) == (4000, 3000)
    assert result.image.size == (500, 375)  # 1/8 scale: shorter side 375 >= 256
    assert decode(big_jpeg).image.size == (4000, 3000)


def test_draft_picks_smallest_scale_that_still_covers_the_side(tmp_path: Path) -> None:
    imagegen.save_jpeg(imagegen.photo(9, (1000, 800)), tmp_path / "a.jpg")
    assert decode(tmp_path / "a.jpg", draft_side=300).image.size == (500, 400)  # 1/4 would give 200
    assert decode(tmp_path / "a.jpg", draft_side=200).image.size == (250, 200)
    assert decode(tmp_path / "a.jpg", draft_side=5000).image.size == (1000, 800)


def test_draft_with_rotation_reports_displayed_full_size(tmp_path: Path) -> None:
    stored = imagegen.photo(10, (2000, 1500))
    imagegen.save_jpeg(stored, tmp_path / "r.jpg", exif_orientation=6)
    result = decode(tmp_path / "r.jpg", draft_side=256)
    assert (result.width, result.height) == (1500, 2000)
    assert result.image.size == (375, 500)  # 1/4 scale of 2000x1500, then turned upright


def test_draft_is_ignored_for_formats_without_it(tmp_path: Path) -> None:
    imagegen.photo(11, (600, 400)).save(tmp_path / "a.png")
    result = decode(tmp_path / "a.png", draft_side=100)
    assert result.image.size == (600, 400) == (result.width, result.height)


# --- decompression bombs --------------------------------------------------------------


def test_png_bomb_header_is_rejected_fast(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    imagegen.write_png_bomb_header(path, 60000, 60000)
    assert path.stat().st_size < 200
    start = time.perf_counter()
    reason = _reason(path)
    assert time.perf_counter() - start < 1.0
    assert reason == "decompression bomb (60000x60000 > 178956970 px)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics are Linux-specific")
def test_png_bomb_header_is_rejected_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    imagegen.write_png_bomb_header(path, 60000, 60000)
    code = (
        "from dedupd.ingest.decode import decode, DecodeError\n"
        f"try:\n    decode({str(path)!r})\nexcept DecodeError as e:\n    print(e.reason)\n"
    )
    proc = _run_with_memory_cap(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("decompression bomb")


def test_max_pixels_is_checked_before_decoding(tmp_path: Path) -> None:
    imagegen.write_png_bomb_header(tmp_path / "b.png", 3000, 3000)  # would be "truncated" if decoded
    assert _reason(tmp_path / "b.png", max_pixels=1_000_000) == "decompression bomb (3000x3000 > 1000000 px)"
    imagegen.photo(12, (200, 100)).save(tmp_path / "ok.png")
    assert _reason(tmp_path / "ok.png", max_pixels=19_999).startswith("decompression bomb (200x100")
    assert decode(tmp_path / "ok.png", max_pixels=20_000).image.size == (200, 100)


def test_max_pixels_wins_over_pillows_global_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow refuses anything over 2 * MAX_IMAGE_PIXELS at open; our limit must be the one that decides.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    imagegen.photo(13, (100, 100)).save(tmp_path / "a.png")
    assert decode(tmp_path / "a.png").image.size == (100, 100)
    assert _reason(tmp_path / "a.png", max_pixels=5000).startswith("decompression bomb (100x100")


def test_pillow_bomb_warning_escalated_to_error_does_not_break_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 000 px sits between Pillow's warning (6 000) and error (12 000) thresholds.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    imagegen.photo(21, (100, 100)).save(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert decode(tmp_path / "a.png").image.size == (100, 100)


# --- bad files ----------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reason(tmp_path / "empty.jpg") == "empty file"


@pytest.mark.parametrize(
    "fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"), ("TIFF", "tif"), ("BMP", "bmp")]
)
def test_truncated_file(tmp_path: Path, fmt: str, ext: str) -> None:
    src = tmp_path / f"full.{ext}"
    imagegen.photo(14, (300, 200)).save(src, fmt)
    imagegen.write_truncated(src, tmp_path / f"half.{ext}", 0.5)
    assert _reason(tmp_path / f"half.{ext}") == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_jpeg_header(tmp_path: Path) -> None:
    imagegen.save_jpeg(imagegen.photo(15, (300, 200)), tmp_path / "full.jpg")
    imagegen.write_truncated(tmp_path / "full.jpg", tmp_path / "head.jpg", 0.005)
    assert _reason(tmp_path / "head.jpg") == "truncated"


def test_truncated_heic(tmp_path: Path) -> None:
    _heif_encoder_or_skip()
    register_plugins()
    imagegen.photo(16, (300, 200)).save(tmp_path / "full.heic", "HEIF")
    imagegen.write_truncated(tmp_path / "full.heic", tmp_path / "half.heic", 0.5)
    assert _reason(tmp_path / "half.heic") == "truncated"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"hello, this is a text file\n" * 20, id="text"),
        pytest.param(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), id="random"),
        pytest.param(b"\x00", id="one-byte"),
    ],
)
def test_not_an_image(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "x.jpg").write_bytes(content)
    assert _reason(tmp_path / "x.jpg") == "not an image"


def test_appledouble_sidecar(tmp_path: Path) -> None:
    imagegen.write_appledouble(tmp_path / "._IMG_0001.jpg")
    assert (tmp_path / "._IMG_0001.jpg").read_bytes()[:4] == b"\x00\x05\x16\x07"
    assert _reason(tmp_path / "._IMG_0001.jpg") == "not an image"


def test_wrong_extension_still_decodes(tmp_path: Path) -> None:
    imagegen.photo(17, (50, 40)).save(tmp_path / "really_a_png.jpg", "PNG")
    result = decode(tmp_path / "really_a_png.jpg")
    assert result.format == "PNG" and result.image.size == (50, 40)


def test_bytes_path_with_invalid_utf8_name(tmp_path: Path) -> None:
    path = os.fsencode(tmp_path) + b"/caf\xe9_\xff.jpg"
    try:
        with open(path, "wb") as out:
            imagegen.photo(18, (40, 30)).save(out, "JPEG")
    except OSError as exc:  # e.g. macOS APFS refuses non-UTF-8 names
        pytest.skip(f"filesystem rejects non-UTF-8 names: {exc}")
    result = decode(path)
    assert result.image.size == (40, 30) and result.format == "JPEG"


def test_missing_file_and_directory_are_io_errors(tmp_path: Path) -> None:
    assert _reason(tmp_path / "nope.jpg").startswith("io error: ")
    assert _reason(tmp_path).startswith("io error: ")


def _reason_without_privileges(path: Path) -> str:
    """_reason(path) in a forked child that has become nobody: root reads any file, so CI (root) would otherwise
    never see a permission error. Forked, not spawned: the interpreter may live where nobody cannot read it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                decode(path)
                message = "decoded"
            except DecodeError as exc:
                message = exc.reason
        except BaseException as exc:  # noqa: BLE001 - whatever went wrong must reach the parent's assertion
            message = f"child failed: {exc!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unreadable_file_is_io_error() -> None:
    folder = Path(tempfile.mkdtemp(prefix="dedupd-unreadable-"))  # under /tmp: nobody may pass through it
    path = folder / "secret.jpg"
    try:
        folder.chmod(0o711)
        imagegen.save_jpeg(imagegen.photo(19, (20, 20)), path)
        path.chmod(0)
        reason = _reason_without_privileges(path) if os.geteuid() == 0 else _reason(path)
        assert reason.startswith("io error: "), reason
    finally:
        shutil.rmtree(folder)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF reader warns about short IFDs
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_corrupted_bytes_only_ever_raise_decode_error(tmp_path: Path, fmt: str) -> None:
    buf = tmp_path / "src"
    imagegen.photo(20, (64, 48)).save(buf, fmt)
    data = buf.read_bytes()
    rng = np.random.default_rng(sum(map(ord, fmt)))
    for trial in range(25):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 12))):
            mutated[pos] = int(rng.integers(0, 256))
        path = tmp_path / f"m{trial}"
        path.write_bytes(bytes(mutated[: int(rng.integers(len(data) // 2, len(data) + 1))]))
        try:
            result = decode(path, draft_side=32)
        except DecodeError as exc:
            assert exc.reason
        else:
            assert result.image.mode == "RGB"
