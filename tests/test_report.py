from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys

import imagegen
import pytest
from support import PixelEmbedder, b, scan_library
from test_never_last_copy import config, copies, purge, scan

from dedupd import cli, commands
from dedupd.config import load_config
from dedupd.dedup.groups import Group, Member
from dedupd.output.report import build_report, dumps, entry_path, write_report
from dedupd.store import FileRecord, Store


def rec(path: bytes, size=10):
    return FileRecord(path, b"/r", size, 1, 1, hash(path) % 10**9, "c" * 32, 4, 3, "ok")


def test_non_utf8_paths_are_valid_utf8_json_and_round_trip():
    keep, dup = rec(b"/r/caf\xc3\xa9.jpg"), rec(b"/r/bad\xff.jpg", size=7)
    report = build_report([Group(keep, [Member(dup, 0.99)])], 2, "lexi", 0.985, "m")
    data = dumps(report)
    data.decode("utf-8")  # strictly valid UTF-8
    assert b"\\udcff" in data and "café".encode() in data
    loaded = json.loads(data)
    group = loaded["groups"][0]
    assert os.fsencode(group["duplicates"][0]) == b"/r/bad\xff.jpg"
    assert base64.b64decode(group["duplicate_details"][0]["path_b64"]) == b"/r/bad\xff.jpg"
    assert entry_path(group["duplicate_details"][0]) == b"/r/bad\xff.jpg"
    assert "path_b64" not in group["keep_info"]


