"""dedupd.store: the on-disk LanceDB store. Imports nothing from the rest of dedupd."""

from .lock import FileLock, LockBusy
from .own import OWN_MARKER, mark_own, marked_own
from .schema import OK, PENDING, SCHEMA_VERSION, UNREADABLE, Decision, FileRecord, FileStat, path_key
from .store import Store, StoreError

__all__ = [
    "OK",
    "OWN_MARKER",
    "PENDING",
    "Decision",
    "SCHEMA_VERSION",
    "UNREADABLE",
    "FileLock",
    "FileRecord",
    "FileStat",
    "LockBusy",
    "Store",
    "StoreError",
    "mark_own",
    "marked_own",
    "path_key",
]
