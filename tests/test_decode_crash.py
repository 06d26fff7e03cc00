"""A file that kills its decode worker every time (tests/crashing.py stands in for a decoder crash): the pool retries
it once on fresh workers, then records only that file unreadable, and the scan goes on."""

from __future__ import annotations

import json

import imagegen
from crashing import decode_or_die
from support import PixelEmbedder, b, make_library

from dedupd import commands
from dedupd.config import load_config
from dedupd.ingest.decode_pool import DecodeFn, decode_for_model
from dedupd.store import UNREADABLE, Store

DIED = "decoder process died (corrupt or hostile file)"


def scan(lib_root, store, decode: DecodeFn = decode_for_model) -> tuple[int, dict]:
    # Two workers and their window of 16 files: the crash breaks the pool while other files are in flight on it.
    cfg = load_config(None, {"store": str(store), "scan.decode_workers": 2})
    report = store.parent / f"{store.name}.json"
    embedder = commands.LazyEmbedder(cfg, PixelEmbedder())
    rc = commands.scan(
        str(lib_root), cfg, str(report), False, None, echo=lambda s: None, embedder=embedder, decode=decode
    )
    return rc, json.loads(report.read_bytes())


def groups(report: dict) -> set:
    return {(g["keep"], tuple(sorted(g["duplicates"]))) for g in report["groups"]}


def status_of(store) -> dict[str, str]:
    lines: list[str] = []
    commands.status(load_config(None, {"store": str(store)}), echo=lines.append, model=PixelEmbedder.model_id)
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def test_a_file_that_kills_its_decoder_is_the_only_one_blamed(tmp_path):
    lib = make_library(tmp_path / "photos", distinct=12)
    _, before = scan(lib.root, tmp_path / "plain")
    crash = lib.root / "camera" / "crash_50.jpg"  # sorts before the img_* files: they are in flight when it dies
    imagegen.photo(50, (320, 240)).save(crash, quality=92)

    rc, report = scan(lib.root, tmp_path / "store", decode=decode_or_die)

    assert rc == 0
    record = Store.open(tmp_path / "store", create=False).files()[b(crash)]
    assert (record.status, record.error) == (UNREADABLE, DIED)
    status = status_of(tmp_path / "store")
    assert status["pending"] == "0" and status["unreadable"].startswith("2 (") and f"1 {DIED}" in status["unreadable"]
    assert int(status["embedded"]) == int(status["unique contents"]) - 2  # every content but the two unreadable
    assert groups(report) == groups(before)
