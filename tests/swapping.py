"""A decode function that saves other bytes over some files just before it decodes them: the stand-in for a photo
rewritten in place (an editor saving, a sync tool replacing it) after the scan hashed it and before it decoded it,
a moment no test can hit from outside. Passed to dedupd as its decode seam (decode_pool.DecodeFn); a module of its
own, so that forkserver workers can import it by name and Ray can be told to pickle it by value."""

from __future__ import annotations

import os
from typing import Any

from dedupd.ingest.decode_pool import Decoded, Failed, decode_for_model

SWAP_PREFIX = b"swapped"
NEXT = b".next"  # a swapped file gets the bytes of the file beside it named PATH.next (not an image name)
DIES = b"dies"  # a swapped file with this in its name then kills its decode worker, as a C decoder's crash would
GROWS = b"grows"  # a file named grows* is extended past decode's 2 GiB size cap instead (sparse: no disk used)


def decode_swapped(path: bytes, draft_side: int | None, max_pixels: int, spec: Any = None) -> Decoded | Failed:
    """decode_for_model, except that a file named swapped* is first rewritten with the bytes of PATH.next (and a
    swapped*dies* one then ends its process: only ever run it in a decode pool's worker), and one named grows* is
    first grown past the size cap."""
    name = os.path.basename(path)
    if name.startswith(GROWS):
        grow(path, (2 << 30) + 1)
    if name.startswith(SWAP_PREFIX):
        rewrite(path, path + NEXT)
        if DIES in name:
            os._exit(70)
    return decode_for_model(path, draft_side, max_pixels, spec)


def rewrite(path: bytes, source: bytes) -> None:
    """path gets source's bytes in place (same inode) and its old mtime back, as a hostile or careless tool would."""
    st = os.stat(path)
    with open(source, "rb") as new, open(path, "r+b") as old:
        old.write(new.read())
        old.truncate()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def grow(path: bytes, size: int) -> None:
    """path is extended in place to size bytes (zeros appended, as a download still running) with its old mtime."""
    st = os.stat(path)
    os.truncate(path, size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
