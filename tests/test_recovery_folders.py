"""Recovery when the victim's folder is not where it was: a drive unplugged or back under another device number, a
folder renamed (perhaps with a new one made at its name), a folder the user removed.

An interrupted act is settled from what the disk shows; finding nothing proves nothing unless the folder looked in is
the one the purge acted in. Each test kills a real purge process (kill -9 at a fault point) or acts at one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from support import b, purge_process
from swapping import rewrite
from test_never_last_copy import config, photo, purge, scan
from test_never_last_copy_more import hand_report, journal_states, killed_aside, scanned_copies

from dedupd.cli import main


def test_recovery_does_not_close_an_interrupted_delete_while_the_victims_drive_is_away(tmp_path):
    """b/ is an external drive whose mount folder goes away when it is unplugged. A purge is killed between the
    victim's rename aside and its unlink, and the keeper is then edited: the aside file is the last copy. The next
    purge ran with the drive away, found neither the aside name nor the victim, and closed the entry as "the delete
    had completed": plugged back in, the last copy sat under its hidden name for good."""
    root, keep, victim, cfg, report = killed_aside(tmp_path, 311)
    picture = keep.read_bytes()
    rewrite(bytes(keep), bytes(photo(tmp_path / "edit.jpg", 312)))
    away = tmp_path / "drive-unplugged"
    (root / "b").rename(away)

    rc, offline = purge(cfg, report=report)
    assert rc == 1 and any("is not there as it was" in line for line in offline), offline
    away.rename(root / "b")
    rc, online = purge(cfg, report=report)

    assert victim.read_bytes() == picture, online  # put back in plain sight once the drive is back


def _loop_mount(image: Path, at: Path) -> None:
    subprocess.run(["mount", "-o", "loop", str(image), str(at)], check=True, capture_output=True)


