"""Moving a file to a name only while that name is free, in one step: a purge, its recovery and undo never move a
file over another one (a file saved at the name meanwhile, or an earlier purge's trashed file, may be the last copy
of its picture).

os.rename() replaces whatever is at the destination, so a check before it leaves a gap for another program. Linux
closes it with renameat2(RENAME_NOREPLACE), which Python does not wrap; where the kernel, the C library or the
filesystem lacks it, a hard link does the same (link() never replaces), at the cost of two names for a moment.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1

# What link() says on a filesystem without hard links (FAT, some SMB and FUSE shares): only then a checked rename.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
# What renameat2 says where the flag is not to be had: a filesystem without it (EINVAL), a kernel without the call.
_NO_NOREPLACE = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP})


def _renameat2() -> Callable[..., int] | None:
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library older than glibc 2.28, or another one without it
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_RENAMEAT2 = _renameat2()


def rename_noreplace(moved: bytes, path: bytes) -> bool:
    """os.rename that never replaces: False, and nothing moved, when `path` is taken. OSError as rename raises it
    (EXDEV across filesystems); errno in _NO_NOREPLACE where this cannot be done in one step."""
    if _RENAMEAT2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", os.fsdecode(moved))
    if _RENAMEAT2(_AT_FDCWD, moved, _AT_FDCWD, path, _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        return False
    raise OSError(code, os.strerror(code), os.fsdecode(moved), None, os.fsdecode(path))


def move_unless_taken(moved: bytes, path: bytes) -> bool:
    """Never over another file: one saved at the victim's name meanwhile stays, and ours waits where it is (False)."""
    try:
        return rename_noreplace(moved, path)
    except OSError as exc:
        if exc.errno not in _NO_NOREPLACE:  # another filesystem (EXDEV), a name too long, a read-only disk...
            raise
    return _link_then_unlink(moved, path)


def _link_then_unlink(moved: bytes, path: bytes) -> bool:
    try:
        os.link(moved, path)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(path):  # no hard links either: the last resort leaves a gap between check and rename
            return False
        os.rename(moved, path)
        return True
    os.unlink(moved)
    return True
