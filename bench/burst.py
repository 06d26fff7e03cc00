"""Bursts and churn under the watching daemon: does the store converge to exactly the files on disk, and what does
it cost in memory?

The daemon is the real service in a subprocess (bench/_fake_daemon.py: `dedupd run` with watchers, decode workers,
LanceDB store and reports) with a deterministic fake embedder (an 8x8 thumbnail, dedupd.model.pixels.PixelEmbedder) so
that the model is not the bottleneck: this measures the watching, settling, indexing and store, not inference.

1. burst: --burst small distinct JPEGs are copied as fast as possible into --burst-dirs new folders under the root;
   then we wait until the store holds exactly those paths (and their sizes and mtimes).
2. churn: --churn-seconds of --rate operations per second, each a create (copy in a new file), a rename (within or
   across folders) or a delete of a file created by the churn, 40/30/30; then we wait until the store holds exactly
   the files on disk.

Memory: VmRSS of the daemon and of its children (forkserver, decode workers) sampled every 0.2 s, and the daemon's
VmHWM (kernel's peak RSS) before and after each phase.

usage: uv run python bench/burst.py [--burst 10000] [--burst-dirs 10] [--churn-seconds 60] [--rate 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO, children, emit, rss_kib, tiny_jpeg

from dedupd.store import Store


class Sampler(threading.Thread):
    """Peak RSS of the daemon and of the daemon plus its children, KiB, sampled every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.reset()

    def reset(self) -> None:
        self.peak_daemon = self.peak_total = 0

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                own = rss_kib(self.pid)["VmRSS"]
                total = own + sum(_rss(c) for c in children(self.pid))
            except (OSError, KeyError):
                continue
            self.peak_daemon, self.peak_total = max(self.peak_daemon, own), max(self.peak_total, total)


def _rss(pid: int) -> int:
    try:
        return rss_kib(pid).get("VmRSS", 0)
    except OSError:
        return 0


def on_disk(root: Path) -> dict[bytes, tuple[int, int]]:
    out = {}
    for folder, _, names in os.walk(os.fsencode(root)):
        for name in names:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            out[path] = (st.st_size, st.st_mtime_ns)
    return out


def in_store(store: Path) -> dict[bytes, tuple[int, int]] | None:
    try:
        return {p: (r.size, r.mtime_ns) for p, r in Store.open(store, create=False).files().items()}
    except Exception:  # noqa: BLE001 - the daemon may be mid-write; try again
        return None


def wait_converged(store: Path, root: Path, timeout: float) -> tuple[float, int, int]:
    """Seconds until the store equals the disk (paths, sizes, mtimes), and the last counts seen."""
    start = time.monotonic()
    expected = on_disk(root)
    seen: dict = {}
    while time.monotonic() - start < timeout:
        seen = in_store(store) or {}
        if seen == expected:
            return time.monotonic() - start, len(expected), len(seen)
        time.sleep(0.5)
    return float("inf"), len(expected), len(seen)


def start_daemon(tmp: Path, root: Path) -> tuple[subprocess.Popen, Path, Path]:
    store = tmp / "store"
    config = tmp / "config.yaml"
    config.write_text(json.dumps({"store": str(store), "roots": [str(root)]}))  # every other setting default
    log = tmp / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "_fake_daemon.py"), str(config)],
        stdout=open(log, "w"),  # noqa: SIM115 - the daemon outlives this block; the child keeps the file
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if json.loads((store / "daemon-status.json").read_text()).get("phase") == "watching":
                return proc, store, log
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError("daemon not ready")


