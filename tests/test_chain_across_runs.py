"""Chains across runs: a purge removes C against B; a later run must not remove B against an A that is not C's
picture, or C survives only at a chain's far end. The journal's earlier acts hold B (by the bytes it held, its
path, and the bytes the store pairs with them) to keepers that are C's picture too, by the store's pairs and by the
rules (burst guard, multi-frame, decisions). Real scans, purges and kills on real files.
"""

from __future__ import annotations

import os
import shutil
import signal

import imagegen
import numpy as np
import pytest
import support
from PIL import Image, PngImagePlugin
from support import PixelEmbedder, purge_process
from test_never_last_copy import config, purge, scan
from test_review import save_with_exif

from dedupd import commands
from dedupd.errors import PurgeFailures
from dedupd.ingest.capture import different_captures, read_capture
from dedupd.model.loader import LazyEmbedder


def _embedded(path) -> np.ndarray:
    with Image.open(path) as im:
        return PixelEmbedder().embed([im])[0]


def _chain_removed_once(tmp_path):
    """c.png removed against b.png by `scan --inplace`, a.png (0.99 to b.png, 0.96 to c.png) held back for later:
    (root, config, the folder a.png waits in)."""
    root, later = tmp_path / "t", tmp_path / "later"
    imagegen.write_chain(root, ("c.png", "b.png", "a.png"))
    c, b_, a = (_embedded(root / n) for n in ("c.png", "b.png", "a.png"))
    assert float(c @ b_) >= 0.985 and float(b_ @ a) >= 0.985 and float(c @ a) < 0.975  # the premise
    later.mkdir()
    os.rename(root / "a.png", later / "a.png")
    cfg = config(tmp_path)
    scan(cfg, root, inplace=True)
    assert not (root / "c.png").exists() and (root / "b.png").exists()
    return root, cfg, later


def _untouched(root) -> str:
    return "b.png"


def _renamed(root) -> str:
    os.rename(root / "b.png", root / "d.png")  # an import tool's rename
    return "d.png"


def _titled(root) -> str:
    """A title saved into b.png: new bytes, the same pixels."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "the lake")
    with Image.open(root / "b.png") as im:
        im.load()
    im.save(root / "b.png", pnginfo=info)
    return "b.png"


@pytest.mark.parametrize("meanwhile", [_untouched, _renamed, _titled], ids=["untouched", "renamed", "titled"])
def test_a_later_run_never_removes_the_keeper_of_a_picture_an_earlier_run_removed(tmp_path, meanwhile):
    """`scan --inplace` (a cron job) or purge.auto removes c.png against b.png (cosine 0.99). Later a.png arrives:
    0.99 to b.png, 0.96 to c.png (two pictures). The guard against chains held within one run only, so the next run
    removed b.png against a.png, and c.png's picture survived in no file at the threshold. The journal's earlier
    acts now hold b.png to keepers that are c.png's picture too; found by the bytes b.png held, not by its path
    (renamed since: it went), nor by those bytes alone (a title saved into it since: it went), as the store pairs
    its new bytes with its old."""
    root, cfg, later = _chain_removed_once(tmp_path)
    carrier = meanwhile(root)
    os.rename(later / "a.png", root / "a.png")

    with pytest.raises(PurgeFailures):
        scan(cfg, root, inplace=True)
    rc, lines = purge(cfg)

    assert (root / carrier).exists() and (root / "a.png").exists(), lines
    assert any("carries the picture of" in line and "c.png" in line for line in lines), lines


def test_an_earlier_runs_keeper_may_go_to_a_byte_copy_of_itself(tmp_path):
    """The same chain, but what arrives later is a byte copy of b.png (a phone backup imported again): it holds
    c.png's picture as wholly as b.png does, so the usual keep policy decides between the two."""
    root = tmp_path / "t"
    imagegen.write_chain(root, ("c.png", "b.png"))
    cfg = config(tmp_path)
    scan(cfg, root, inplace=True)
    assert not (root / "c.png").exists()
    shutil.copy2(root / "b.png", root / "a.png")  # sorts first: the keeper under lexi

    scan(cfg, root, inplace=True)

    assert (root / "a.png").exists() and not (root / "b.png").exists()


