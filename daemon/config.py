"""Configuration: YAML validated by pydantic, every error naming its key; CLI flags override the file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from dedupd.dedup.policy import DEFAULT_FORMATS, POLICIES, as_list
from dedupd.errors import ConfigError
from dedupd.model.settings import MAX_THREADS
from dedupd.paths import normalise_root

DEFAULT_MODEL = "google/siglip2-base-patch16-naflex"


def _file_name_text(value: str) -> str:
    """Refuse text that cannot become a file name, here, rather than as a traceback in the command that uses it.

    A YAML escape can write a NUL byte or a lone surrogate ("\\ud800"); os.fsencode turns neither into bytes, and an
    empty path would quietly mean the current folder.
    """
    if not value.strip():
        raise ValueError("must not be empty")
    if "\0" in value:
        raise ValueError(f"{value!r} holds a NUL byte, which no file name can")
    try:
        os.fsencode(value)
    except UnicodeEncodeError as exc:
        raise ValueError(f"{value!r} cannot be a file name ({exc.reason})") from None
    return value


# Every key naming a file, a folder, a glob of names or a model folder.
PathText = Annotated[str, AfterValidator(_file_name_text)]


class _Section(BaseModel):
    # No inf/nan: `poll_interval: .inf` would silently never poll.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 for a number: `threshold: true` would mean 1.0, not what anybody meant.
        if isinstance(value, bool) and info.field_name and cls.model_fields[info.field_name].annotation is not bool:
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value


class ModelConfig(_Section):
    name: PathText = DEFAULT_MODEL
    batch_size: int | None = Field(None, gt=0)
    gpus: int | None = Field(None, ge=0)
    gpu_memory_fraction: float = Field(0.9, gt=0, le=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_patches: int | None = Field(None, gt=0)
    precision: Literal["auto", "float", "int8"] = "auto"
    preset: Literal["default", "fast"] = "default"
    threads: int | None = Field(None, gt=0, le=MAX_THREADS)


class DedupConfig(_Section):
    threshold: float = Field(0.985, gt=0, le=1)
    k: int = Field(10, gt=0)
    pair_floor: float = Field(0.90, gt=0, le=1)
    keep_policy: str | list[str] = "lexi"
    burst_guard: bool = True
    raw_jpeg: Literal["keep", "dedupe"] = "keep"
    format_preference: list[str] = Field(default_factory=lambda: list(DEFAULT_FORMATS))

    @field_validator("keep_policy")
    @classmethod
    def _known_policies(cls, value: str | list[str]) -> str | list[str]:
        names = as_list(value)
        unknown = [n for n in names if n not in POLICIES]
        if unknown or not names:
            raise ValueError(f"must be one of {', '.join(POLICIES)} or a list of them (got {unknown or value!r})")
        return value

    @field_validator("format_preference")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in DEFAULT_FORMATS]
        if unknown:
            raise ValueError(
                f"unknown format {', '.join(map(repr, unknown))}: use names from {', '.join(DEFAULT_FORMATS)}"
            )
        return value

    @property
    def floor(self) -> float:
        """Pairs are stored down to here, so a report at a lower threshold needs no new search."""
        return min(self.threshold, self.pair_floor)


class ScanConfig(_Section):
    ignore: list[PathText] = Field(default_factory=list)
    follow_symlinks: bool = False
    max_pixels: int = Field(150_000_000, gt=0)
    commit_every: int = Field(512, gt=0)
    decode_workers: int | None = Field(None, ge=0)
    sniff: bool = False


class ReportConfig(_Section):
    path: PathText | None = None
    html_dir: PathText | None = None
    min_interval: float = Field(2.0, ge=0)


class PurgeConfig(_Section):
    action: Literal["delete", "trash"] = "delete"
    trash_dir: PathText | None = None
    auto: bool = False


class WatchConfig(_Section):
    mode: Literal["auto", "inotify", "poll"] = "auto"
    poll_interval: float = Field(30.0, gt=0)
    settle_seconds: float = Field(5.0, ge=0)
    rescan_interval: float = Field(21600.0, gt=0)
    max_vanish_fraction: float = Field(0.5, gt=0, le=1)


class ClusterConfig(_Section):
    # None: everything runs here. local | auto | HOST:PORT: the bulk embed runs on that Ray cluster (dedupd.cluster).
    ray_address: str | None = None

    @field_validator("ray_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None or value in ("local", "auto"):
            return value
        host, sep, port = value.rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"must be local, auto or HOST:PORT (got {value!r})")
        return value


class Config(_Section):
    store: PathText | None = None
    roots: list[PathText] = Field(default_factory=list)
    protect: list[PathText] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    model: ModelConfig = Field(default_factory=ModelConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    purge: PurgeConfig = Field(default_factory=PurgeConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @field_validator("store", mode="before")
    @classmethod
    def _store_not_empty(cls, value: Any) -> Any:
        # Before PathText's own check, to say what to write instead.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty (leave it out for the default, the user's data directory)")
        return value

    @field_validator("roots")
    @classmethod
    def _roots_apart(cls, value: list[str]) -> list[str]:
        """Each file under exactly one root: a root listed twice, or inside another, would be watched twice."""
        seen: dict[bytes, str] = {}
        for root in value:
            path = normalise_root(root)
            for other_path, other in seen.items():
                if path == other_path:
                    raise ValueError(f"{root} is listed twice" + (f" (as {other})" if other != root else ""))
                if path.startswith(other_path.rstrip(b"/") + b"/") or other_path.startswith(path.rstrip(b"/") + b"/"):
                    inner, outer = (root, other) if len(path) > len(other_path) else (other, root)
                    raise ValueError(f"{inner} is inside {outer}: list only {outer}")
            seen[path] = root
        return value

    def store_path(self) -> Path:
        if self.store:
            return Path(self.store).expanduser()
        from platformdirs import user_data_dir

        return Path(user_data_dir("dedupd", appauthor=False))


# Every nested section, read off Config so a new one (as `cluster` once was) cannot be left out of the
# `section:`-with-every-key-commented-out rule in _read_yaml.
SECTIONS = tuple(
    name
    for name, field in Config.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, _Section)
)


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML file (or defaults when path is None) and apply dotted overrides like {'dedup.threshold': 0.9}."""
    data = _read_yaml(Path(path)) if path else {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    return validate(data, source=str(path) if path else "command line")


def validate(data: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """The first error as `section.key: what is wrong` in plain words."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    return f"{key}: {_plain(error)}"


def _plain(error: Mapping[str, Any]) -> str:
    ctx = error.get("ctx", {})
    plain = {
        "greater_than": lambda: f"must be > {ctx.get('gt')}",
        "greater_than_equal": lambda: f"must be >= {ctx.get('ge')}",
        "less_than_equal": lambda: f"must be <= {ctx.get('le')}",
        "extra_forbidden": lambda: "unknown key",
        "literal_error": lambda: f"must be one of {ctx.get('expected')}",
        "value_error": lambda: str(ctx.get("error")),
        "finite_number": lambda: "must be a finite number",
    }
    maker = plain.get(error["type"])
    return maker() if maker else error["msg"].lower()


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping.

    PyYAML keeps the last one silently: a second `purge:` section would drop the first one's `action: trash`.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` is meant to be overridden by the keys beside it
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key} is written twice (first on line {first_line[key]})", key_node.start_mark
                )
            first_line[key] = line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    for section in SECTIONS:
        if data.get(section, {}) is None:
            data[section] = {}  # `model:` with every key commented out: the defaults, as if it were left out
        elif not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"{path}: {section}: must be a mapping of keys (like `{section}:` then indented keys)")
    return data


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value
