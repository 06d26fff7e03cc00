"""`dedupd scan` end to end with the deterministic embedder: incremental indexing, grouping, the report."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import pytest
from PIL import Image
from support import PixelEmbedder, b, make_library

from dedupd import commands
from dedupd.config import load_config
from dedupd.errors import UsageError
from dedupd.ingest.decode import decoders
from dedupd.ingest.hashing import content_hash
from dedupd.store import FileRecord, Store


@pytest.fixture
def lib(tmp_path):
    return make_library(tmp_path / "photos")


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, {"store": str(tmp_path / "store")})


def run_scan(cfg, lib, embedder=None, threaded=True, **kw):
    embedder = embedder or PixelEmbedder()
    lines: list[str] = []
    rc = commands.scan(
        str(lib.root),
        cfg,
        kw.get("report"),
        kw.get("inplace", False),
        kw.get("trash"),
        echo=lines.append,
        threaded=threaded,
        embedder=commands.LazyEmbedder(cfg, embedder),
    )
    report_path = kw.get("report") or lib.root / "dedup_report.json"
    return rc, json.loads(open(report_path, "rb").read()), embedder, lines


def groups_by_keep(report):
    return {g["keep"]: set(g["duplicates"]) for g in report["groups"]}


@pytest.mark.parametrize("threaded", [True, False])
def test_planted_duplicates_are_found(cfg, lib, threaded):
    rc, report, _, _ = run_scan(cfg, lib, threaded=threaded)
    assert rc == 0
    found = {(g["keep"], d) for g in report["groups"] for d in g["duplicates"]}
    expected_pairs = {**lib.exact, **lib.near}
    for copy, original in expected_pairs.items():
        assert (str(copy), str(original)) in found or (str(original), str(copy)) in found
    distinct = set(map(str, lib.originals[3:]))
    assert not distinct & {p for pair in found for p in pair}
    assert report["total_duplicates"] == len(expected_pairs)


def test_report_has_the_old_fields_and_extras(cfg, lib):
    _, report, _, _ = run_scan(cfg, lib)
    for key in ("generated_at", "total_images", "duplicate_groups", "total_duplicates", "keep_policy", "groups"):
        assert key in report
    assert report["total_images"] == 8  # every image file, unreadable included
    assert report["keep_policy"] == "lexi"
    assert report["duplicate_groups"] == len([g for g in report["groups"] if g["duplicates"]])
    for group in report["groups"]:
        assert isinstance(group["keep"], str) and all(isinstance(d, str) for d in group["duplicates"])
        assert [d["path"] for d in group["duplicate_details"]] == group["duplicates"]
        assert all(d["cosine"] >= report["threshold"] for d in group["duplicate_details"])
        assert group["bytes_reclaimable"] == sum(d["size"] for d in group["duplicate_details"])
    assert report["threshold"] == 0.985 and report["model"] == PixelEmbedder.model_id
    assert report["bytes_reclaimable"] == sum(g["bytes_reclaimable"] for g in report["groups"])


def test_rescan_with_nothing_changed_embeds_nothing(cfg, lib):
    _, first, embedder, _ = run_scan(cfg, lib)
    assert embedder.images == 6  # 7 contents, one unreadable, exact copy embedded once
    _, second, embedder2, lines = run_scan(cfg, lib)
    assert embedder2.images == 0 and embedder2.calls == 0
    assert "0 hashed" in lines[0]
    assert groups_by_keep(first) == groups_by_keep(second)


def test_exact_copies_moves_and_renames_are_never_embedded_again(cfg, lib):
    run_scan(cfg, lib)
    shutil.copy2(lib.originals[3], lib.root / "backup" / "copy_of_3.jpg")
    os.rename(lib.originals[1], lib.root / "camera" / "renamed_1.jpg")
    _, report, embedder, lines = run_scan(cfg, lib)
    assert embedder.images == 0
    assert "2 hashed" in lines[0] and "1 gone" in lines[0]
    assert str(lib.root / "camera" / "renamed_1.jpg") in json.dumps(report)
    store = Store.open(cfg.store_path())
    assert b(lib.originals[1]) not in store.files()


def test_changed_file_is_rehashed_and_reembedded(cfg, lib):
    run_scan(cfg, lib)
    import imagegen

    imagegen.photo(99, (320, 240)).save(lib.originals[3], quality=90)
    _, _, embedder, lines = run_scan(cfg, lib)
    assert embedder.images == 1 and "1 hashed" in lines[0]


def test_model_change_re_embeds_and_vectors_never_mix(cfg, lib):
    run_scan(cfg, lib)

    class Other(PixelEmbedder):
        model_id = "test/pixels-v2"

    _, _, other, _ = run_scan(cfg, lib, embedder=Other())
    assert other.images == 6
    store = Store.open(cfg.store_path())
    assert len(store.vector_contents("test/pixels-v1")) == len(store.vector_contents("test/pixels-v2")) == 6


def test_commands_without_a_model_read_the_model_the_store_holds(cfg, lib, tmp_path):
    _, scanned, _, _ = run_scan(cfg, lib)  # the scan's model is test/pixels-v1, not the configured default
    assert Store.open(cfg.store_path()).models() == ["test/pixels-v1"]
    commands.report(cfg, str(tmp_path / "r.json"), echo=lambda _: None)
    report = json.loads((tmp_path / "r.json").read_bytes())
    assert report["model"] == "test/pixels-v1" and groups_by_keep(report) == groups_by_keep(scanned)
    lines: list[str] = []
    commands.status(cfg, echo=lines.append)
    assert "embedded: 6" in lines and "model: test/pixels-v1" in lines
    # Named explicitly, the configured model wins: here one the store has no vectors for.
    named = load_config(None, {"store": str(cfg.store_path()), "model.name": "test/none"})
    commands.report(named, str(tmp_path / "n.json"), echo=lambda _: None)
    assert json.loads((tmp_path / "n.json").read_bytes())["model"] == "test/none"


def test_a_store_with_two_models_makes_commands_ask_which(cfg, lib, tmp_path):
    run_scan(cfg, lib)

    class Other(PixelEmbedder):
        model_id = "test/pixels-v2"

    run_scan(cfg, lib, embedder=Other())
    assert Store.open(cfg.store_path()).models() == ["test/pixels-v1", "test/pixels-v2"]
    with pytest.raises(UsageError, match=r"2 models \(test/pixels-v1, test/pixels-v2\); choose one with --model"):
        commands.report(cfg, str(tmp_path / "r.json"), echo=lambda _: None)


def test_unreadable_file_recorded_never_grouped_retried_only_when_changed(cfg, lib):
    _, report, _, _ = run_scan(cfg, lib)
    bad = lib.unreadable[0]
    assert str(bad) not in json.dumps(report["groups"])
    record = Store.open(cfg.store_path()).files()[b(bad)]
    assert record.status == "unreadable" and record.error
    _, _, embedder, _ = run_scan(cfg, lib)
    assert embedder.images == 0  # not retried while unchanged
    shutil.copy2(lib.originals[3], bad)
    _, _, embedder, _ = run_scan(cfg, lib)
    assert Store.open(cfg.store_path()).files()[b(bad)].status == "ok"


def test_a_picture_refused_by_scan_max_pixels_is_read_once_the_limit_is_raised(tmp_path, lib):
    """The limit is part of the verdict: a user who raises it (the refusal names the key) gets the picture embedded
    and grouped on the next scan, though the file itself never changed."""
    big = lib.root / "camera" / "panorama.jpg"
    shutil.copy2(lib.originals[0], lib.root / "export" / "pano_copy.jpg")
    Image.open(lib.originals[0]).resize((640, 480)).save(big, quality=92)
    strict = load_config(None, {"store": str(tmp_path / "store"), "scan.max_pixels": 200_000})
    run_scan(strict, lib)
    assert "decompression bomb" in Store.open(strict.store_path()).files()[b(big)].error
    _, _, embedder, _ = run_scan(strict, lib)
    assert embedder.images == 0  # same limit, same decoders: the verdict stands
    raised = load_config(None, {"store": str(tmp_path / "store"), "scan.max_pixels": 400_000})
    _, report, embedder, _ = run_scan(raised, lib)
    assert embedder.images == 1
    assert Store.open(raised.store_path()).files()[b(big)].status == "ok"
    assert str(big) in json.dumps(report["groups"])


def test_a_verdict_from_a_store_older_than_the_decoder_stamp_is_tried_again(cfg, lib):
    """A store written before verdicts carried their decoders (schema 3) may hold "unsupported format" for a HEIC
    that today's pillow-heif reads: such a verdict is tried once with today's decoders, then stands."""
    run_scan(cfg, lib)
    store = Store.open(cfg.store_path())
    late = lib.root / "camera" / "late.jpg"
    Image.open(lib.originals[3]).resize((300, 225)).save(late, quality=90)
    st = late.stat()
    old = FileRecord.of(b(late), b(lib.root), st, content=content_hash(b(late)), status="unreadable")
    store.upsert_files([replace(old, error="unsupported format")])
    store._tables["files"].drop_columns(["decoder"])  # the table as schema 3 wrote it
    store.set_meta("schema_version", 3)
    _, report, embedder, _ = run_scan(cfg, lib)
    assert embedder.images == 1
    record = Store.open(cfg.store_path()).files()[b(late)]
    assert record.status == "ok" and not record.error
    assert str(late) in json.dumps(report["groups"])
    _, _, embedder, _ = run_scan(cfg, lib)
    assert embedder.images == 0


def test_a_verdict_reached_with_other_decoders_is_tried_again_then_stands(cfg, lib):
    run_scan(cfg, lib)
    bad = b(lib.unreadable[0])
    store = Store.open(cfg.store_path())
    today = store.files()[bad].decoder
    assert today == decoders(cfg.scan.max_pixels) and "pillow " in today and "rawpy " in today
    store.upsert_files([replace(store.files()[bad], decoder=today.replace("pillow ", "pillow 0."))])
    _, _, _, lines = run_scan(cfg, lib)
    assert Store.open(cfg.store_path()).files()[bad].decoder == today  # tried again: the verdict is today's now
    assert any("1 unreadable" in line for line in lines)
    _, _, _, lines = run_scan(cfg, lib)
    assert any("0 unreadable" in line for line in lines)


def test_chained_members_are_similar_not_duplicates(cfg, tmp_path):
    """A~B and B~C above the threshold, A~C below: C must not be purged with A as keeper."""
    import imagegen
    from PIL import Image

    root = tmp_path / "chain"
    root.mkdir()
    base = imagegen.photo(5, (320, 240))
    other = imagegen.photo(6, (320, 240))
    for i, alpha in enumerate((0.0, 0.06, 0.12)):
        Image.blend(base, other, alpha).save(root / f"{chr(97 + i)}.png")
    lib = make_library.__globals__["Library"](root)
    probe = PixelEmbedder()
    v = probe.embed([Image.open(root / n) for n in ("a.png", "b.png", "c.png")])
    ab, bc, ac = float(v[0] @ v[1]), float(v[1] @ v[2]), float(v[0] @ v[2])
    threshold = (max(ac, 0) + min(ab, bc)) / 2
    assert ac < threshold <= min(ab, bc)
    cfg = load_config(None, {"store": str(tmp_path / "store"), "dedup.threshold": threshold})
    _, report, _, _ = run_scan(cfg, lib)
    (group,) = report["groups"]
    assert group["keep"] == str(root / "a.png")
    assert group["duplicates"] == [str(root / "b.png")]
    assert [s["path"] for s in group["similar"]] == [str(root / "c.png")]
    commands.purge(cfg, str(root / "dedup_report.json"), True, None, echo=lambda s: None, model=PixelEmbedder.model_id)
    assert (root / "c.png").exists() and (root / "a.png").exists() and not (root / "b.png").exists()


def test_default_report_path_and_custom_report_path(cfg, lib, tmp_path):
    out = tmp_path / "elsewhere" / "r.json"
    run_scan(cfg, lib, report=str(out))
    assert out.exists() and not (lib.root / "dedup_report.json").exists()


def test_scan_rejects_missing_folder(cfg, tmp_path):
    from dedupd.errors import UsageError

    with pytest.raises(UsageError, match="not a directory"):
        commands.scan(
            str(tmp_path / "nope"), cfg, None, False, None, embedder=commands.LazyEmbedder(cfg, PixelEmbedder())
        )


def test_dry_run_changes_nothing_and_inplace_deletes_exactly_the_duplicates(cfg, lib):
    before = sorted(p for p in lib.root.rglob("*") if p.is_file())
    _, report, _, _ = run_scan(cfg, lib)
    after_dry = sorted(p for p in lib.root.rglob("*") if p.is_file())
    assert after_dry == sorted(before + [lib.root / "dedup_report.json"])
    listed = {d for g in report["groups"] for d in g["duplicates"]}
    rc, _, _, _ = run_scan(cfg, lib, inplace=True)
    assert rc == 0
    remaining = {str(p) for p in lib.root.rglob("*") if p.is_file()}
    assert not listed & remaining
    assert remaining == {str(p) for p in after_dry} - listed
    assert all(g["keep"] in remaining for g in report["groups"])


def test_trash_moves_duplicates_keeping_relative_paths(cfg, lib, tmp_path):
    trash = tmp_path / "trash"
    _, report, _, _ = run_scan(cfg, lib, inplace=True, trash=str(trash))
    for dup in (d for g in report["groups"] for d in g["duplicates"]):
        rel = os.path.relpath(dup, lib.root)
        assert not os.path.exists(dup) and (trash / rel).is_file()
