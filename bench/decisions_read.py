"""What the purge gate's look at the user's decisions costs before every act (Store.decisions, LanceDB opened with
read_consistency_interval 0): milliseconds a read with 0, 10 and 100 decisions, each added as its own write (one
fragment each, as `dedupd decide` and undo add them).

usage: uv run python bench/decisions_read.py [--reads 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import emit

from dedupd.store import Store


def ms_per_read(store: Store, reads: int) -> float:
    store.decisions()
    start = time.perf_counter()
    for _ in range(reads):
        store.decisions()
    return round(1000 * (time.perf_counter() - start) / reads, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="dedupd-decisions-bench-") as tmp:
        store = Store.open(Path(tmp) / "store")
        for count in (0, 10, 100):
            while len(store.decisions()) < count:
                store.add_decision("keep-all", [f"{len(store.decisions()):032x}", "f" * 32], ["a.jpg", "b.jpg"])
            rows[str(count)] = ms_per_read(store, args.reads)
    emit("decisions_read", {"reads": args.reads, "ms_per_read_by_decisions": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
