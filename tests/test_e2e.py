"""The README's main job through the real CLI process and the tiny real SigLIP2 checkpoint: scan, report, status,
purge; the old tool's Quick Start as `dedupd scan`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import make_library


def dedupd(*args, env=None, check=True):
    out = subprocess.run(
        [sys.executable, "-m", "dedupd", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=300,
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, tiny_siglip2):
    base = tmp_path_factory.mktemp("e2e")
    lib = make_library(base / "photos")
    store = base / "store"
    first = dedupd("scan", lib.root, "--model", tiny_siglip2, "--store", store, "--batch-size", "4")
    return lib, store, tiny_siglip2, first


def test_scan_writes_the_old_report_at_the_old_default_path(scanned):
    lib, store, model, first = scanned
    report = json.loads((lib.root / "dedup_report.json").read_bytes())
    assert set(report) >= {
        "generated_at",
        "total_images",
        "duplicate_groups",
        "total_duplicates",
        "keep_policy",
        "groups",
    }
    assert report["total_images"] == 8
    exact = {(str(o), str(c)) for c, o in lib.exact.items()}
    found = {tuple(sorted((g["keep"], d))) for g in report["groups"] for d in g["duplicates"]}
    assert {tuple(sorted(p)) for p in exact} <= found
    assert report["model"].startswith(os.path.basename(model) + "@")
    assert "6 embedded" in first.stdout and "1 unreadable" in first.stdout


def test_rescan_embeds_nothing_and_never_loads_the_model(scanned):
    lib, store, model, _ = scanned
    again = dedupd("scan", lib.root, "--model", model, "--store", store)
    assert "0 hashed, 0 embedded" in again.stdout


def test_report_and_status_from_the_store(scanned, tmp_path):
    lib, store, model, _ = scanned
    out = dedupd("report", "--model", model, "--store", store, "--out", "-")
    report = json.loads(out.stdout)
    assert report["total_images"] == 8 and report["groups"]
    status = dedupd("status", "--model", model, "--store", store).stdout
    for key in (
        "files: 8",
        "unique contents: 7",
        "embedded: 6",
        "pending: 0",
        "unreadable: 1 (1 truncated)",
        "groups:",
        "duplicates:",
        "bytes reclaimable:",
        "model:",
        "store:",
        "daemon: not running",
    ):
        assert key in status


def test_purge_dry_run_then_inplace(scanned):
    lib, store, model, _ = scanned
    report = json.loads((lib.root / "dedup_report.json").read_bytes())
    victims = [d for g in report["groups"] for d in g["duplicates"]]
    dry = dedupd("purge", "--report", lib.root / "dedup_report.json", "--store", store)
    assert "dry run" in dry.stdout and all(os.path.exists(v) for v in victims)
    dedupd("purge", "--report", lib.root / "dedup_report.json", "--store", store, "--inplace")
    assert not any(os.path.exists(v) for v in victims)
    assert all(os.path.exists(g["keep"]) for g in report["groups"])


def test_unloadable_model_is_one_line_exit_2(tmp_path):
    lib = make_library(tmp_path / "photos")
    out = dedupd("scan", lib.root, "--model", "google/no-such-model", "--store", tmp_path / "s", check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "google/no-such-model" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    missing = dedupd("scan", lib.root, "--model", tmp_path / "nowhere", "--store", tmp_path / "s", check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
