"""`dedupd bench` runs end to end with the tiny model and prints the figures; no timing thresholds here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dedupd.bench import (
    REQUIRED_KEYS,
    BenchSettings,
    cross_cosine,
    format_table,
    measure_search,
    run_bench,
    write_camera_jpegs,
)
from dedupd.cli import build_parser, main
from dedupd.photos import photo

pytestmark = pytest.mark.timeout(300)


def dedupd(*args):
    return subprocess.run(
        [sys.executable, "-m", "dedupd", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )


def test_bench_json_has_every_figure(tiny_siglip2):
    out = dedupd("bench", "--images", 2, "--vectors", 1000, "--json", "--model", tiny_siglip2, "--size", "800x600")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, out.stdout
    result = json.loads(lines[0])
    for key in ("decode_img_s", "model_img_s", "end_to_end_img_s", "hash_mb_s", "search_s"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert set(REQUIRED_KEYS) <= result.keys()
    assert result["images"] == 2 and result["device"] == "cpu"
    assert result["naive_img_s"] > 0 and result["speedup_vs_naive"] > 0
    costs = result["cpu_s_per_img"]
    assert set(costs) == {"model", "decode", "hash"} and all(v > 0 for v in costs.values()), costs
    # The ceiling is what the cores allow when model, decode and hash share them: never above model only.
    allowed = result["cpu_cores"] / sum(costs.values())
    assert result["ceiling_img_s"] == pytest.approx(min(result["model_img_s"], allowed), rel=0.01)
    assert result["end_to_end_vs_ceiling"] == pytest.approx(result["end_to_end_img_s"] / result["ceiling_img_s"])


@pytest.mark.parametrize(
    "flag, message",
    [
        (["--workers", "-1"], "--workers must be at least 0"),
        (["--threads", "-1"], "--threads must be at least 1"),
        (["--threads", "99999999999999999999"], "--threads must be at most 4096"),
        (["--max-patches", "0"], "--max-patches must be at least 1"),
        (["--vectors", "-1"], "--vectors must be at least 0"),
        (["--images", "0"], "--images must be at least 1"),
    ],
)
def test_a_number_flag_out_of_range_is_one_line_before_any_work(monkeypatch, capsys, flag, message):
    """`dedupd bench --workers -1` (or --threads, --max-patches, --vectors out of range): exit 2, one line naming
    the flag, before images are generated or a model loaded; once each failed after both, with 'unexpected
    ValidationError / RuntimeError / ValueError' (a four-line pydantic dump for --workers)."""
    monkeypatch.setattr("dedupd.bench.run_bench", lambda *a, **k: pytest.fail("ran with a flag out of range"))
    assert main(["bench", "--no-naive", *flag]) == 2
    assert capsys.readouterr().err == f"dedupd: error: {message}\n"


def test_bench_table_on_a_folder(tiny_siglip2, tmp_path):
    folder = tmp_path / "photos"
    write_camera_jpegs(folder, 3, size=(400, 300))
    settings = BenchSettings(folder=str(folder), images=2, model=str(tiny_siglip2), vectors=0, naive=False, workers=0)
    result = run_bench(settings)
    assert result["images"] == 2 and result["search_s"] is None and "naive_img_s" not in result
    table = format_table(result)
    assert "2 images from" in table and "end to end" in table and "naive" not in table


def test_unknown_random_model_is_a_usage_error():
    out = dedupd("bench", "--images", 1, "--model", "random:nope")
    assert out.returncode == 2 and "unknown random model" in out.stderr


def test_bench_defaults():
    args = build_parser().parse_args(["bench"])
    assert (args.folder, args.images, args.model, args.vectors, args.json) == (None, None, None, 20_000, False)


def test_camera_photo_is_deterministic_with_orientation_tags(tmp_path):
    first, again = photo(3, (64, 48), sensor_noise=True), photo(3, (64, 48), sensor_noise=True)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(photo(3, (64, 48))))  # per-pixel noise, not the tile
    from PIL import Image

    paths = write_camera_jpegs(tmp_path, 4, size=(80, 60))
    orientations = [Image.open(p).getexif().get(0x0112) for p in paths]
    assert orientations == [1, 1, 1, 6]


def test_search_and_cross_cosine_helpers():
    seconds, backend = measure_search(200, 16, 10, 0.9)
    assert seconds > 0 and backend
    assert cross_cosine(np.eye(3, dtype=np.float32)) == 0.0


NO_LANCEDB = """
import sys
sys.modules["lancedb"] = None  # import lancedb now fails, as on a machine without it
from dedupd.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _bench_without_lancedb(*args):
    return subprocess.run(
        [sys.executable, "-c", NO_LANCEDB, "bench", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )


def test_bench_without_store_runs_where_lancedb_is_missing(tiny_siglip2):
    common = ["--images", 3, "--size", "640x480", "--vectors", 500, "--no-naive", "--json", "--model", tiny_siglip2]
    out = _bench_without_lancedb(*common, "--no-store")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["store"] is False and result["end_to_end_embedded"] == 3 and result["end_to_end_img_s"] > 0
    # The same command with the store needs lancedb, so the run above really went without it.
    stored = _bench_without_lancedb(*common)
    assert stored.returncode != 0 and "lancedb" in stored.stderr


def test_bench_loads_the_model_with_the_configured_gpu_memory_fraction():
    from dedupd.bench import embedder_settings, resolve_settings
    from dedupd.config import load_config

    config = load_config(None, {"model.gpu_memory_fraction": 0.5, "model.name": "some/model"})
    resolved = resolve_settings(BenchSettings(), config)
    assert resolved.model == "some/model" and embedder_settings("ref", resolved).gpu_memory_fraction == 0.5
    assert embedder_settings("ref", resolve_settings(BenchSettings(), load_config())).gpu_memory_fraction == 0.9


def test_bench_accepts_the_fast_preset(tiny_siglip2):
    out = dedupd(
        "bench", "--images", 2, "--no-naive", "--vectors", 0, "--json", "--preset", "fast", "--size", "400x300",
        "--model", tiny_siglip2,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["preset"] == "fast" and "+fast+patches64" in result["model_id"] and result["max_patches"] == 64
    assert result["end_to_end_img_s"] > 0 and result["model_img_s"] > 0


@pytest.mark.parametrize("command", [["scan", "/photos"], ["run"], ["bench"]])
def test_preset_flag_sets_model_preset(command):
    from dedupd.cli import _config

    args = build_parser().parse_args([*command, "--preset", "fast"])
    assert _config(args).model.preset == "fast"
    assert _config(build_parser().parse_args(command)).model.preset == "default"
