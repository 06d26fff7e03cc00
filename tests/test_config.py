from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dedupd.config import Config, load_config
from dedupd.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"


def test_example_documents_every_key_with_its_default():
    data = yaml.safe_load(EXAMPLE.read_text())
    assert data == Config().model_dump()


def test_every_key_has_a_comment():
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        is_leaf = line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":")
        if is_leaf:
            assert lines[i - 1].lstrip().startswith("#"), f"no comment above {line.strip()!r}"


@pytest.mark.parametrize(
    "snippet, message",
    [
        ("model:\n  batch_size: 0\n", "model.batch_size: must be > 0"),
        ("dedup:\n  threshold: 1.5\n", "dedup.threshold: must be <= 1"),
        ("dedup:\n  keep_policy: biggest\n", "dedup.keep_policy: must be one of"),
        ("watch:\n  mode: magic\n", "watch.mode: must be one of"),
        ("modle:\n  name: x\n", "modle: unknown key"),
        ("model: [1, 2]\n", "model:"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("model: {name: [unclosed\n", "not valid YAML"),
        ('store: ""\n', "store: must not be empty"),
        ("watch:\n  poll_interval: .inf\n", "watch.poll_interval: must be a finite number"),
        ("dedup:\n  threshold: .nan\n", "dedup.threshold: must be a finite number"),
        ("dedup:\n  threshold: true\n", "dedup.threshold: must be a number, not true"),
        ("model:\n  batch_size: true\n", "model.batch_size: must be a number, not true"),
        ("dedup:\n  format_preference: [jpeg, jpg]\n", "dedup.format_preference: unknown format 'jpg'"),
        ("model: google/siglip2\n", "model: must be a mapping of keys"),
        # Once unbounded: a typo overflowed inside torch.set_num_threads, after a scan had hashed the tree.
        ("model:\n  threads: 99999999999999999999\n", "model.threads: must be <= 4096"),
    ],
)
def test_errors_name_the_key(tmp_path, snippet, message):
    path = tmp_path / "c.yaml"
    path.write_text(snippet)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"store: /srv/caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 15\)"):
        load_config(path)


def test_model_section_with_every_key_commented_out_takes_the_model_flag(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  # name: google/siglip2-base-patch16-naflex\n")
    assert load_config(path, {"model.name": "my/model"}).model.name == "my/model"
    assert load_config(path).model == Config().model


def test_a_model_string_with_the_model_flag_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: google/siglip2\n")
    with pytest.raises(ConfigError, match="model: must be a mapping of keys"):
        load_config(path, {"model.name": "my/model"})


def test_roots_listed_twice_or_nested_are_refused(tmp_path):
    (tmp_path / "photos" / "2024").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "photos")
    photos, inner, link = str(tmp_path / "photos"), str(tmp_path / "photos" / "2024"), str(tmp_path / "link")
    with pytest.raises(ConfigError, match=f"roots: {photos} is listed twice$"):
        load_config(None, {"roots": [photos, photos]})
    with pytest.raises(ConfigError, match=f"roots: {link} is listed twice \\(as {photos}\\)"):
        load_config(None, {"roots": [photos, link]})
    for roots in ([photos, inner], [inner, photos]):
        with pytest.raises(ConfigError, match=f"roots: {inner} is inside {photos}: list only {photos}"):
            load_config(None, {"roots": roots})
    assert load_config(None, {"roots": [photos, str(tmp_path / "photos2")]}).roots[1].endswith("photos2")


def test_cli_flags_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dedup:\n  threshold: 0.9\n  k: 5\n")
    cfg = load_config(path, {"dedup.threshold": 0.95, "dedup.k": None})
    assert cfg.dedup.threshold == 0.95 and cfg.dedup.k == 5


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "none.yaml")


def test_default_store_is_the_user_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert load_config().store_path() == tmp_path / "dedupd"


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("purge:\n  action: trash\n  trash_dir: /srv/trash\nprotect: [/p]\npurge:\n  auto: true\n", "purge", 5),
        ("dedup:\n  threshold: 0.99\n  threshold: 0.9\n", "threshold", 3),
    ],
)
def test_a_key_written_twice_is_refused_not_silently_overridden(tmp_path, text, key, line):
    """A section or key written twice (easy in a long file): PyYAML alone keeps the last one, so a second `purge:`
    would drop the first one's `action: trash`. Refused naming the key, the line and the file."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"(line {line}): {key} is written twice" in str(info.value) and str(path) in str(info.value)


def test_a_yaml_merge_key_may_still_be_overridden(tmp_path):
    """`<<: {...}` then one of its keys: YAML's own way to override, not a key written twice."""
    path = tmp_path / "c.yaml"
    path.write_text("dedup:\n  <<: {k: 3, threshold: 0.9}\n  k: 4\n")
    assert (load_config(path).dedup.k, load_config(path).dedup.threshold) == (4, 0.9)


def test_every_section_with_every_key_commented_out_takes_the_defaults(tmp_path):
    """`cluster:` (or any section) with its keys commented out, as a user trims config.example.yaml: the defaults,
    as if the section were left out; once `cluster:` alone was refused naming a Python class."""
    sections = [name for name, value in Config().model_dump().items() if isinstance(value, dict)]
    path = tmp_path / "c.yaml"
    path.write_text("".join(f"{name}:\n  # key: value\n" for name in sections))
    assert "cluster" in sections and load_config(path) == Config()


PATH_KEYS = {
    "store": "store: {}\n",
    "roots": "roots: [{}]\n",
    "protect": "protect: [{}]\n",
    "model.name": "model:\n  name: {}\n",
    "scan.ignore": "scan:\n  ignore: [{}]\n",
    "report.path": "report:\n  path: {}\n",
    "report.html_dir": "report:\n  html_dir: {}\n",
    "purge.trash_dir": "purge:\n  trash_dir: {}\n",
}


@pytest.mark.parametrize("key", PATH_KEYS)
@pytest.mark.parametrize(
    "value, message",
    [
        ('"/p/\\ud800x"', "cannot be a file name (surrogates not allowed)"),
        ('"/p/a\\0b"', "holds a NUL byte"),
        ('""', "must not be empty"),
    ],
)
def test_a_path_key_no_file_name_can_come_from_is_refused(tmp_path, key, value, message):
    """A YAML escape for a lone surrogate or a NUL byte, or an empty string, in any key naming a path: refused when
    the config is read, naming the key, so `check-config` catches it and no command (the daemon at start, scan,
    report) later dies on os.fsencode with 'unexpected UnicodeEncodeError / ValueError'."""
    path = tmp_path / "c.yaml"
    path.write_text(PATH_KEYS[key].format(value))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"{path}: {key}") and message in text and "\0" not in text and "\n" not in text