def test_other_languages_parse_it(tmp_path):
    report = build_report([Group(rec(b"/r/a\xfe.jpg"), [Member(rec(b"/r/b.jpg"), 1.0)])], 2, "lexi", 0.9, "m")
    path = tmp_path / "r.json"
    write_report(report, path)
    node = shutil.which("node")
    if node:
        out = subprocess.run([node, "-e", f"JSON.parse(require('fs').readFileSync('{path}','utf8'))"])
        assert out.returncode == 0
    assert json.loads(path.read_text(encoding="utf-8"))["total_duplicates"] == 1


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "r.json"
    write_report({"groups": []}, path)
    write_report({"groups": [1]}, path)
    assert json.loads(path.read_text()) == {"groups": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_groups_sorted_by_bytes_reclaimable():
    small = Group(rec(b"/r/a"), [Member(rec(b"/r/a2", size=1), 1.0)])
    big = Group(rec(b"/r/z"), [Member(rec(b"/r/z2", size=100), 1.0)])
    report = build_report([small, big], 4, "lexi", 0.9, "m")
    assert [g["keep"] for g in report["groups"]] == ["/r/z", "/r/a"]


def test_every_listed_group_has_duplicates_and_the_counts_agree():
    held_back = Group(rec(b"/r/b"), [], [Member(rec(b"/r/b2"), 0.99, "burst guard")])
    real = Group(rec(b"/r/a"), [Member(rec(b"/r/a2", size=5), 1.0)])
    report = build_report([held_back, real], 4, "lexi", 0.9, "m")
    assert [g["keep"] for g in report["groups"]] == ["/r/a"] and report["duplicate_groups"] == 1
    assert all(g["duplicates"] for g in report["groups"])
    assert [g["keep"] for g in report["similar_groups"]] == ["/r/b"]


def test_purge_hits_the_right_non_utf8_file(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    img = imagegen.photo(1, (160, 120))
    names = [b"caf\xc3\xa9.jpg", b"cafe\xcc\x81.jpg", b"x\xff.jpg"]
    for name in names:
        img.save(os.path.join(b(root), name), quality=90)
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    commands.scan(
        str(root), cfg, None, False, None, echo=lambda s: None, embedder=commands.LazyEmbedder(cfg, PixelEmbedder())
    )
    report = json.loads((root / "dedup_report.json").read_bytes())
    (group,) = report["groups"]
    victims = [entry_path(d) for d in group["duplicate_details"]]
    commands.purge(cfg, str(root / "dedup_report.json"), True, None, echo=lambda s: None, model=PixelEmbedder.model_id)
    left = set(os.listdir(b(root))) - {b"dedup_report.json"}
    assert left == {os.path.basename(entry_path(group["keep_info"]))}
    assert not any(os.path.exists(v) for v in victims)


def test_report_command_reads_the_store_without_embedding(tmp_path):
    from support import make_library

    lib = make_library(tmp_path / "photos")
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    commands.scan(
        str(lib.root), cfg, None, False, None, echo=lambda s: None, embedder=commands.LazyEmbedder(cfg, PixelEmbedder())
    )
    out = tmp_path / "r.json"
    commands.report(cfg, str(out), echo=lambda s: None, model=PixelEmbedder.model_id)
    a = json.loads(out.read_text())
    scanned = json.loads((lib.root / "dedup_report.json").read_text())
    assert [g["keep"] for g in a["groups"]] == [g["keep"] for g in scanned["groups"]]
    lower = load_config(None, {"store": str(tmp_path / "store"), "dedup.threshold": 0.92})
    commands.report(lower, str(out), echo=lambda s: None, model=PixelEmbedder.model_id)
    assert json.loads(out.read_text())["total_duplicates"] >= a["total_duplicates"]
    import pytest

    from dedupd.errors import UsageError

    too_low = load_config(None, {"store": str(tmp_path / "store"), "dedup.threshold": 0.5})
    with pytest.raises(UsageError, match="below the stored pair floor"):
        commands.report(too_low, str(out), echo=lambda s: None, model=PixelEmbedder.model_id)


def test_report_is_readable_by_a_consumer_of_the_old_format(tmp_path):
    """The old tool's consumers did `for g in groups: for d in g['duplicates']: os.remove(d)`."""
    report = build_report([Group(rec(b"/r/a.jpg"), [Member(rec(b"/r/b.jpg"), 0.99)])], 2, "lexi", 0.985, "m")
    old = json.loads(dumps(report))
    code = "import json,sys; r=json.load(sys.stdin); print(sum(len(g['duplicates']) for g in r['groups']))"
    out = subprocess.run([sys.executable, "-c", code], input=dumps(report), capture_output=True)
    assert out.stdout.strip() == b"1" and old["keep_policy"] == "lexi"


def _details(victim: dict) -> dict:
    return {"keep": "/p/a.jpg", "duplicates": [victim["path"]], "duplicate_details": [victim]}


@pytest.mark.parametrize(
    "group, message",
    [
        ({"keep": "/p/a.jpg"}, "group 1: 'duplicates' must be a list of paths, not null (or missing)"),
        ({"keep": "/p/a.jpg", "duplicates": None}, "group 1: 'duplicates' must be a list of paths, not null"),
        ({"keep": "/p/a.jpg", "duplicates": "/p/b.jpg"}, "group 1: 'duplicates' must be a list of paths, not a string"),
        ({"keep": "/p/a.jpg", "duplicates": [None]}, "'duplicates' must be a list of paths, not a list with other"),
        ({"duplicates": ["/p/b.jpg"]}, "group 1: 'keep' must be a path, not null"),
        ({"keep": "/p/a.jpg", "duplicates": [], "duplicate_details": [{}]}, "'duplicate_details' must be an object"),
        # Hand-edited bytes: a path_b64 that is no base64 (not text, bad letters, bad padding), or a path holding a
        # lone surrogate that is no surrogateescape byte; once 'unexpected TypeError / Error / UnicodeEncodeError'.
        (_details({"path": "/p/b.jpg", "path_b64": 5}), "'duplicate_details': 'path_b64' 5 is not base64"),
        (_details({"path": "/p/b.jpg", "path_b64": "!!!x"}), "'duplicate_details': 'path_b64' '!!!x' is not base64"),
        (_details({"path": "/p/b.jpg", "path_b64": "aGVsbG8"}), "'path_b64' 'aGVsbG8' is not base64 (Incorrect pad"),
        ({"keep_info": {"path": "/p/a.jpg", "path_b64": 7}, "duplicates": []}, "'keep_info': 'path_b64' 7 is not"),
        ({"keep": "/p/a.jpg", "duplicates": ["/p/\ud800.jpg"]}, "group 1: in 'duplicates': '/p/\\ud800.jpg' cannot"),
        ({"keep": "/p/\ud800.jpg", "duplicates": []}, "group 1: in 'keep': '/p/\\ud800.jpg' cannot be a file name"),
    ],
)
def test_a_malformed_report_is_refused_in_one_line_with_exit_2(tmp_path, capsys, group, message):
    Store.open(tmp_path / "store")
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"groups": [group]}))
    code = cli.main(["purge", "--report", str(path), "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and str(path) in err and err.count("\n") == 1 and "unexpected" not in err


def test_a_report_is_never_written_over_a_file_that_is_not_a_report(tmp_path, capsys):
    """`report --out` a typo away from a photo (scan --report and the daemon's report.path write the same way): the
    only copy of a picture was replaced by JSON. An earlier report is still replaced."""
    lib, cfg, _ = scan_library(tmp_path)
    photo = lib.originals[3]
    picture = photo.read_bytes()

    assert cli.main(["report", "--store", str(cfg.store_path()), "--out", str(photo)]) == 2
    assert photo.read_bytes() == picture
    assert "exists and is not a dedupd report" in capsys.readouterr().err
    earlier = tmp_path / "report.json"
    for _ in range(2):
        assert cli.main(["report", "--store", str(cfg.store_path()), "--out", str(earlier)]) == 0


def test_a_deeply_nested_report_is_refused_in_one_line_with_exit_2(tmp_path, capsys):
    """100000 '[' then as many ']' (valid JSON, but past the parser's recursion): once 'unexpected RecursionError',
    now "R: not a JSON report: nested too deeply", exit 2, as a truncated file gets."""
    Store.open(tmp_path / "store")
    path = tmp_path / "r.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    code = cli.main(["purge", "--report", str(path), "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}: not a JSON report: nested too deeply" in err and err.count("\n") == 1


def test_report_out_naming_a_folder_names_that_folder(tmp_path, capsys):
    """`report --out DIR` with DIR a folder (the daemon's report.path the same): once exit 1 with
    "DIR/.out.e297fbb055e3.tmp: Is a directory", a temp name never given; now exit 2, one line naming DIR."""
    Store.open(tmp_path / "store")
    out = tmp_path / "out"
    out.mkdir()
    code = cli.main(["report", "--store", str(tmp_path / "store"), "--out", str(out)])
    err = capsys.readouterr().err  # after the warning that this empty store holds no vectors yet
    assert code == 2 and err.endswith(f"\ndedupd: error: {out}: a folder, where a file is wanted\n"), err
    assert list(out.iterdir()) == []


def test_a_report_is_never_written_over_another_programs_json(tmp_path, capsys):
    """A Google Takeout album folder holds `metadata.json` (the album's title and description). `report --out` there
    replaced it: any file starting with "{" passed for an earlier report. An earlier report is what purge reads as
    one now: an object with a `groups` list."""
    lib, cfg, _ = scan_library(tmp_path)
    album = lib.root / "metadata.json"
    album.write_text('{\n  "title": "Holiday 2019",\n  "description": "the only copy of this text"\n}\n')
    before = album.read_bytes()

    assert cli.main(["report", "--store", str(cfg.store_path()), "--out", str(album)]) == 2
    assert album.read_bytes() == before
    assert "exists and is not a dedupd report" in capsys.readouterr().err


def _three_copies(tmp_path):
    """a/x.jpg (the keeper by lexi) and its byte copies b/x.jpg and c/x.jpg, scanned; the report is at report.json."""
    root = tmp_path / "t"
    keep, b_copy = copies(root, 2901)
    c_copy = root / "c" / "x.jpg"
    c_copy.parent.mkdir(parents=True)
    shutil.copy2(keep, c_copy)
    cfg = config(tmp_path)
    out = tmp_path / "report.json"
    return cfg, out, scan(cfg, root, report=out), (keep, b_copy, c_copy)


def test_purge_honours_a_path_struck_from_duplicates(tmp_path):
    """The user takes c/x.jpg out of `duplicates` (the field the report documents as the files to remove): the purge
    read `duplicate_details` instead and deleted it anyway."""
    cfg, out, report, (keep, b_copy, c_copy) = _three_copies(tmp_path)
    [group] = report["groups"]
    assert group["duplicates"] == [str(b_copy), str(c_copy)]
    group["duplicates"] = [str(b_copy)]
    out.write_text(json.dumps(report))

    rc, lines = purge(cfg, report=out)

    assert rc == 0 and not b_copy.exists() and c_copy.exists() and keep.exists(), lines


def test_purge_keeps_the_keeper_the_user_wrote_into_the_report(tmp_path):
    """The user makes b/x.jpg the group's `keep` and moves a/x.jpg into `duplicates`: `keep_info` still named
    a/x.jpg, so the purge deleted b/x.jpg, the file the report now says to keep."""
    cfg, out, report, (keep, b_copy, c_copy) = _three_copies(tmp_path)
    [group] = report["groups"]
    group["keep"], group["duplicates"] = str(b_copy), [str(keep), str(c_copy)]
    out.write_text(json.dumps(report))

    rc, lines = purge(cfg, report=out)

    assert rc == 0 and b_copy.exists() and not keep.exists() and not c_copy.exists(), lines
    assert any(f"deleted {keep} (keeps {b_copy})" in line for line in lines), lines
