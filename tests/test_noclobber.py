"""Moves that never replace a file: the one primitive the purge, its recovery and undo move files with."""

from __future__ import annotations

import errno
import os

import pytest
from support import b
from test_never_last_copy import config, copies, purge, scan
from test_never_last_copy_more import journal_states

from dedupd.faults import acting_at
from dedupd.purge.noclobber import move_unless_taken, rename_noreplace


def test_a_move_to_a_free_name_moves_the_file_itself(tmp_path):
    source, target = tmp_path / "a", tmp_path / "b"
    source.write_bytes(b"picture")
    inode = source.stat().st_ino
    assert move_unless_taken(b(source), b(target))
    assert not source.exists() and target.stat().st_ino == inode and target.stat().st_nlink == 1


def test_a_move_to_a_taken_name_leaves_both_files_as_they_were(tmp_path):
    source, target = tmp_path / "a", tmp_path / "b"
    source.write_bytes(b"picture")
    target.write_bytes(b"the last copy of another picture")
    assert not rename_noreplace(b(source), b(target))
    assert not move_unless_taken(b(source), b(target))
    assert source.read_bytes() == b"picture" and target.read_bytes() == b"the last copy of another picture"


def test_a_move_across_filesystems_says_so(tmp_path):
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same filesystem here")
    source = tmp_path / "a"
    source.write_bytes(b"picture")
    target = f"/dev/shm/dedupd-test-{os.getpid()}".encode()
    with pytest.raises(OSError) as raised:
        move_unless_taken(b(source), target)
    assert raised.value.errno == errno.EXDEV and source.exists() and not os.path.lexists(target)


def test_a_file_put_at_the_trash_place_after_the_gate_is_never_moved_over(tmp_path):
    """purge --trash: the gate sees the victim's place in the trash free; another purge, or the user, puts a file
    there before the move (perhaps an earlier trashed file: the last copy of its picture). A check, then
    os.rename(), replaced it; the move now fails instead, and the victim stays in place."""
    root = tmp_path / "t"
    keep, victim = copies(root, 451)
    cfg = config(tmp_path)
    scan(cfg, root)
    trash = tmp_path / "trash"
    placed = trash / "b" / "x.jpg"

    def another_file_arrives() -> None:
        placed.parent.mkdir(parents=True, exist_ok=True)
        placed.write_bytes(b"an earlier purge's trashed file")

    with acting_at("before-move", another_file_arrives):
        rc, lines = purge(cfg, trash=trash)

    assert rc == 1 and placed.read_bytes() == b"an earlier purge's trashed file", lines
    assert victim.exists() and journal_states(cfg)[b(victim)] == "skipped", lines
