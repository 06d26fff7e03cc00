"""dedupd.service watchers, observers, mounts and dirty paths: real inotify and real polling on tmp trees,
DirtyPaths settling, backend choice, fallbacks."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from watchdog.events import (
    DirCreatedEvent,
    DirModifiedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)
from watchdog.observers.inotify import InotifyObserver

from dedupd.paths import Ignore
from dedupd.service.dirty import DirtyPaths
from dedupd.service.mounts import Backend, choose_backend, mount_fstype, parse_mountinfo
from dedupd.service.observers import RootHandler, StoppableThread, inotify_probe, make_observer
from dedupd.service.watchers import Watchers

# watchdog's own harmless noise about a folder watched twice during its recursive set-up (filtered in
# dedupd.service.watchers at import too, but pytest resets warning filters after collection)
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

NAS_IGNORE = ("@eaDir", "#recycle", "#snapshot", ".@__thumb", ".Trash-*", "._*")
POLL = 0.2


def broot(path: Path) -> bytes:
    return os.fsencode(os.path.realpath(path))


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def write(path: bytes, data: bytes = b"x" * 100) -> None:
    with open(path, "wb") as f:
        f.write(data)


def pending_has(dirty: DirtyPaths, *paths: bytes):
    return lambda: set(paths) <= set(dirty.pending())


def drain(dirty: DirtyPaths, *expected: bytes) -> set[bytes]:
    """settled(0) until the expected paths came out (late events for them re-mark and delay them)."""
    got: set[bytes] = set()
    assert wait_for(lambda: got.update(dirty.settled(0)) or set(expected) <= got), (expected, got)
    return got


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def make_watchers():
    made: list[Watchers] = []

    def make(mode: str = "inotify", dirty: DirtyPaths | None = None, **kw) -> Watchers:
        kw.setdefault("poll_interval", POLL)
        kw.setdefault("ignore", NAS_IGNORE)
        w = Watchers(dirty or DirtyPaths(), mode, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop(timeout=5)


class Recording:
    """An observer factory (the seam Watchers offers) that keeps what it made; `inotify` may be replaced."""

    def __init__(self, inotify=None) -> None:
        self.made: list = []
        self.inotify = inotify

    def __call__(self, kind: str):
        obs = (
            self.inotify()
            if kind == "inotify" and self.inotify
            else make_observer(kind, poll_interval=POLL, ignore=NAS_IGNORE)
        )
        self.made.append((kind, obs))
        return obs


# ====================================================================================================================
# Real inotify
# ====================================================================================================================


def test_inotify_create_modify_delete(tmp_path, make_watchers):
    root = broot(tmp_path)
    w = make_watchers("inotify")
    assert w.add_root(root) == Backend("inotify", "watch.mode: inotify")
    a = os.path.join(root, b"a.jpg")
    write(a)
    assert drain(w.dirty, a) == {a}

    with open(a, "ab") as f:
        f.write(b"more")
    assert drain(w.dirty, a) == {a}

    os.unlink(a)
    assert drain(w.dirty, a) == {a}  # missing: returned, the caller treats it as a deletion
    assert not os.path.exists(a)
    assert w.supervise() == {root: "ok"}


def test_inotify_temp_then_rename_and_moves(tmp_path, make_watchers):
    root = broot(tmp_path)
    os.makedirs(os.path.join(root, b"album/sub"))
    write(os.path.join(root, b"album/sub/in.jpg"))
    w = make_watchers("inotify")
    w.add_root(root)

    tmp, final = os.path.join(root, b".upload.tmp"), os.path.join(root, b"photo.jpg")
    write(tmp)
    os.rename(tmp, final)  # no image extension on the temp name: must not be filtered
    assert wait_for(pending_has(w.dirty, final))

    moved = os.path.join(root, b"moved.jpg")
    os.rename(final, moved)
    assert wait_for(pending_has(w.dirty, final, moved))

    src, dst = os.path.join(root, b"album"), os.path.join(root, b"renamed-album")
    os.rename(src, dst)
    assert wait_for(pending_has(w.dirty, src, dst))

    # a file moved out of the tree is a deletion; into the tree, a creation
    outside = os.fsencode(os.path.realpath(tmp_path.parent / f"{tmp_path.name}-outside.jpg"))
    os.rename(moved, outside)
    assert wait_for(pending_has(w.dirty, moved))
    os.rename(outside, os.path.join(root, b"back.jpg"))
    assert wait_for(pending_has(w.dirty, os.path.join(root, b"back.jpg")))


def test_inotify_ignores_nas_folders(tmp_path, make_watchers):
    root = broot(tmp_path)
    w = make_watchers("inotify")
    w.add_root(root)
    ignored = []
    for folder in (b"@eaDir", b"#recycle", b"#snapshot", b".@__thumb", b".Trash-1000", b"album/@eaDir"):
        os.makedirs(os.path.join(root, folder))
        path = os.path.join(root, folder, b"x.jpg")
        write(path)
        ignored += [os.path.join(root, folder), path]
    appledouble = os.path.join(root, b"._x.jpg")
    write(appledouble)
    # a move out of the recycle bin is a creation of the destination only
    restored = os.path.join(root, b"restored.jpg")
    os.rename(os.path.join(root, b"#recycle/x.jpg"), restored)
    sentinel = os.path.join(root, b"zz-last.jpg")
    write(sentinel)
    assert wait_for(pending_has(w.dirty, sentinel, restored))
    time.sleep(0.1)
    assert set(w.dirty.pending()).isdisjoint([*ignored, appledouble])
    assert os.path.join(root, b"album") in w.dirty.pending()  # a folder holding an ignored folder is not ignored


def test_inotify_non_utf8_names_exact_bytes(tmp_path, make_watchers):
    root = broot(tmp_path)
    w = make_watchers("inotify")
    w.add_root(root)
    latin1 = os.path.join(root, b"caf\xe9.jpg")
    junk_dir = os.path.join(root, b"\xff\xfe dir")
    os.mkdir(junk_dir)
    inside = os.path.join(junk_dir, b"\x80.jpg")
    write(latin1)
    write(inside)
    assert wait_for(pending_has(w.dirty, latin1, junk_dir, inside))
    assert all(isinstance(p, bytes) for p in w.dirty.pending())
    assert all(os.path.exists(p) for p in drain(w.dirty, latin1, inside))  # usable as they are


def test_inotify_queue_overflow_marks_root(tmp_path, make_watchers):
    """A real IN_Q_OVERFLOW: watchdog's reader thread is held on a debug log record while 20k events pile up."""
    root = broot(tmp_path)
    w = make_watchers("inotify")
    w.add_root(root)
    a, b = os.path.join(root, b"a.jpg"), os.path.join(root, b"b.jpg")
    write(a)
    write(b)
    assert wait_for(pending_has(w.dirty, a, b))

    gate = threading.Event()

    class Hold(logging.Handler):
        def emit(self, record):
            gate.wait(5)

    grouper = logging.getLogger("watchdog.observers.inotify_move_event_grouper")
    hold, level = Hold(), grouper.level
    grouper.addHandler(hold)
    grouper.setLevel(logging.DEBUG)
    try:
        for _ in range(10_000):  # alternating, so the kernel cannot merge them: > 16384 queued events
            os.utime(a)
            os.utime(b)
    finally:
        gate.set()
        grouper.removeHandler(hold)
        grouper.setLevel(level)
    assert wait_for(lambda: root in w.dirty.overflowed())  # at once, from watchdog's reader thread
    # supervise replaces the observer (watchdog's own re-watch races with new changes) and marks the root again,
    # so the caller's reconcile starts after the new watches are in place
    assert w.supervise() == {root: "ok"}
    assert w.dirty.overflowed() == {root}
    assert w.backends()[root].kind == "inotify"
    after = os.path.join(root, b"after.jpg")
    write(after)
    assert wait_for(pending_has(w.dirty, after))
    assert w.supervise() == {root: "ok"}
    assert w.dirty.overflowed() == set()


