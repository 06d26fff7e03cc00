"""Content hashes: the identity of a file's bytes, used to skip re-embedding exact copies, moves and renames."""

from __future__ import annotations

import errno
import hashlib
import os
import stat

BLOCK = 1 << 20  # large blocks: hashing is disk-bound and per-call overhead matters on NAS-sized trees
DIGEST_SIZE = 16  # bytes: a content hash is 32 hex digits (the gallery's thumbnail names rely on that)


def _digest() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=DIGEST_SIZE)


def content_hash(path: bytes | str | os.PathLike) -> str:
    """blake2b-128 of the file's bytes, streamed so memory stays flat whatever the file size."""
    digest = _digest()
    with open_regular(path, buffering=0) as handle:
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def open_regular(path: bytes | str | os.PathLike, buffering: int = -1):
    """Open a file for reading, refusing at once anything that is not a regular file.

    A FIFO (or a device) swapped in for a photo after the walk saw a regular file would block a plain open() or
    read() forever and hang the whole scan; here it is an OSError like any other unreadable file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), os.fsdecode(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fsdecode(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def fd_hash(fd: int) -> str:
    """Hash what an already-open descriptor points at (purge re-verifies the very inode it will act on)."""
    digest = _digest()
    offset = 0
    while chunk := os.pread(fd, BLOCK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def bytes_hash(data: bytes) -> str:
    """The content hash of bytes already in memory: a decoder names the very bytes its picture came from."""
    digest = _digest()
    digest.update(data)
    return digest.hexdigest()
