"""The bench/ scripts on their documented usage (`uv run python bench/x.py FOLDER ...`), in fresh interpreters, on
folders as a user has them: camera JPEGs named *.JPG, a RAW folder holding one file LibRaw cannot open."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imagegen
import pytest

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "bench" / name), *args]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO, check=False, timeout=540)


def test_precision_speed_measures_camera_jpegs_named_upper_case(tiny_siglip2, tmp_path):
    for i in range(3):  # what a camera writes: IMG_0001.JPG
        imagegen.photo(i, (320, 240)).save(tmp_path / f"IMG_{i:04d}.JPG", quality=90)

    done = run_script("precision_speed.py", str(tmp_path), "--model", str(tiny_siglip2), "--patches", "64")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["images"] == 3
    assert set(result["img_s"]["64"]) == {"fp32", "bf16", "int8"}


def test_precision_speed_on_a_folder_without_jpegs_says_so_in_one_line(tiny_siglip2, tmp_path):
    done = run_script("precision_speed.py", str(tmp_path), "--model", str(tiny_siglip2))

    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "no JPEG" in done.stderr, done.stderr


def test_raw_samples_reports_a_raw_file_libraw_cannot_open_in_its_row(tmp_path):
    (tmp_path / "broken.ARW").write_bytes(os.urandom(5000))  # a truncated copy, a renamed file...

    done = run_script("raw_samples.py", str(tmp_path), "--repeat", "1")

    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["files"]
    assert row["file"] == "broken.ARW" and row["decoded"] is False and row["ok"] is False
    assert row["sensor"] is None and row["reason"]


def test_decode_cost_times_the_decode_and_the_proof_on_generated_photos():
    done = run_script("decode_cost.py", "--count", "2", "--size", "320x240", "--repeat", "1")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["files"] == 2 and result["generated"] == "320x240 JPEG q92"
    costs = result["cpu_ms_per_file"]
    assert costs["decode_for_model"] > costs["read_whole_and_hash"] > 0  # hashing is the cheap part


def test_decode_cost_on_a_folder_with_a_file_that_is_no_picture_names_it_in_one_line(tmp_path):
    imagegen.photo(1, (320, 240)).save(tmp_path / "a.jpg", quality=90)
    (tmp_path / "notes.jpg").write_text("not a picture")

    done = run_script("decode_cost.py", "--folder", str(tmp_path), "--repeat", "1")

    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "notes.jpg" in done.stderr, done.stderr


def test_purge_speed_times_every_mode_on_pairs_it_makes():
    done = run_script("purge_speed.py", "--pairs", "3", "--size", "320x240")

    assert done.returncode == 0, done.stderr
    modes = json.loads(done.stdout)["modes"]
    assert {"dry", "delete", "trash"} <= set(modes)
    assert modes["dry"]["summary"].startswith("purge: would act on 3, skipped 0")
    for mode in set(modes) - {"dry"}:
        assert modes[mode]["summary"] == "purge: acted on 3, skipped 0" and modes[mode]["files_s"] > 0


def test_decisions_read_times_reads_with_0_10_and_100_decisions():
    done = run_script("decisions_read.py", "--reads", "3")

    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["ms_per_read_by_decisions"]
    assert set(rows) == {"0", "10", "100"} and all(ms > 0 for ms in rows.values())