# ====================================================================================================================
# Real polling
# ====================================================================================================================


def test_polling_create_move_delete(tmp_path, make_watchers):
    root = broot(tmp_path)
    os.mkdir(os.path.join(root, b"album"))
    w = make_watchers("poll")
    assert w.add_root(root) == Backend("poll", "watch.mode: poll")

    a = os.path.join(root, b"album/a.jpg")
    write(a)
    drain(w.dirty, a)

    b = os.path.join(root, b"album/b.jpg")
    os.rename(a, b)
    drain(w.dirty, a, b)

    src, dst = os.path.join(root, b"album"), os.path.join(root, b"album2")
    os.rename(src, dst)
    drain(w.dirty, src, dst)

    gone = os.path.join(dst, b"b.jpg")
    os.unlink(gone)
    assert wait_for(pending_has(w.dirty, gone))
    assert w.supervise() == {root: "ok"}


def test_polling_ignores_nas_folders_and_keeps_bytes(tmp_path, make_watchers):
    root = broot(tmp_path)
    w = make_watchers("poll")
    w.add_root(root)
    os.mkdir(os.path.join(root, b"@eaDir"))
    hidden = os.path.join(root, b"@eaDir/t.jpg")
    write(hidden)
    name = os.path.join(root, b"\xe9t\xe9.jpg")
    write(name)
    assert wait_for(pending_has(w.dirty, name))
    time.sleep(2 * POLL)
    assert w.dirty.pending() == [name]


