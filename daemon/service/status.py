"""The daemon's status file: written by the running service, read by `dedupd status` in another process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dedupd.paths import atomic_write

STATUS_FILE = "daemon-status.json"


def write_status(store_path: Path, data: dict[str, Any]) -> None:
    atomic_write(store_path / STATUS_FILE, json.dumps(data, indent=2).encode())


def read_status(store_path: Path) -> dict | None:
    """The running daemon's status, or None when no daemon is running on this store."""
    try:
        data = json.loads((store_path / STATUS_FILE).read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return data
