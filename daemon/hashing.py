"""Content hashes: the identity of a file's bytes, used to skip re-embedding exact copies, moves and renames."""

from __future__ import annotations

import hashlib
import os

BLOCK = 1 << 20  # large blocks: hashing is disk-bound and per-call overhead matters on NAS-sized trees


def content_hash(path: bytes | str | os.PathLike) -> str:
    """blake2b-128 of the file's bytes, streamed so memory stays flat whatever the file size."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def fd_hash(fd: int) -> str:
    """Hash what an already-open descriptor points at (purge re-verifies the very inode it will act on)."""
    digest = hashlib.blake2b(digest_size=16)
    offset = 0
    while chunk := os.pread(fd, BLOCK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
