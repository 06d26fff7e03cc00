"""A decode function that kills its process on some files: the stand-in for a file that crashes a C decoder, which
no real file does reliably. Passed to dedupd as its decode seam (decode_pool.DecodeFn); a module of its own, so that
forkserver workers can import it by name and Ray can be told to pickle it by value."""

from __future__ import annotations

import os
from typing import Any

from dedupd.ingest.decode_pool import Decoded, Failed, decode_for_model

CRASH_PREFIX = b"crash"
EXIT_CODE = 70  # not 0: a zero exit could pass for an intended one


def decode_or_die(path: bytes, draft_side: int | None, max_pixels: int, spec: Any = None) -> Decoded | Failed:
    """decode_for_model, except that a file named crash* ends the process at once, as a segfault would."""
    if os.path.basename(path).startswith(CRASH_PREFIX):
        os._exit(EXIT_CODE)
    return decode_for_model(path, draft_side, max_pixels, spec)
