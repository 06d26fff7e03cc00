"""The CLI adapter: fast help without heavy imports, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import scan_library

from dedupd.cli import build_parser, main

HEAVY = ("torch", "transformers", "faiss", "lancedb", "pyarrow", "PIL", "numpy")


def run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "dedupd", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def test_help_imports_nothing_heavy():
    code = (
        "import sys; from dedupd.cli import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["scan", "report", "purge", "status", "check-config"])
def test_every_command_has_help(command):
    out = run(command, "--help")
    assert out.returncode == 0 and "usage: dedupd" in out.stdout


def test_scan_keeps_the_old_tools_flags_and_defaults():
    args = build_parser().parse_args(["scan", "/x"])
    assert args.folder == "/x" and not args.inplace
    from dedupd.config import Config
    from dedupd.model.settings import default_batch_size

    d = Config()
    assert (
        d.dedup.threshold,
        d.dedup.k,
        d.model.batch_size,
        d.model.name,
        d.model.gpu_memory_fraction,
        d.dedup.keep_policy,
    ) == (0.985, 10, None, "google/siglip2-base-patch16-naflex", 0.9, "lexi")
    assert default_batch_size("cuda:0") == 128  # the old tool's batch on a GPU; the CPU gets a smaller one
    full = build_parser().parse_args(
        [
            "scan",
            "/x",
            "--threshold",
            "0.9",
            "--k",
            "5",
            "--batch-size",
            "8",
            "--model",
            "m",
            "--gpus",
            "2",
            "--gpu-memory-fraction",
            "0.5",
            "--keep-policy",
            "resolution",
            "--inplace",
            "--report",
            "r.json",
        ]
    )
    assert (
        full.threshold,
        full.k,
        full.batch_size,
        full.model,
        full.gpus,
        full.gpu_memory_fraction,
        full.keep_policy,
        full.inplace,
        full.report,
    ) == (0.9, 5, 8, "m", 2, 0.5, "resolution", True, "r.json")


def test_usage_error_exits_2():
    out = run("scan")
    assert out.returncode == 2


def test_bad_config_exits_2_with_one_line_naming_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  batch_size: 0\n")
    out = run("check-config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.strip() == f"dedupd: error: {cfg}: model.batch_size: must be > 0"
    assert "Traceback" not in out.stderr


def test_the_daemon_refuses_at_start_a_path_key_no_file_name_can_come_from(tmp_path):
    """`dedupd run` with `scan.ignore: ["\\ud800x"]` (a lone surrogate): once check-config said ok and the daemon
    died at start with 'unexpected UnicodeEncodeError' (exit 1); now exit 2, one line naming the file and key."""
    (tmp_path / "photos").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f'store: {tmp_path / "s"}\nroots: [{tmp_path / "photos"}]\nscan:\n  ignore: ["\\ud800x"]\n')
    for command in ("check-config", "run"):
        out = run(command, *(["--config"] if command == "run" else []), str(cfg))
        assert out.returncode == 2 and out.stderr.startswith(f"dedupd: error: {cfg}: scan.ignore.0: "), out.stderr
        assert len(out.stderr.splitlines()) == 1


def test_flag_value_is_validated_like_the_file(tmp_path):
    out = run("scan", str(tmp_path), "--batch-size", "0", "--store", str(tmp_path / "s"))
    assert out.returncode == 2 and "model.batch_size: must be > 0" in out.stderr


def test_missing_folder_exits_2(tmp_path):
    out = run("scan", str(tmp_path / "nope"), "--store", str(tmp_path / "s"))
    assert out.returncode == 2 and "not a directory" in out.stderr


def test_no_store_yet_is_a_clear_error(tmp_path):
    out = run("status", "--store", str(tmp_path / "none"))
    assert out.returncode == 2 and "no dedupd store" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("command", ["scan", "status"])
def test_a_store_that_is_a_file_is_exit_2_naming_the_store(tmp_path, command):
    """`--store FILE`: once exit 1 with mkdir's "FILE: File exists", no word of the store; now exit 2 (a store
    error), one line saying the store is not a folder."""
    (tmp_path / "photos").mkdir()
    store = tmp_path / "not-a-folder"
    store.write_text("x")
    out = run(command, *([str(tmp_path / "photos")] if command == "scan" else []), "--store", str(store))
    assert (
        out.returncode == 2
        and out.stderr
        == f"dedupd: error: the store at {store} is not a folder: a file is in the way; pass another --store\n"
    )


def test_debug_env_shows_traceback(tmp_path):
    out = run("status", "--store", str(tmp_path / "none"), env={"DEDUPD_DEBUG": "1"})
    assert out.returncode == 2 and "Traceback" in out.stderr


def test_check_config_ok_on_the_example():
    example = os.path.join(os.path.dirname(__file__), "..", "config.example.yaml")
    assert main(["check-config", example]) == 0


def test_console_script_is_installed():
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dedupd"), "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("dedupd ")


def _victims(report):
    return [Path(d) for g in report["groups"] for d in g["duplicates"]]


@pytest.mark.parametrize("command", ["purge", "scan"])
def test_an_empty_trash_flag_is_a_usage_error_not_a_delete(tmp_path, command, capsys):
    """`--trash "$TRASH"` with TRASH unset in a script: "" was taken for no trash at all, so every duplicate was
    deleted for good where the user asked for them to be moved aside."""
    lib, cfg, report = scan_library(tmp_path)
    store = str(cfg.store_path())
    if command == "purge":
        args = ["purge", "--store", store, "--report", str(lib.root / "dedup_report.json"), "--inplace"]
    else:
        args = ["scan", str(lib.root), "--store", store, "--inplace"]

    rc = main([*args, "--trash", ""])

    assert rc == 2 and all(p.exists() for p in _victims(report))
    assert "--trash: the folder name is empty" in capsys.readouterr().err


@pytest.mark.parametrize("age", ["-1d", "-5", "nan", "nand", "infd"])
def test_trash_empty_refuses_an_age_that_is_not_one(tmp_path, age, capsys):
    """A negative age put the cutoff in the future: files trashed a second ago were removed for good. nan and inf
    were taken too, silently meaning nothing."""
    lib, cfg, report = scan_library(tmp_path)
    trash, store = tmp_path / "trash", str(cfg.store_path())
    report_file = str(lib.root / "dedup_report.json")
    assert main(["purge", "--store", store, "--report", report_file, "--inplace", "--trash", str(trash)]) == 0
    trashed = [p for p in trash.rglob("*") if p.is_file()]

    rc = main(["trash", "empty", "--store", store, f"--older-than={age}"])

    assert rc == 2 and trashed and all(p.exists() for p in trashed)
    assert f"--older-than: cannot read {age!r} as an age" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["trash", "gallery"])
def test_a_trash_or_gallery_folder_that_holds_files_of_yours_is_refused(tmp_path, command, capsys):
    """`--trash ~` (a slip for `--trash ~/.trash`) or `report --format html --out ~/Pictures`: the folder was marked
    as dedupd's own, and everything under it, the whole library, left every index for good."""
    lib, cfg, report = scan_library(tmp_path)
    store = str(cfg.store_path())
    if command == "trash":
        args = ["purge", "--store", store, "--report", str(lib.root / "dedup_report.json"), "--inplace"]
        rc = main([*args, "--trash", str(tmp_path)])
    else:
        rc = main(["report", "--store", store, "--format", "html", "--out", str(lib.root)])

    assert rc == 2 and all(p.exists() for p in _victims(report))
    assert [p for p in tmp_path.rglob(".dedupd-own-folder")] == [tmp_path / "store" / ".dedupd-own-folder"]
    assert "holds files of yours" in capsys.readouterr().err