def burst(sources: list[Path], root: Path, dirs: int) -> float:
    start = time.monotonic()
    per_dir = -(-len(sources) // dirs)
    for i, src in enumerate(sources):
        folder = root / "burst" / f"b{i // per_dir:02d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True)
        shutil.copyfile(src, folder / src.name)
    return time.monotonic() - start


def churn(sources: list[Path], root: Path, seconds: float, rate: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    folders = [root / "churn" / f"c{i:02d}" for i in range(8)]
    for folder in folders:
        folder.mkdir(parents=True)
    live: list[Path] = []
    counts = {"create": 0, "rename": 0, "delete": 0}
    serial = 0
    start = time.monotonic()
    done = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) - done
        if due <= 0:
            time.sleep(0.002)
            continue
        for _ in range(due):
            serial += 1
            op = rng.random()
            if op < 0.4 or len(live) < 50:
                dest = rng.choice(folders) / f"n{serial:07d}.jpg"
                shutil.copyfile(sources[serial % len(sources)], dest)
                live.append(dest)
                counts["create"] += 1
            elif op < 0.7:
                i = rng.randrange(len(live))
                dest = rng.choice(folders) / f"r{serial:07d}.jpg"
                os.rename(live[i], dest)
                live[i] = dest
                counts["rename"] += 1
            else:
                i = rng.randrange(len(live))
                live[i].unlink()
                live[i] = live[-1]
                live.pop()
                counts["delete"] += 1
        done += due
    elapsed = time.monotonic() - start
    return {
        "ops": done,
        "seconds": round(elapsed, 1),
        "ops_s": round(done / elapsed),
        **counts,
        "live_files": len(live),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--burst-dirs", type=int, default=10)
    parser.add_argument("--churn-seconds", type=float, default=60)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900, help="give up converging after this many seconds")
    args = parser.parse_args()
    out: dict = {
        "embedder": "fake (8x8 thumbnail): the model is not the bottleneck here",
        "settings": "all defaults (watch.settle_seconds 5, inotify), store and root on the local disk",
    }
    with tempfile.TemporaryDirectory(prefix="dedupd-burst-") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "sources"
        src.mkdir()
        sources = []
        for i in range(args.burst):
            path = src / f"s{i:06d}.jpg"
            path.write_bytes(tiny_jpeg(i, (64, 48)))
            sources.append(path)
        root = tmp / "photos"
        root.mkdir()
        proc, store, log = start_daemon(tmp, root)
        sampler = Sampler(proc.pid)
        sampler.start()
        try:
            time.sleep(2)
            base = {
                "daemon_rss_kib": rss_kib(proc.pid)["VmRSS"],
                "total_rss_kib": rss_kib(proc.pid)["VmRSS"] + sum(_rss(c) for c in children(proc.pid)),
            }
            sampler.reset()
            copy_s = burst(sources, root, args.burst_dirs)
            converge_s, expected, seen = wait_converged(store, root, args.timeout)
            out["burst"] = {
                "files": args.burst,
                "dirs": args.burst_dirs,
                "copy_s": round(copy_s, 2),
                "converged_after_copy_s": round(converge_s, 1),
                "expected": expected,
                "in_store": seen,
                "exact": converge_s != float("inf"),
                "baseline": base,
                "peak_daemon_rss_kib": sampler.peak_daemon,
                "peak_total_rss_kib": sampler.peak_total,
                "daemon_vmhwm_kib": rss_kib(proc.pid)["VmHWM"],
            }
            print(json.dumps(out["burst"]), file=sys.stderr)
            if args.churn_seconds > 0:
                sampler.reset()
                stats = churn(sources, root, args.churn_seconds, args.rate)
                converge_s, expected, seen = wait_converged(store, root, args.timeout)
                out["churn"] = {
                    **stats,
                    "converged_after_churn_s": round(converge_s, 1),
                    "expected": expected,
                    "in_store": seen,
                    "exact": converge_s != float("inf"),
                    "peak_daemon_rss_kib": sampler.peak_daemon,
                    "peak_total_rss_kib": sampler.peak_total,
                    "daemon_vmhwm_kib": rss_kib(proc.pid)["VmHWM"],
                }
        finally:
            sampler.stop.set()
            proc.send_signal(signal.SIGTERM)
            out["daemon_exit"] = proc.wait(120)
            text = log.read_text(errors="replace")
            out["daemon_log"] = {
                "overflow_lines": sum("overflow" in line.lower() for line in text.splitlines()),
                "error_lines": sum(" ERROR " in line for line in text.splitlines()),
                "reconciles": sum("reconcil" in line.lower() for line in text.splitlines()),
                "lines": len(text.splitlines()),
            }
            shutil.copyfile(log, "/tmp/dedupd-burst-daemon.log")
    emit("burst", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