def test_remove_root_stops_events(tmp_path, make_watchers):
    root = broot(tmp_path)
    w = make_watchers("inotify")
    w.add_root(root)
    w.remove_root(root)
    assert w.backends() == {}
    write(os.path.join(root, b"late.jpg"))
    time.sleep(0.2)
    assert w.dirty.pending() == []


# ====================================================================================================================
# DirtyPaths.settled
# ====================================================================================================================


def test_settled_waits_for_a_growing_file(tmp_path):
    clock = Clock()
    dirty = DirtyPaths(clock=clock)
    path = os.fsencode(tmp_path / "growing.jpg")
    write(path, b"a" * 10)
    dirty.mark(path)
    assert dirty.settled(1.0) == []  # first look starts the clock
    for _ in range(3):  # still being written, no further events (as with polling)
        clock.t += 1.0
        with open(path, "ab") as f:
            f.write(b"b" * 10)
        assert dirty.settled(1.0) == []
    clock.t += 0.5
    assert dirty.settled(1.0) == []
    clock.t += 0.5
    assert dirty.settled(1.0) == [path]
    assert len(dirty) == 0


def test_settled_mark_restarts_the_clock_and_missing_paths_come_back(tmp_path):
    clock = Clock()
    dirty = DirtyPaths(clock=clock)
    path = os.fsencode(tmp_path / "p.jpg")
    gone = os.fsencode(tmp_path / "never-there.jpg")
    write(path)
    dirty.mark(path)
    dirty.mark(gone)
    assert dirty.settled(1.0) == []
    clock.t += 0.9
    dirty.mark(path)  # another event: wait again
    clock.t += 0.1
    assert dirty.settled(1.0) == [gone]
    os.unlink(path)  # deleted while dirty: missing is a change too
    clock.t += 1.0
    assert dirty.settled(1.0) == []
    clock.t += 1.0
    assert dirty.settled(1.0) == [path]
    assert dirty.settled(1.0) == []


def test_settled_real_clock_small_settle(tmp_path):
    dirty = DirtyPaths()
    path = os.fsencode(tmp_path / "done.jpg")
    folder = os.fsencode(tmp_path / "folder")
    os.mkdir(folder)
    write(path)
    dirty.mark(path)
    dirty.mark(path)
    dirty.mark(folder)
    assert len(dirty) == 2
    got: list[bytes] = []
    assert wait_for(lambda: got.extend(dirty.settled(0.3)) or len(got) == 2, timeout=3)
    assert sorted(got) == sorted([path, folder])  # folders come back as they are


def test_overflowed_pops_roots():
    dirty = DirtyPaths()
    dirty.mark_overflow(b"/r1")
    dirty.mark_overflow(b"/r1")
    dirty.mark_overflow(b"/r2")
    assert len(dirty) == 2
    assert dirty.overflowed() == {b"/r1", b"/r2"}
    assert dirty.overflowed() == set()


