"""The mark of a folder dedupd writes into itself (the store, a trash, a gallery): nothing in one, nor in a folder
below one, is ever indexed or taken as a keeper, whichever store looks (dedupd.own_folders.OffLimits asks).

It lives in store/ because store/ imports nothing from the rest of dedupd, and the store folder is one of these
folders too: its thumbnail cache must stay out of the index of any other store that scans a tree holding it (the
default store under a scan of ~, or a store kept beside the photos).
"""

from __future__ import annotations

import os

# An empty folder made inside every store, trash and gallery dedupd writes: the walk never enters a folder holding
# it, whichever store scans the tree (a new or second store knows nothing of the first one's trash-dirs.json).
OWN_MARKER = b".dedupd-own-folder"


def marked_own(folder: bytes) -> bool:
    """Whether folder itself holds the mark (not its parents: the caller walks up, caching each folder's answer)."""
    return os.path.lexists(os.path.join(folder, OWN_MARKER))


def mark_own(folder: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> None:
    # A folder, not a file: a trash then holds no extra file that could be taken for something trashed.
    os.makedirs(os.path.join(os.fsencode(folder), OWN_MARKER), exist_ok=True)
