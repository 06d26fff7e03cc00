"""Watch latency: from a new file being complete on disk to its group in the running daemon's report.

Targets (issue): a new exact copy <= settle + 2 s; a new near-duplicate <= settle + 5 s on 2 cores with the tiny model.

The daemon is the real `dedupd run` in a subprocess (inotify watching, decode workers, LanceDB store, report writes)
with the tiny random SigLIP2 checkpoint from tests/model_builders.py. Each trial copies a file in (exact copy) or
writes a resized, re-encoded version of a library photo (near duplicate), takes the time when the file is closed,
and polls report.json until the new path is in a group with its original (keep, duplicates or similar).

Runs:
* `interval0`: watch.settle_seconds default (5 s), report.min_interval 0; --trials exact and near trials alternated,
  each started after the previous one was reported and the daemon was idle again.
* `defaults`: every setting default (report.min_interval 2 s, and ten times the last rewrite's cost): one exact
  copy after a quiet period longer than min_interval, then straight after it is reported one near duplicate.

usage: uv run python bench/watch_latency.py [--trials 3] [--skip-defaults]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, emit

sys.path.insert(0, str(REPO / "tests"))
from model_builders import build_siglip2

from dedupd.config import ReportConfig
from dedupd.photos import photo

LIBRARY = 4
SIZE = (2000, 1500)  # 3 MP library photos: realistic decode, quick to make


class Daemon:
    def __init__(self, tmp: Path, root: Path, model: Path, name: str, **settings):
        self.store = tmp / f"store-{name}"
        config = {"store": str(self.store), "roots": [str(root)], "model": {"name": str(model)}}
        for dotted, value in settings.items():
            section, key = dotted.split(".")
            config.setdefault(section, {})[key] = value
        self.config = tmp / f"config-{name}.yaml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.log = open(tmp / f"daemon-{name}.log", "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dedupd", "run", "--config", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.report_path = self.store / "report.json"

    def status(self) -> dict:
        try:
            return json.loads((self.store / "daemon-status.json").read_text())
        except (OSError, ValueError):
            return {}

    def report(self) -> dict | None:
        try:
            return json.loads(self.report_path.read_bytes())
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout: float = 300) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}; see {self.log.name}")
            if self.status().get("phase") == "watching" and self.report() is not None:
                return time.monotonic() - start
            time.sleep(0.1)
        raise TimeoutError("daemon never became ready")

    def wait_idle(self, timeout: float = 60) -> None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            s = self.status()
            if s.get("phase") == "watching" and s.get("backlog") == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("daemon never went idle")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.log.close()
        return code


def grouped_with(report: dict | None, new: str, original: str) -> str | None:
    """Where the new path sits in the group of its original: keep/duplicates/similar; None if not grouped yet."""
    for g in (report or {}).get("groups", []):
        members = {
            g["keep"]: "keep",
            **{d: "duplicates" for d in g["duplicates"]},
            **{s["path"]: "similar" for s in g.get("similar", [])},
        }
        if new in members and original in members:
            return members[new]
    return None


def wait_grouped(daemon: Daemon, new: Path, original: Path, t0: float, timeout: float = 180) -> tuple[float, str]:
    last = None
    while time.monotonic() - t0 < timeout:
        try:
            stamp = daemon.report_path.stat().st_mtime_ns
        except OSError:
            stamp = None
        if stamp != last:
            last = stamp
            where = grouped_with(daemon.report(), str(new), str(original))
            if where:
                return time.monotonic() - t0, where
        time.sleep(0.02)
    raise TimeoutError(f"{new} never reached the report")


def add_exact(original: Path, dest: Path) -> float:
    shutil.copyfile(original, dest)
    return time.monotonic()


def add_near(original: Path, dest: Path) -> float:
    from PIL import Image

    with Image.open(original) as im:
        small = im.convert("RGB").resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
    small.save(dest, "JPEG", quality=80)  # closed when save returns
    return time.monotonic()


def trial(daemon: Daemon, kind: str, original: Path, dest: Path) -> dict:
    t0 = add_exact(original, dest) if kind == "exact" else add_near(original, dest)
    seconds, where = wait_grouped(daemon, dest, original, t0)
    return {"kind": kind, "latency_s": round(seconds, 2), "as": where}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="exact and near trials each in the interval0 run")
    parser.add_argument("--skip-defaults", action="store_true", help="skip the run with every setting default")
    args = parser.parse_args()
    settle = 5.0
    out: dict = {
        "settle_seconds": settle,
        "model": "tiny random SigLIP2 (tests/model_builders.build_siglip2)",
        "watch_mode": "auto (inotify on this local disk)",
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="dedupd-latency-") as tmp_name:
        tmp = Path(tmp_name)
        model = build_siglip2(tmp / "tiny-siglip2")
        root = tmp / "photos"
        (root / "camera").mkdir(parents=True)
        originals = []
        for i in range(LIBRARY):
            path = root / "camera" / f"IMG_{i:04d}.jpg"
            photo(100 + i, SIZE, sensor_noise=True).save(path, "JPEG", quality=90)
            originals.append(path)
        (root / "incoming").mkdir()

        daemon = Daemon(tmp, root, model, "interval0", **{"report.min_interval": 0})
        try:
            ready = daemon.wait_ready()
            results = []
            for i in range(args.trials * 2):
                kind = "exact" if i % 2 == 0 else "near"
                daemon.wait_idle()
                time.sleep(1.0)
                original = originals[(i // 2) % LIBRARY]
                results.append(trial(daemon, kind, original, root / "incoming" / f"{kind}_{i:02d}.jpg"))
                print(results[-1], file=sys.stderr)
        finally:
            code = daemon.stop()
        out["runs"]["interval0"] = {
            "report.min_interval": 0,
            "ready_s": round(ready, 1),
            "trials": results,
            "exit": code,
            **summary(results, settle),
        }

        if not args.skip_defaults:
            daemon = Daemon(tmp, root, model, "defaults")
            try:
                ready = daemon.wait_ready()
                interval = ReportConfig().min_interval
                quiet = interval + 1.0  # longer than report.min_interval since the start-up report
                daemon.wait_idle()
                time.sleep(quiet)
                results = [trial(daemon, "exact", originals[0], root / "incoming" / "late_exact.jpg")]
                print(results[-1], file=sys.stderr)
                results.append(trial(daemon, "near", originals[1], root / "incoming" / "late_near.jpg"))
                print(results[-1], file=sys.stderr)
            finally:
                code = daemon.stop()
            out["runs"]["defaults"] = {
                "report.min_interval": interval,
                "ready_s": round(ready, 1),
                "quiet_before_s": quiet,
                "trials": results,
                "exit": code,
                "note": "the near duplicate came right after the exact copy's report",
            }
    emit("watch_latency", out)
    return 0


def summary(results: list[dict], settle: float) -> dict:
    out = {}
    for kind, budget in (("exact", 2.0), ("near", 5.0)):
        values = [r["latency_s"] for r in results if r["kind"] == kind]
        if values:
            out[kind] = {
                "max_s": max(values),
                "mean_s": round(sum(values) / len(values), 2),
                "max_over_settle_s": round(max(values) - settle, 2),
                "target_over_settle_s": budget,
                "met": max(values) - settle <= budget,
            }
    return out


if __name__ == "__main__":
    sys.exit(main())