def test_marking_10k_events_coalesces():
    dirty = DirtyPaths()
    distinct = [f"/photos/d{i % 20}/img{i}.jpg" for i in range(500)]
    handler = RootHandler(b"/photos", dirty, Ignore.of(NAS_IGNORE), max_backlog=0)

    def storm(offset: int) -> None:
        for i in range(2_500):
            handler.dispatch(FileModifiedEvent(distinct[(i + offset) % len(distinct)]))

    threads = [threading.Thread(target=storm, args=(k * 7,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert 0 < len(dirty) <= len(distinct)
    assert set(dirty.pending()) == {os.fsencode(p) for p in distinct}


def test_handler_filters_event_kinds():
    dirty = DirtyPaths()
    h = RootHandler(b"/r", dirty, Ignore.of(["@eaDir"]), max_backlog=0)
    h.dispatch(FileOpenedEvent("/r/a.jpg"))
    h.dispatch(FileClosedNoWriteEvent("/r/a.jpg"))  # our own reads must not feed back
    h.dispatch(DirModifiedEvent("/r/album"))  # parent folder noise
    h.dispatch(FileCreatedEvent("/r/new/x.jpg", is_synthetic=True))  # contents of a marked folder
    h.dispatch(FileMovedEvent("/r/@eaDir/a.jpg", "/r/a.jpg"))
    h.dispatch(DirCreatedEvent(b"/r/new"))
    assert dirty.pending() == [b"/r/a.jpg", b"/r/new"]
    h.dispatch(FileCreatedEvent("/r"))  # the root itself: reconcile it
    assert dirty.overflowed() == {b"/r"}


def test_backlog_limit_turns_into_overflow():
    dirty = DirtyPaths()
    h = RootHandler(b"/r", dirty, Ignore(), max_backlog=10)
    for i in range(50):
        h.dispatch(FileCreatedEvent(f"/r/{i}.jpg"))
    assert len(dirty.pending()) == 10
    assert dirty.overflowed() == {b"/r"}


# ====================================================================================================================
# Backend choice
# ====================================================================================================================

MOUNTINFO = "\n".join(
    [
        "22 27 0:21 / /proc rw,relatime - proc proc rw",
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        "40 27 0:50 / /mnt/nas rw,relatime shared:5 master:2 - nfs4 server:/export rw,vers=4.2",
        "41 27 0:51 / /mnt/nas2 rw - cifs //srv/share rw",
        "42 40 0:52 / /mnt/nas/local rw - xfs /dev/sdb1 rw",
        "43 27 0:53 / /home/u/remote rw,nosuid - fuse.sshfs u@h:/ rw",
        r"44 27 0:54 / /mnt/my\040photos rw - btrfs /dev/sdc rw",
        "45 27 0:55 / /var/lib/docker/merged rw - overlay overlay rw",
        "46 27 0:56 / /tmp rw - tmpfs tmpfs rw",
        "47 27 0:57 / /mnt/usb rw - ext4 /dev/sdd1 rw",
        "48 47 0:58 / /mnt/usb rw - nfs srv:/x rw",
        "49 27 0:59 / /mnt/smb rw - smb3 //h/s rw",
        "50 27 0:60 / /mnt/ntfs rw - fuseblk /dev/sde1 rw",
        "garbage line",
    ]
)


@pytest.mark.parametrize(
    "path, fstype",
    [
        (b"/srv/photos", "ext4"),
        (b"/mnt/nas", "nfs4"),
        (b"/mnt/nas/2024/a.jpg", "nfs4"),
        (b"/mnt/nas2/x", "cifs"),  # /mnt/nas is not a prefix of /mnt/nas2
        (b"/mnt/nas/local/x", "xfs"),  # longest prefix wins
        (b"/mnt/my photos/x", "btrfs"),  # octal escapes
        (b"/mnt/usb/x", "nfs"),  # mounted over: the later line wins
        (b"/", "ext4"),
    ],
)
def test_mount_fstype_longest_prefix(path, fstype):
    assert mount_fstype(path, MOUNTINFO) == fstype


def test_mount_fstype_of_this_machine(tmp_path):
    assert mount_fstype(broot(tmp_path)) != ""
    assert parse_mountinfo("") == []


@pytest.mark.parametrize(
    "path, kind, reason",
    [
        (b"/mnt/nas/p", "poll", "network filesystem nfs4"),
        (b"/mnt/nas2/p", "poll", "network filesystem cifs"),
        (b"/mnt/smb/p", "poll", "network filesystem smb3"),
        (b"/home/u/remote/p", "poll", "fuse mount fuse.sshfs"),
        (b"/srv/p", "inotify", "local ext4"),
        (b"/mnt/nas/local/p", "inotify", "local xfs"),
        (b"/mnt/my photos", "inotify", "local btrfs"),
        (b"/var/lib/docker/merged/p", "inotify", "local overlay"),
        (b"/tmp/p", "inotify", "local tmpfs"),
        (b"/mnt/ntfs/p", "inotify", "local fuseblk"),
    ],
)
def test_choose_backend_auto(path, kind, reason):
    assert choose_backend(path, "auto", MOUNTINFO) == Backend(kind, reason)


def test_choose_backend_forced_modes():
    assert choose_backend(b"/srv/p", "poll", MOUNTINFO) == Backend("poll", "watch.mode: poll")
    assert choose_backend(b"/mnt/nas/p", "inotify", MOUNTINFO) == Backend("inotify", "watch.mode: inotify")
    assert choose_backend(b"/x", "auto", "") == Backend("inotify", "filesystem type unknown")
    with pytest.raises(ValueError):
        choose_backend(b"/x", "fast", MOUNTINFO)


# ====================================================================================================================
# Fallbacks and supervision
# ====================================================================================================================


def test_inotify_probe(tmp_path):
    inotify_probe(broot(tmp_path))  # one watch, added and dropped
    with pytest.raises(OSError) as info:
        inotify_probe(broot(tmp_path / "missing"))
    assert info.value.errno == errno.ENOENT


class NoWatchesLeft(InotifyObserver):
    def schedule(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


def test_enospc_at_add_root_falls_back_to_polling(tmp_path, make_watchers, caplog):
    root = broot(tmp_path)
    factory = Recording(inotify=NoWatchesLeft)
    w = make_watchers("auto", observer_factory=factory)
    with caplog.at_level(logging.WARNING, logger="dedupd"):
        backend = w.add_root(root)
    assert backend == Backend("poll", "inotify watch limit reached (ENOSPC)")
    assert w.backends() == {root: backend}
    assert [k for k, _ in factory.made] == ["inotify", "poll"]
    assert not factory.made[0][1]._inotify_fd.is_alive()  # the failed observer was cleaned up
    assert any(os.fsdecode(root) in r.getMessage() and "ENOSPC" in r.getMessage() for r in caplog.records)
    assert w.supervise() == {root: "degraded: inotify watch limit reached (ENOSPC)"}

    new = os.path.join(root, b"new.jpg")
    write(new)
    assert wait_for(pending_has(w.dirty, new))


def test_watch_limit_used_up_by_the_tree_falls_back(tmp_path, make_watchers):
    """watchdog skips subfolders it cannot watch in silence; the probe after start notices the limit."""
    root = broot(tmp_path)

    def probe(path: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    w = make_watchers("inotify", inotify_probe=probe)
    assert w.add_root(root) == Backend("poll", "inotify watch limit reached (ENOSPC)")
    new = os.path.join(root, b"new.jpg")
    write(new)
    assert wait_for(pending_has(w.dirty, new))


def test_watch_limit_reached_later_switches_to_polling(tmp_path, make_watchers):
    root = broot(tmp_path)
    limit = {"full": False}

    def probe(path: bytes) -> None:
        if limit["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")

    w = make_watchers("inotify", inotify_probe=probe, probe_interval=0)
    assert w.add_root(root).kind == "inotify"
    assert w.supervise() == {root: "ok"}
    limit["full"] = True
    assert w.supervise() == {root: "degraded: inotify watch limit reached (ENOSPC)"}
    assert w.backends()[root].kind == "poll"
    assert root in w.dirty.overflowed()
    new = os.path.join(root, b"new.jpg")
    write(new)
    assert wait_for(pending_has(w.dirty, new))


class Fragile(InotifyObserver):
    """An inotify observer whose dispatcher thread ends when told to (as a crashed thread would)."""

    def __init__(self) -> None:
        super().__init__()
        self.die = threading.Event()

    def should_keep_running(self) -> bool:
        return not self.die.is_set() and super().should_keep_running()


def test_dead_observer_is_replaced_by_polling(tmp_path, make_watchers):
    root = broot(tmp_path)
    factory = Recording(inotify=Fragile)
    w = make_watchers("inotify", observer_factory=factory)
    assert w.add_root(root).kind == "inotify"
    fragile = factory.made[0][1]
    fragile.die.set()
    write(os.path.join(root, b"wakes-the-dispatcher.jpg"))
    assert wait_for(lambda: not fragile.is_alive())

    health = w.supervise()
    assert health == {root: "degraded: inotify observer thread died"}
    assert w.backends()[root] == Backend("poll", "inotify observer thread died")
    assert root in w.dirty.overflowed()  # events may have been lost: reconcile
    assert not fragile._inotify_fd.is_alive()

    new = os.path.join(root, b"after-restart.jpg")
    write(new)
    assert wait_for(pending_has(w.dirty, new))
    assert w.supervise() == health  # stays degraded, not restarted again
    assert [k for k, _ in factory.made] == ["inotify", "poll"]


def test_deleted_root_is_retried_until_it_returns(tmp_path, make_watchers):
    root = broot(tmp_path / "root")
    os.mkdir(root)
    w = make_watchers("inotify")
    w.RETRY_SECONDS = 0.05
    w.add_root(root)
    os.rmdir(root)
    assert wait_for(lambda: w.supervise()[root].startswith("degraded: "))
    assert "root unavailable" in w.supervise()[root]
    os.mkdir(root)
    # "inotify watch stopped ..." or "root replaced ...", whichever supervise noticed first
    assert wait_for(lambda: "root unavailable" not in w.supervise()[root])
    assert w.supervise()[root].startswith("degraded: ")
    assert w.backends()[root].kind == "poll"
    new = os.path.join(root, b"back.jpg")
    write(new)
    assert wait_for(pending_has(w.dirty, new))


def test_missing_root_at_start_does_not_raise(tmp_path, make_watchers):
    root = broot(tmp_path / "offline")
    w = make_watchers("inotify")
    w.RETRY_SECONDS = 0.05
    w.add_root(root)
    assert w.supervise()[root].startswith("degraded: root unavailable")
    os.mkdir(root)
    assert wait_for(lambda: w.supervise()[root] == "ok")
    assert w.backends()[root].kind == "inotify"
    assert root in w.dirty.overflowed()


def test_overflow_and_rebuild_failure_log_records(tmp_path, make_watchers):
    """watchdog reports these only as log records (with the watch path); they are routed to the root."""
    root, other = broot(tmp_path / "r"), broot(tmp_path / "other")
    os.mkdir(root)
    w = make_watchers("inotify")
    w.add_root(root)
    inotify_log = logging.getLogger("watchdog.observers.inotify")
    inotify_log.warning("Inotify queue overflowed; reconciling recursive watches below %r", other)
    assert w.dirty.overflowed() == set()  # somebody else's watch
    inotify_log.warning("Inotify queue overflowed; reconciling recursive watches below %r", root)
    assert w.dirty.overflowed() == {root}
    try:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")
    except OSError:
        inotify_log.exception("Unable to rebuild recursive inotify watches below %r", root)
    assert w.dirty.overflowed() == {root}
    reason = "inotify watches could not be rebuilt after a queue overflow"
    assert w.supervise() == {root: f"degraded: {reason}"}
    assert w.backends()[root] == Backend("poll", reason)


def test_polled_root_that_vanishes_is_ok_again_when_back(tmp_path, make_watchers):
    root = broot(tmp_path / "share")
    os.mkdir(root)
    w = make_watchers("poll")
    w.RETRY_SECONDS = 0.05
    w.add_root(root)
    os.rmdir(root)  # an unmounted share looks like this to a poller
    assert wait_for(lambda: "root unavailable" in w.supervise()[root])
    os.mkdir(root)
    assert wait_for(lambda: w.supervise()[root] == "ok")
    assert w.backends()[root] == Backend("poll", "watch.mode: poll")
    new = os.path.join(root, b"back.jpg")
    write(new)
    assert wait_for(pending_has(w.dirty, new))


def test_stop_joins_every_observer(tmp_path, make_watchers):
    roots = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        roots.append(broot(tmp_path / name))
    factory = Recording()
    w = make_watchers("inotify", observer_factory=factory)
    w.add_root(roots[0])
    w2 = make_watchers("poll", observer_factory=factory)
    w2.add_root(roots[1])
    w2.add_root(roots[2])
    started = time.monotonic()
    w.stop()
    w2.stop()
    assert time.monotonic() - started < 5
    assert len(factory.made) == 3
    assert not any(obs.is_alive() for _, obs in factory.made)
    assert not any(e.is_alive() for _, obs in factory.made for e in obs.emitters)
    with pytest.raises(RuntimeError):
        w.add_root(roots[0])


def test_stoppable_thread():
    ticks = []
    t = StoppableThread(lambda: ticks.append(1), name="tick", interval=0.01)
    t.start()
    assert wait_for(lambda: len(ticks) >= 3)
    assert t.stop_and_join(2)
    assert t.stopped()

    class Waiter(StoppableThread):
        def run(self) -> None:
            while not self.wait(10):
                pass

    waiter = Waiter(name="waiter")
    waiter.start()
    started = time.monotonic()
    assert waiter.stop_and_join(2)
    assert time.monotonic() - started < 2
