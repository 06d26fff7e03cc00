"""Which backend watches a root: inotify on local filesystems, polling where inotify cannot see other machines'
changes (network and VM shares), read from /proc/self/mountinfo."""

from __future__ import annotations

import os
from dataclasses import dataclass

# ====================================================================================================================
# Backend choice from /proc/self/mountinfo
# ====================================================================================================================


@dataclass(frozen=True)
class Backend:
    kind: str  # "inotify" | "poll"
    reason: str


# Filesystems where inotify does not see changes made by other machines (or the host, for VM shares).
REMOTE_FSTYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smb2",
        "smbfs",
        "ncpfs",
        "9p",
        "virtiofs",
        "vboxsf",
        "vmhgfs",
        "ceph",
        "cephfs",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "davfs",
        "afs",
        "openafs",
        "coda",
        "ocfs2",
        "gfs2",
        "orangefs",
        "pvfs2",
        "panfs",
        "moosefs",
        "lizardfs",
        "shfs",
        "sshfs",
        "rclone",
        "s3fs",
        "gcsfuse",
        "objectivefs",
        "juicefs",
        "fuse",
    }
)


def _unescape_mount(field: str) -> bytes:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    raw = os.fsencode(field)
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def parse_mountinfo(text: str) -> list[tuple[bytes, str]]:
    """(mount point, fstype) for each line of /proc/self/mountinfo, in file order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mounts.append((_unescape_mount(fields[4]), fields[sep + 1]))
        except (ValueError, IndexError):
            continue
    return mounts


def _read_mountinfo() -> str:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return ""


def mount_fstype(path: bytes, mountinfo: str | None = None) -> str:
    """The fstype of the mount holding ``path`` (the longest mount point prefixing it); "" if unknown.

    ``path`` should already be absolute and resolved (roots are realpaths); it is not touched on disk.
    """
    text = _read_mountinfo() if mountinfo is None else mountinfo
    path = os.path.normpath(path)
    best, best_len = "", -1
    for point, fstype in parse_mountinfo(text):
        point = os.path.normpath(point) if point else point
        inside = path.startswith(b"/") if point == b"/" else path == point or path.startswith(point + b"/")
        # ">=": a later line with the same mount point is mounted over the earlier one.
        if inside and len(point) >= best_len:
            best, best_len = fstype, len(point)
    return best


def _remote_kind(fstype: str) -> str | None:
    """ "network filesystem" / "fuse mount" for filesystems inotify cannot watch completely, else None."""
    if fstype.startswith("fuse."):
        return "fuse mount"  # sshfs, rclone, s3fs, mergerfs, gvfsd-fuse ...: changes behind FUSE go unseen
    if fstype == "fuse":
        return "fuse mount"
    if fstype in REMOTE_FSTYPES:
        return "network filesystem"
    return None  # fuseblk (ntfs-3g, exfat on a local disk) is local: every change goes through this kernel


def choose_backend(root: bytes, mode: str, mountinfo: str | None = None) -> Backend:
    """mode "poll" / "inotify" forces; "auto" polls network and FUSE filesystems and uses inotify elsewhere."""
    if mode == "poll":
        return Backend("poll", "watch.mode: poll")
    if mode == "inotify":
        return Backend("inotify", "watch.mode: inotify")
    if mode != "auto":
        raise ValueError(f"watch mode must be auto, inotify or poll, not {mode!r}")
    fstype = mount_fstype(root, mountinfo)
    if not fstype:
        return Backend("inotify", "filesystem type unknown")
    kind = _remote_kind(fstype)
    if kind:
        return Backend("poll", f"{kind} {fstype}")
    return Backend("inotify", f"local {fstype}")