@pytest.fixture
def renumbered_drive(tmp_path):
    """t/b/ is an ext4 'USB drive' (a loop image); replug() mounts it again under another device number, as a
    drive re-enumerated after a power cut (sdb1 -> sdc1), or any NFS/FUSE share remounted, gets one."""
    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        pytest.skip("needs root and losetup / mkfs.ext4")
    image, spare = tmp_path / "drive.img", tmp_path / "spare.img"
    for img in (image, spare):
        subprocess.run(["truncate", "-s", "32M", str(img)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    mount = tmp_path / "t" / "b"
    mount.mkdir(parents=True)
    try:
        _loop_mount(image, mount)
    except subprocess.CalledProcessError:
        pytest.skip("cannot loop-mount here")
    held: list[str] = []

    def replug() -> None:
        before = os.stat(mount).st_dev
        subprocess.run(["umount", str(mount)], check=True)
        held.append(
            subprocess.run(
                ["losetup", "-f", "--show", str(spare)], check=True, capture_output=True, text=True
            ).stdout.strip()
        )  # another device takes the old number meanwhile
        _loop_mount(image, mount)
        assert os.stat(mount).st_dev != before

    yield replug
    subprocess.run(["umount", str(mount)], capture_output=True)
    for dev in held:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def test_recovery_does_not_hide_the_last_copy_on_a_drive_that_came_back_under_another_device_number(
    tmp_path, renumbered_drive
):
    """kill -9 (a power cut) between the victim's rename aside and its unlink, on b/, a USB drive. The keeper is then
    edited: the aside file is the picture's last copy. After the reboot the drive comes back as another device
    (st_dev differs, inodes the same). Recovery compares (st_dev, st_ino): the aside file is "another file",
    the entry is closed as "the aside name holds another file; left alone", and the last copy stays for good
    under a hidden .dedupd-purge-* name no scan indexes (and no message names)."""
    root, keep, victim, cfg, report = killed_aside(tmp_path, 411)
    picture = victim.parent.joinpath(next(p for p in os.listdir(victim.parent) if p.startswith(".dedupd-purge-")))
    picture = picture.read_bytes()
    rewrite(bytes(keep), bytes(photo(tmp_path / "edit.jpg", 412)))
    renumbered_drive()

    rc, lines = purge(cfg, report=report)

    hidden = [p.name for p in victim.parent.glob(".dedupd-purge-*")]
    assert victim.exists() and victim.read_bytes() == picture or journal_states(cfg).get(b(victim)) == "intent", (
        lines,
        hidden,
        journal_states(cfg),
    )


def test_a_companion_stays_journaled_open_while_its_photo_does(tmp_path):
    """A purge killed with the photo aside, its sidecar not yet moved; the next purge runs with the folder away (a
    drive unplugged). The photo's entry stayed open, but its sidecar's was closed as "changed by someone else":
    once the drive was back the photo went and its sidecar stayed behind without it."""
    root = tmp_path / "t"
    for folder in "ab":
        photo(root / folder / "IMG_8.JPG", 441)
        (root / folder / "IMG_8.JPG.xmp").write_text("<x:xmpmeta/>")
    cfg = config(tmp_path)
    report = tmp_path / "report.json"
    scan(cfg, root, report=report)
    killed = purge_process(cfg, report, fault="after-aside:1")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    away = tmp_path / "drive-unplugged"
    (root / "b").rename(away)

    rc, offline = purge(cfg, report=report)
    away.rename(root / "b")
    rc, online = purge(cfg, report=report)

    assert sorted(p.name for p in (root / "b").iterdir()) == [], (offline, online)
    assert (root / "a" / "IMG_8.JPG").exists() and (root / "a" / "IMG_8.JPG.xmp").exists()


def test_recovery_finds_a_folder_renamed_with_a_new_one_made_at_its_name(tmp_path):
    """kill -9 between the rename aside and the unlink; the keeper is then edited, so the aside file is the picture's
    last copy. The user renames b/ to b-2019/ and an import makes a new, empty b/. Recovery looked only at whatever
    was at b/ now, found nothing, and closed the entry as "the delete had completed": the last copy sat under
    b-2019/.dedupd-purge-* for good. The folder's identity, journaled with the intent, finds b-2019/."""
    root, keep, victim, cfg, report = killed_aside(tmp_path, 431)
    (aside,) = (root / "b").glob(".dedupd-purge-*")
    picture = aside.read_bytes()
    rewrite(bytes(keep), bytes(photo(tmp_path / "edit.jpg", 432)))
    (root / "b").rename(root / "b-2019")
    (root / "b").mkdir()

    rc, lines = purge(cfg, report=report)

    assert (root / "b-2019" / "x.jpg").read_bytes() == picture, lines  # put back in plain sight, in its folder
    assert list((root / "b-2019").glob(".dedupd-purge-*")) == [] and list((root / "b").iterdir()) == []
    assert journal_states(cfg)[b(victim)] == "skipped", lines


def test_recovery_finishes_a_delete_in_a_renamed_folder_while_the_keeper_holds_the_picture(tmp_path):
    """The same rename, the keeper untouched: the interrupted delete is finished in the folder's new place."""
    root, keep, victim, cfg, report = killed_aside(tmp_path, 433)
    (root / "b").rename(root / "b-2019")

    rc, lines = purge(cfg, report=report)

    assert rc == 0 and list((root / "b-2019").iterdir()) == [] and keep.exists(), lines
    assert journal_states(cfg)[b(victim)] == "done", lines


def test_a_folder_renamed_out_of_the_scanned_roots_keeps_its_entry_open(tmp_path):
    """Renamed to where no scanned root reaches, with a new folder at its name: nothing to find, nothing concluded."""
    root, keep, victim, cfg, report = killed_aside(tmp_path, 435)
    (root / "b").rename(tmp_path / "elsewhere")
    (root / "b").mkdir()

    rc, lines = purge(cfg, report=report)

    assert rc == 1 and journal_states(cfg)[b(victim)] == "intent", lines
    assert any("is not there as it was" in line for line in lines), lines
    assert len(list((tmp_path / "elsewhere").glob(".dedupd-purge-*"))) == 1


def test_an_entry_whose_folder_the_user_removed_is_closed_with_forget(tmp_path, capsys):
    """A purge is killed after its unlink, before its 'done'; the user then deletes the folder the duplicate left
    empty. Recovery cannot tell that from a drive away, so the entry stays open (exit 1) and names the command that
    closes it."""
    root, keep, victim, cfg = scanned_copies(tmp_path, 421)
    report = tmp_path / "report.json"
    scan(cfg, root, report=report)
    killed = purge_process(cfg, report, fault="before-done:1")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    shutil.rmtree(root / "b")
    nothing = hand_report(tmp_path / "nothing.json", [])

    rc, lines = purge(cfg, report=nothing)
    assert rc == 1 and any(f"dedupd purge --forget {root / 'b'}" in line for line in lines), lines
    assert main(["purge", "--store", str(cfg.store_path()), "--forget", str(root / "b")]) == 0
    assert f"forgot {victim}" in capsys.readouterr().out
    rc, lines = purge(cfg, report=nothing)
    assert rc == 0 and journal_states(cfg)[b(victim)] == "forgotten", lines


def test_forget_leaves_an_entry_whose_file_still_waits(tmp_path, capsys):
    """--forget is the user's word that the folder is gone; it does not outweigh a file found where the act put it
    (here the folder was only renamed within the roots), nor a folder in place, and says so (exit 1)."""
    root, keep, victim, cfg, report = killed_aside(tmp_path, 437)
    (root / "b").rename(root / "b-2019")

    assert main(["purge", "--store", str(cfg.store_path()), "--forget", str(root / "b")]) == 1
    out = capsys.readouterr().out
    assert f"not forgotten {victim}: its file waits at {root / 'b-2019' / '.dedupd-purge-'}" in out, out
    assert journal_states(cfg)[b(victim)] == "intent"


def test_forget_of_a_folder_with_nothing_open_is_a_usage_error(tmp_path, capsys):
    root, keep, victim, cfg = scanned_copies(tmp_path, 439)
    assert main(["purge", "--store", str(cfg.store_path()), "--forget", str(root / "nowhere")]) == 2
    assert "no interrupted purge act is open in that folder" in capsys.readouterr().err


def _killed_aside_in_a_root(tmp_path, seed):
    """The keeper in root t/a and its byte copy right in root t/b (each scanned as a root of its own), and a purge
    of the copy killed (kill -9) between its rename aside and its unlink: (keep, victim, config)."""
    keep = photo(tmp_path / "t" / "a" / "x.jpg", seed)
    victim = tmp_path / "t" / "b" / "x.jpg"
    victim.parent.mkdir(parents=True)
    shutil.copy2(keep, victim)
    cfg = config(tmp_path)
    for root in (keep.parent, victim.parent):
        scan(cfg, root, report=tmp_path / "scanned.json")
    killed = purge_process(cfg, hand_report(tmp_path / "report.json", [(keep, [victim])]), fault="after-aside:1")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    return keep, victim, cfg


def _renamed_and_scanned(cfg, root: Path, tmp_path) -> Path:
    renamed = root.with_name(root.name + "-2019")
    root.rename(renamed)
    scan(cfg, renamed, report=tmp_path / "scanned.json")
    return renamed


def test_recovery_finds_a_root_folder_renamed_and_scanned_under_its_new_name(tmp_path):
    """The victim's folder is a scanned root. After the kill the keeper is edited (the aside file is the picture's
    last copy), and the user renames the root and scans it under its new name. Recovery looked for the journaled
    folder only below the roots, never at the roots themselves: the entry stayed open for good, and `--forget` of
    the old name would have closed it over the hidden last copy."""
    keep, victim, cfg = _killed_aside_in_a_root(tmp_path, 451)
    (aside,) = victim.parent.glob(".dedupd-purge-*")
    picture = aside.read_bytes()
    rewrite(bytes(keep), bytes(photo(tmp_path / "edit.jpg", 452)))
    renamed = _renamed_and_scanned(cfg, victim.parent, tmp_path)

    rc, lines = purge(cfg, report=hand_report(tmp_path / "nothing.json", []))

    assert (renamed / "x.jpg").read_bytes() == picture, lines  # back in plain sight, in its folder
    assert list(renamed.glob(".dedupd-purge-*")) == [] and journal_states(cfg)[b(victim)] == "skipped", lines


def test_forget_leaves_an_entry_whose_file_waits_in_a_root_renamed_since(tmp_path, capsys):
    """`--forget` of the old name, with the root renamed and scanned again: its file is found waiting, not closed."""
    keep, victim, cfg = _killed_aside_in_a_root(tmp_path, 453)
    renamed = _renamed_and_scanned(cfg, victim.parent, tmp_path)

    assert main(["purge", "--store", str(cfg.store_path()), "--forget", str(victim.parent)]) == 1
    out = capsys.readouterr().out
    assert f"not forgotten {victim}: its file waits at {renamed / '.dedupd-purge-'}" in out, out
    assert journal_states(cfg)[b(victim)] == "intent"
