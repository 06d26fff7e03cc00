"""The JSON report: the old tool's fields, plus extras an old consumer won't trip over.

Paths that are not valid UTF-8 are written in Python's surrogateescape convention: each undecodable byte 0xXY is
the JSON escape ``\\udcXY``, so ``os.fsencode(json.load(f)[...])`` gives back the exact bytes. Such entries also
carry ``*_b64`` fields with the raw bytes for consumers in other languages.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dedupd.config import Config
from dedupd.dedup.companions import Companion
from dedupd.dedup.groups import Group, Member
from dedupd.dedup.store_groups import store_groups
from dedupd.errors import UsageError
from dedupd.paths import atomic_write, path_text, text_path
from dedupd.store import FileRecord, Store

FORMAT_VERSION = 1


def build_report(
    groups: Sequence[Group],
    total_images: int,
    keep_policy: Sequence[str] | str,
    threshold: float,
    model: str,
    roots: Sequence[bytes] = (),
) -> dict[str, Any]:
    policy = keep_policy if isinstance(keep_policy, str) else ",".join(keep_policy)
    ordered = sorted(groups, key=lambda g: -g.bytes_reclaimable)
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_images": total_images,
        "duplicate_groups": sum(1 for g in groups if g.duplicates),
        "total_duplicates": sum(len(g.duplicates) for g in groups),
        "keep_policy": policy,
        # Every listed group has duplicates, as an old consumer expects and as duplicate_groups counts; groups whose
        # close members are all held back (burst guard, decisions, chaining) go to similar_groups.
        "groups": [_group(g) for g in ordered if g.duplicates],
        "format_version": FORMAT_VERSION,
        "threshold": threshold,
        "model": model,
        "roots": [path_text(r) for r in roots],
        "bytes_reclaimable": sum(g.bytes_reclaimable for g in groups),
        "similar_groups": [_group(g) for g in ordered if not g.duplicates],
    }


def _group(group: Group) -> dict[str, Any]:
    out = {
        "id": group_id(group),
        "keep": path_text(group.keep.path),
        "duplicates": [path_text(m.file.path) for m in group.duplicates],
        "keep_info": {**_info(group.keep), "companions": _companions(group.keep_companions)},
        "duplicate_details": [_member(m) for m in group.duplicates],
        "similar": [_member(m) for m in group.similar],
        "bytes_reclaimable": group.bytes_reclaimable,
    }
    return out


def group_id(group: Group) -> str:
    """Stable across rescans and renames: the smallest content hash in the group, shortened."""
    contents = [group.keep.content, *(m.file.content for m in group.duplicates + group.similar)]
    return min(contents)[:12]


def _info(record: FileRecord) -> dict[str, Any]:
    info: dict[str, Any] = {
        **_path_fields(record.path),
        "size": record.size,
        "width": record.width,
        "height": record.height,
        "mtime_ns": record.mtime_ns,
        "content": record.content,
        "format": record.format,
        "taken": record.taken,
    }
    return info


def _path_fields(path: bytes) -> dict[str, str]:
    fields = {"path": path_text(path)}
    if not _is_utf8(path):
        fields["path_b64"] = base64.b64encode(path).decode("ascii")
    return fields


def _companions(companions: Sequence[Companion]) -> list[dict[str, Any]]:
    """Sidecars, Takeout metadata and Live Photo videos next to a member (the same path rules as a member's)."""
    out = []
    for companion in companions:
        entry = {**_path_fields(companion.path), "kind": companion.kind}
        if companion.shared:
            entry["shared"] = True  # another photo of that name claims it too; it stays while one of them does
        out.append(entry)
    return out


def _member(member: Member) -> dict[str, Any]:
    out = {**_info(member.file), "cosine": round(member.cosine, 6), "companions": _companions(member.companions)}
    if member.why:
        out["why"] = member.why
    return out


def _is_utf8(path: bytes) -> bool:
    try:
        path.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def entry_path(info: dict[str, Any]) -> bytes:
    """The exact bytes of a report entry's path (b64 when present, else the surrogateescape text).

    ValueError, saying which field, where a hand-edited report gives no bytes: b64 that is not base64, or text with a
    lone surrogate that is no surrogateescape byte ("\\ud800").
    """
    raw = info.get("path_b64")
    if raw is None:
        try:
            return text_path(info["path"])
        except UnicodeEncodeError as exc:
            raise ValueError(f"{info['path']!r} cannot be a file name ({exc.reason})") from None
    try:
        return base64.b64decode(raw, validate=True)
    except (TypeError, ValueError) as exc:  # binascii.Error is a ValueError; so is non-ASCII text
        raise ValueError(f"'path_b64' {raw!r} is not base64 ({exc})") from None


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KiB": for people reading a summary line or a gallery card."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def dumps(report: dict[str, Any]) -> bytes:
    # backslashreplace turns each lone surrogate into the JSON escape \udcXY; all else stays readable UTF-8.
    return (json.dumps(report, ensure_ascii=False, indent=2) + "\n").encode("utf-8", "backslashreplace")


def write_report(report: dict[str, Any], out: str | os.PathLike) -> None:
    """Write atomically: a reader sees the old report or the new one, never half of either."""
    data = dumps(report)
    if str(out) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    _refuse_to_replace(Path(out))
    atomic_write(Path(out), data)


def _refuse_to_replace(out: Path) -> None:
    """A report replaces an earlier report, never another file: `--out` a typo away from a photo, or from another
    program's JSON (a Takeout album's metadata.json), would otherwise put a report where the only copy was. An
    earlier report is what purge reads as one: a JSON object with a `groups` list (load_report)."""
    try:
        data = out.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return  # nothing to lose; a folder fails at the write, named
    except OSError:
        data = b"?"
    if data.strip() and not _is_report(data):
        raise UsageError(f"{out}: exists and is not a dedupd report; refusing to write a report over it")


def _is_report(data: bytes) -> bool:
    try:
        found = json.loads(data)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return isinstance(found, dict) and isinstance(found.get("groups"), list)


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """A report file, checked as far as purge reads it: one line naming what is wrong, never a crash later."""
    try:
        report = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read report: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a JSON report: {exc}") from None
    except RecursionError:
        raise UsageError(f"{path}: not a JSON report: nested too deeply") from None
    if not isinstance(report, dict) or not isinstance(report.get("groups"), list):
        raise UsageError(f"{path}: not a dedupd report (no 'groups' list)")
    threshold = report.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise UsageError(f"{path}: 'threshold' must be a number, not {_json_kind(threshold)}")
    for number, group in enumerate(report["groups"], 1):
        _check_group(f"{path}: group {number}", group)
    return report


def _check_group(where: str, group: object) -> None:
    if not isinstance(group, dict):
        raise UsageError(f"{where}: not an object")
    if "keep_info" in group:
        _check_entries(where, "keep_info", [group["keep_info"]])
    if "keep" in group or "keep_info" not in group:  # `keep` is what purge keeps, where the report has it
        if not isinstance(group.get("keep"), str):
            raise UsageError(f"{where}: 'keep' must be a path, not {_json_kind(group.get('keep'))}")
        _check_path(where, "keep", {"path": group["keep"]})
    duplicates = group.get("duplicates")
    if not isinstance(duplicates, list) or not all(isinstance(d, str) for d in duplicates):
        what = _json_kind(duplicates) if not isinstance(duplicates, list) else "a list with other things in it"
        raise UsageError(f"{where}: 'duplicates' must be a list of paths, not {what}")
    for duplicate in duplicates:
        _check_path(where, "duplicates", {"path": duplicate})
    if "duplicate_details" in group:
        details = group["duplicate_details"]
        if not isinstance(details, list):
            raise UsageError(f"{where}: 'duplicate_details' must be a list, not {_json_kind(details)}")
        _check_entries(where, "duplicate_details", details)


def _check_entries(where: str, key: str, entries: list[object]) -> None:
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise UsageError(f"{where}: each of '{key}' must be an object with a 'path'")
        if not isinstance(entry.get("content", ""), str):
            raise UsageError(f"{where}: a 'content' in '{key}' must be a content hash string")
        _check_path(where, key, entry)


def _check_path(where: str, key: str, entry: dict[str, Any]) -> None:
    """An entry whose path purge could not turn into bytes: refused here, naming it, not a crash in the plan."""
    try:
        entry_path(entry)
    except ValueError as exc:
        raise UsageError(f"{where}: in '{key}': {exc}") from None


def _json_kind(value: object) -> str:
    if value is None:
        return "null (or missing)"
    return {str: "a string", bool: "true/false", int: "a number", float: "a number", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def store_report(store: Store, config: Config, model: str) -> dict[str, Any]:
    """The report over what the store holds for `model`: no embedding, no search above the stored pair floor."""
    groups, files, roots = store_groups(store, config, model)
    return build_report(groups, len(files), config.dedup.keep_policy, config.dedup.threshold, model, roots)
