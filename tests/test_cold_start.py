"""No serial cold start: the model loads in the background once something needs embedding, and a scan that needs
nothing embedded never imports torch or transformers. Real tiny SigLIP2 checkpoint, real store, real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support import b, make_library

from dedupd import commands
from dedupd.config import load_config
from dedupd.ingest.indexer import Indexer
from dedupd.ingest.walk import ScanOptions
from dedupd.ingest.walk import scan as walk
from dedupd.model.loader import LazyEmbedder
from dedupd.store import Store

pytestmark = pytest.mark.timeout(600)

# What a scan imported, printed by the real command line entry point in a fresh interpreter.
_SCAN_AND_REPORT_IMPORTS = (
    "import sys; from dedupd.cli import main; rc = main(sys.argv[1:]); "
    "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)"
)


def _scan_in_a_fresh_process(folder: Path, store: Path, model: Path) -> list[str]:
    args = ["scan", str(folder), "--store", str(store), "--model", str(model), "--report", str(folder / "r.json")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _SCAN_AND_REPORT_IMPORTS, *args], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-3:]


def test_a_scan_with_nothing_to_embed_never_imports_torch(tiny_siglip2: Path, tmp_path: Path) -> None:
    lib = make_library(tmp_path / "photos", distinct=3)
    config = load_config(None, {"store": str(tmp_path / "store"), "model.name": str(tiny_siglip2)})
    assert commands.scan(str(lib.root), config, None, False, None, echo=lambda s: None) == 0
    copies = tmp_path / "copies"
    shutil.copytree(lib.root / "camera", copies)  # every content already embedded (or known unreadable)

    # the same tree again: every file unchanged; a tree of exact copies: new paths, known contents
    assert _scan_in_a_fresh_process(lib.root, tmp_path / "store", tiny_siglip2) == ["0", "False", "False"]
    assert _scan_in_a_fresh_process(copies, tmp_path / "store", tiny_siglip2) == ["0", "False", "False"]


class _Recording(LazyEmbedder):
    """Our own loader, recording when the pipeline asks it to start loading and when it first needs the model."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, str]] = []

    def start(self) -> None:
        self.events.append(("start", threading.current_thread().name))
        super().start()

    def get(self):
        self.events.append(("get", threading.current_thread().name))
        return super().get()


def test_the_model_starts_loading_in_the_background_at_the_first_content_to_embed(
    tiny_siglip2: Path, tmp_path: Path
) -> None:
    lib = make_library(tmp_path / "photos", distinct=3)
    config = load_config(None, {"store": str(tmp_path / "store"), "model.name": str(tiny_siglip2)})
    store = Store.open(tmp_path / "store")
    entries = list(walk([b(lib.root)], ScanOptions()))

    lazy = _Recording(config)
    indexer = Indexer(store, config, lazy, threaded=True)
    try:
        result = indexer.index(entries)
    finally:
        indexer.close()
    assert result.counters.embedded >= 3
    # plan asked for the load first (on its own stage thread, not waiting for it); the loading thread did the work
    assert lazy.events[0] == ("start", "stage-plan")
    assert ("get", "stage-decode_images") in lazy.events
    assert lazy.events.index(("start", "stage-plan")) < lazy.events.index(("get", "stage-decode_images"))

    # nothing new: the next run never starts a load
    again = _Recording(config)
    indexer = Indexer(store, config, again, threaded=True)
    try:
        assert indexer.index(entries).counters.embedded == 0
    finally:
        indexer.close()
    assert again.events == []