def test_a_chain_across_runs_never_ends_at_another_burst_frame(tmp_path):
    """c.jpg (burst frame 1) is removed against b.jpg, its export without EXIF. Then a.jpg, frame 2 of the same
    burst, arrives: another capture, however close (the burst guard). The guard asked only for a stored pair of a
    and c, so b.jpg went against a.jpg and frame 1 was in no file. The removed photo's capture, which the store
    keeps with its vector, now meets the rules too."""
    root, later = tmp_path / "t", tmp_path / "later"
    root.mkdir(), later.mkdir()
    frame1 = imagegen.photo(7, (320, 240))
    frame2 = Image.blend(frame1, imagegen.photo(8, (320, 240)), 0.1)
    save_with_exif(frame1, root / "c.jpg", "2024:05:01 10:00:00", "10")
    frame1.resize((160, 120)).save(root / "b.jpg", quality=92)  # an export: no EXIF at all
    save_with_exif(frame2, later / "a.jpg", "2024:05:01 10:00:00", "20")
    assert float(_embedded_image(frame1) @ _embedded_image(frame2)) > 0.99  # the premise: a pair at the threshold,
    with Image.open(root / "c.jpg") as one, Image.open(later / "a.jpg") as two:  # and two captures
        assert different_captures(read_capture(one), read_capture(two).to_dict())
    cfg = config(tmp_path)
    scan(cfg, root, inplace=True)
    assert not (root / "c.jpg").exists() and (root / "b.jpg").exists()
    os.rename(later / "a.jpg", root / "a.jpg")

    scan(cfg, root)
    rc, lines = purge(cfg)

    assert (root / "b.jpg").exists(), lines
    assert any("carries the picture of" in line and "burst guard" in line for line in lines), lines


def _embedded_image(img) -> np.ndarray:
    return PixelEmbedder().embed([img])[0]


@pytest.mark.parametrize("closed", ["left open", "forgotten"])
def test_an_act_a_kill_left_open_counts_for_the_chain_guard(tmp_path, closed):
    """A purge deletes x/c.png against b.png and is killed before its done line; x/ is then moved out of the roots,
    so recovery keeps the entry open (its folder is away), or the user closes it with --forget. a.png (0.99 to b,
    0.96 to c) arrives: the guard read only done acts, so b.png went against a.png and c's picture was in no file."""
    root, later = tmp_path / "t", tmp_path / "later"
    imagegen.write_chain(root, ("c.png", "b.png", "a.png"))
    later.mkdir(), (root / "x").mkdir()
    os.rename(root / "a.png", later / "a.png")
    os.rename(root / "c.png", root / "x" / "c.png")
    cfg = config(tmp_path)
    report = tmp_path / "report.json"
    assert support.pairs(scan(cfg, root, report=report)) == [(str(root / "b.png"), str(root / "x" / "c.png"))]
    killed = purge_process(cfg, report, fault="before-done:1")
    assert killed.returncode == -signal.SIGKILL and not (root / "x" / "c.png").exists(), killed.stderr
    os.rename(root / "x", tmp_path / "x-archived")  # nothing of c is in it: the delete had completed
    if closed == "forgotten":
        assert commands.forget_purge(cfg, str(root / "x"), echo=lambda s: None) == 0
    os.rename(later / "a.png", root / "a.png")

    scan(cfg, root)
    rc, lines = purge(cfg)

    assert (root / "b.png").exists(), lines


class NextModel(PixelEmbedder):
    """Another model key (as `--preset fast` or a new model.name gives): the library is embedded again."""

    model_id = "test/pixels-v2"


def test_an_edited_keeper_keeps_its_history_under_another_model(tmp_path):
    """c.png is removed against b.png; a title is then saved into b.png. The user switches model: b.png's old bytes,
    held by no file, get no vector under it, so nothing pairs the new b.png with the earlier act's keeper bytes, and
    b.png went against a.png. Its path still names it as that act's keeper."""
    root, cfg, later = _chain_removed_once(tmp_path)
    _titled(root)
    os.rename(later / "a.png", root / "a.png")
    embedder = LazyEmbedder(cfg, NextModel())
    commands.scan(str(root), cfg, str(tmp_path / "next.json"), False, None, lambda s: None, embedder=embedder)

    lines: list[str] = []
    with pytest.raises(PurgeFailures):
        commands.purge(cfg, None, True, None, echo=lines.append, model=NextModel.model_id)

    assert (root / "b.png").exists(), lines
