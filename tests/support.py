"""Test seams we own: a planted photo library, waits; the deterministic embedder is dedupd.model.pixels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import imagegen
from PIL import Image

from dedupd.config import load_config
from dedupd.model.loader import LazyEmbedder
from dedupd.model.pixels import PixelEmbedder
from dedupd.service.daemon import Service
from dedupd.store import Store


@dataclass
class Library:
    """A photo tree with planted duplicates; the names say what each file is."""

    root: Path
    originals: list[Path] = field(default_factory=list)
    exact: dict[Path, Path] = field(default_factory=dict)  # copy -> original
    resized: dict[Path, Path] = field(default_factory=dict)  # smaller re-encode -> original
    converted: dict[Path, Path] = field(default_factory=dict)  # PNG of a JPEG -> original
    unreadable: list[Path] = field(default_factory=list)

    @property
    def near(self) -> dict[Path, Path]:
        return {**self.resized, **self.converted}


def make_library(root: Path, distinct: int = 4, size: tuple[int, int] = (320, 240)) -> Library:
    lib = Library(root)
    (root / "camera").mkdir(parents=True)
    (root / "backup").mkdir()
    (root / "export").mkdir()
    for seed in range(distinct):
        path = root / "camera" / f"img_{seed:03d}.jpg"
        imagegen.photo(seed, size).save(path, quality=92)
        lib.originals.append(path)
    a, b, c = lib.originals[:3]
    lib.exact[_copy(a, root / "backup" / a.name)] = a
    lib.resized[_resize(b, root / "export" / "small_b.jpg", 0.5)] = b
    png = root / "export" / "c.png"
    Image.open(c).save(png)
    lib.converted[png] = c
    bad = root / "camera" / "broken.jpg"
    bad.write_bytes(a.read_bytes()[:200])
    lib.unreadable.append(bad)
    return lib


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy2(src, dst)
    return dst


def _resize(src: Path, dst: Path, factor: float) -> Path:
    with Image.open(src) as im:
        im.resize((int(im.width * factor), int(im.height * factor)), Image.Resampling.LANCZOS).save(dst, quality=85)
    return dst


def b(path: Path | str) -> bytes:
    return os.fsencode(str(path))


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll until predicate() is truthy (and return it); a bounded wait, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def scan_library(tmp_path: Path):
    """A planted library scanned with the deterministic embedder: (library, config, report)."""
    from dedupd import commands
    from dedupd.config import load_config

    lib = make_library(tmp_path / "photos")
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    commands.scan(
        str(lib.root), cfg, None, False, None, echo=lambda s: None, embedder=commands.LazyEmbedder(cfg, PixelEmbedder())
    )
    return lib, cfg, json.loads((lib.root / "dedup_report.json").read_bytes())


def scan_report(root: Path, tmp_path: Path, **overrides: object):
    """`dedupd scan ROOT` with the deterministic embedder and config overrides ({"dedup.raw_jpeg": "dedupe"}):
    (the report, the config)."""
    from dedupd import commands
    from dedupd.config import load_config

    cfg = load_config(None, {"store": str(tmp_path / "store"), **overrides})
    out = tmp_path / "report.json"
    embedder = commands.LazyEmbedder(cfg, PixelEmbedder())
    commands.scan(str(root), cfg, str(out), False, None, echo=lambda s: None, embedder=embedder)
    return json.loads(out.read_bytes()), cfg


def purge_lines(cfg, report_path=None, inplace: bool = True, trash=None) -> tuple[int, list[str]]:
    """commands.purge with the deterministic embedder's model: (exit code, output lines, the failure summary too)."""
    from dedupd import commands
    from dedupd.errors import PurgeFailures

    lines: list[str] = []
    try:
        rc = commands.purge(cfg, report_path, inplace, trash, echo=lines.append, model=PixelEmbedder.model_id)
    except PurgeFailures as exc:
        lines.append(str(exc))
        rc = exc.exit_code
    return rc, lines


def pairs(report: dict) -> list[tuple[str, str]]:
    """(keep, duplicate) of every group in a report."""
    return [(g["keep"], d) for g in report["groups"] for d in g["duplicates"]]


def purge_process(cfg, report, *extra, fault=None):
    """`dedupd purge --report REPORT --inplace` in a process of its own, killed at `fault` (DEDUPD_FAULT) if given."""
    env = {k: v for k, v in os.environ.items() if k != "DEDUPD_FAULT"} | ({"DEDUPD_FAULT": fault} if fault else {})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dedupd",
            "purge",
            "--store",
            str(cfg.store_path()),
            "--report",
            str(report),
            "--inplace",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


class Running:
    """The daemon (Service) in a thread of this process, with the PixelEmbedder and fast watch settings."""

    def __init__(self, tmp_path, roots, **overrides):
        values = {
            "store": str(tmp_path / "store"),
            "roots": [str(r) for r in roots],
            "watch.settle_seconds": 0.3,
            "watch.poll_interval": 0.2,
            "report.min_interval": 0.0,
            **overrides,
        }
        self.config = load_config(None, values)
        self.embedder = PixelEmbedder()
        self.service = Service(self.config, embedder=LazyEmbedder(self.config, self.embedder))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.exit: int | None = None

    def _run(self):
        self.exit = self.service.run()

    def __enter__(self):
        self.thread.start()
        wait_for(
            lambda: getattr(self.service, "health", None) and self.service.health.phase == "watching",
            what="the first reconcile",
        )
        return self

    def __exit__(self, *exc):
        self.service.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()

    def paths(self):
        return set(Store.open(self.config.store_path()).files())

    def report(self):
        path = self.config.store_path() / "report.json"
        return json.loads(path.read_bytes()) if path.exists() else None
