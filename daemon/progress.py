"""Progress bars on a terminal, silence elsewhere (a log line per N items is the daemon's job, not a bar's)."""

from __future__ import annotations

import sys
from typing import Any


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def bar(desc: str, total: int | None = None, unit: str = "img", enabled: bool | None = None) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return _Silent()
    from tqdm import tqdm

    return tqdm(desc=desc, total=total, unit=unit, dynamic_ncols=True, leave=False)
