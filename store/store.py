"""The dedupd store: four LanceDB tables on local disk.

- files:   one row per indexed path (stat, content hash, decoded size, status)
- vectors: one row per (content hash, model id); two models never mix and a model change re-embeds
- pairs:   candidate neighbour pairs (content a < content b, cosine) above a floor, per model
- meta:    schema version and free-form JSON values (model identity, pair floor, root state)

Every write is one LanceDB commit covering a whole batch; callers batch. Writes that could be repeated after a crash
are merge-inserts on a key, so a resumed run never duplicates rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .lock import FileLock, LockBusy
from .own import mark_own
from .schema import (
    DECISIONS,
    META,
    PAIRS,
    SCHEMA_VERSION,
    TABLES,
    VECTORS,
    Decision,
    FileRecord,
    files_from_arrow,
    files_to_arrow,
    path_key,
)

if TYPE_CHECKING:
    from lancedb.query import LanceQueryBuilder

log = logging.getLogger("dedupd")

COMPACT_EVERY_VERSIONS = 50
KEEP_OLD_VERSIONS = timedelta(hours=1)
# Lance's reader keeps many batches in flight: reading 1M x 768 peaked 200 MB above the process at 2048 rows a batch,
# 750 MB at 16k and 1.5 GB at 64k, at the same speed (~5 s).
VECTOR_BATCH_ROWS = 2_048
PUSHDOWN_MAX = 1_000  # contents named in Lance's filter: 10 of 1M read in 0.1 s, not 3.4 s for a filtered full scan


MODELS_KEY = "models"  # meta: the model ids the vectors table holds


class StoreError(Exception):
    """The store cannot be used; the message says why and what to do."""


class Store:
    def __init__(self, path: Path, db: Any):  # a lancedb connection (lancedb's types are not exported)
        self.path = path
        self._db = db
        self._tables: dict[str, Any] = {name: _Guarded(_open_table(db, path, name), name, path) for name in TABLES}
        self.writer_lock = FileLock(path / "writer.lock", "store writer")
        self._decisions: tuple[int, list[Decision]] | None = None  # (table version, its decisions)

    # --- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, create: bool = True) -> Store:
        import lancedb

        path = Path(path).expanduser()
        if path.exists() and not path.is_dir():
            # Else mkdir's "File exists", which never says the store is what is wrong.
            raise StoreError(f"the store at {path} is not a folder: a file is in the way; pass another --store")
        if not create and not (path / "meta.lance").exists():
            raise StoreError(f"no dedupd store at {path} (run `dedupd scan FOLDER` first, or pass --store)")
        path.mkdir(parents=True, exist_ok=True)
        # An older store gets the mark too: its thumbs/ must never be another store's keepers. A store on a
        # read-only disk stays readable without it (`dedupd status`, `report`): nothing can be written there anyway.
        with contextlib.suppress(OSError):
            mark_own(path)
        try:
            db = lancedb.connect(path, read_consistency_interval=timedelta(0))
            _create_missing_tables(db)
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot open the store at {path}: {_first_line(exc)}") from exc
        store = cls(path, db)
        store._check_schema()
        return store

    def _check_schema(self) -> None:
        found = self.get_meta("schema_version")
        if found is not None and int(found) > SCHEMA_VERSION:
            raise StoreError(
                f"the store at {self.path} has schema version {found}, newer than this dedupd understands "
                f"({SCHEMA_VERSION}); upgrade dedupd or use another --store"
            )
        self._add_missing_columns()
        if found is None or int(found) < SCHEMA_VERSION:
            self.set_meta("schema_version", SCHEMA_VERSION)

    def _add_missing_columns(self) -> None:
        """Columns added by a newer schema join an older store as nulls (read back as the field's default)."""
        for name, schema in TABLES.items():
            table = self._tables[name]
            missing = [f for f in schema if f.name not in table.schema.names]
            if missing:
                table.add_columns(missing)

    # --- meta ------------------------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        table = self._tables["meta"].to_arrow()
        hits = table.filter(pc.equal(table["key"], key))["value"].to_pylist()
        return json.loads(hits[0]) if hits else default

    def set_meta(self, key: str, value: object) -> None:
        row = pa.table({"key": [key], "value": [json.dumps(value)]}, schema=META)
        self._merge("meta", row)

    # --- files -----------------------------------------------------------------------------------------------

    def files(self, root: bytes | None = None) -> dict[bytes, FileRecord]:
        table = self._tables["files"].to_arrow()
        if root is not None:
            table = table.filter(pc.equal(table["root"], pa.scalar(root, pa.binary())))
        return {record.path: record for record in files_from_arrow(table)}

    def upsert_files(self, records: Iterable[FileRecord]) -> None:
        batch = list({r.path: r for r in records}.values())
        if batch:
            self._merge("files", files_to_arrow(batch))

    def delete_files(self, paths: Iterable[bytes]) -> None:
        keys = sorted({path_key(p) for p in paths})
        for start in range(0, len(keys), 1000):
            chunk = ", ".join(f"'{k}'" for k in keys[start : start + 1000])
            self._tables["files"].delete(f"key IN ({chunk})")

    def delete_files_unless_busy(self, paths: Iterable[bytes]) -> bool:
        """delete_files under the writer lock; False (nothing deleted) when another process holds it."""
        if self.writer_lock.held:
            self.delete_files(paths)
            return True
        try:
            with self.writer_lock.acquire():
                self.delete_files(paths)
        except LockBusy:
            return False
        return True

    # --- vectors ---------------------------------------------------------------------------------------------

    def vector_contents(self, model: str) -> set[str]:
        return set(self._vector_query(model, ["content"]).to_arrow()["content"].to_pylist())

    def vectors(self, model: str, contents: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
        """One model's vectors (all, or those of `contents`) as one float32 matrix; iter_vectors reads them in
        batches without ever holding the whole matrix."""
        batches = list(self.iter_vectors(model, dtype=np.float32, contents=contents))
        if not batches:
            return [], np.zeros((0, 0), dtype=np.float32)
        return [c for names, _ in batches for c in names], np.concatenate([matrix for _, matrix in batches])

    def iter_vectors(
        self,
        model: str,
        batch_rows: int = VECTOR_BATCH_ROWS,
        dtype: type = np.float16,
        contents: Iterable[str] | None = None,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """(contents, (n, dim) matrix of `dtype`) batch by batch, for one model (and only `contents`, if given).
        Only the two columns are read, one batch at a time: memory stays flat however big the table is."""
        wanted = None if contents is None else pa.array(list(dict.fromkeys(contents)), pa.string())
        if wanted is not None and not len(wanted):
            return
        named = None if wanted is None else _named(wanted.to_pylist())
        query = self._vector_query(model, ["content", "vector"], named)
        with query.to_batches(batch_rows) as reader, _damage_named("vectors", self.path):
            for batch in reader:  # a plain (non-vector) query has no implicit row limit
                if wanted is not None and named is None:
                    batch = batch.filter(pc.is_in(batch.column("content"), wanted))
                if batch.num_rows:
                    yield batch.column("content").to_pylist(), _matrix(batch.column("vector"), dtype)

    def vector_facts(self, model: str, contents: Iterable[str] | None = None) -> dict[str, dict]:
        """content -> its facts (width, height, format, capture...) for every content embedded with this model (or
        only those of `contents`)."""
        wanted = None if contents is None else set(contents)
        if wanted is not None and not wanted:
            return {}
        named = None if wanted is None else _named(sorted(wanted))
        data = self._vector_query(model, ["content", "width", "height", "facts"], named).to_arrow().to_pydict()
        rows = zip(data["content"], data["width"], data["height"], data["facts"])
        return {
            c: {**json.loads(f or "{}"), "width": w or 0, "height": h or 0}
            for c, w, h, f in rows
            if wanted is None or c in wanted
        }

    def add_vectors(self, model: str, contents: list[str], matrix: np.ndarray, facts: list[dict] | None = None) -> None:
        if not contents:
            return
        facts = facts or [{}] * len(contents)
        rows = pa.table(
            {
                "key": [f"{model}|{c}" for c in contents],
                "content": contents,
                "model": [model] * len(contents),
                "vector": list(np.asarray(matrix, dtype=np.float32)),
                "width": [f.get("width", 0) for f in facts],
                "height": [f.get("height", 0) for f in facts],
                "facts": [json.dumps({k: v for k, v in f.items() if k not in ("width", "height")}) for f in facts],
            },
            schema=VECTORS,
        )
        self._merge("vectors", rows)
        if model not in self.models():
            self.set_meta(MODELS_KEY, sorted({*self.models(), model}))

    def models(self) -> list[str]:
        """The models whose vectors the store holds (recorded as they are added; read from the vectors of a store
        made before that record existed)."""
        recorded = self.get_meta(MODELS_KEY)
        if recorded is not None:
            return list(recorded)
        column = self._tables["vectors"].search().select(["model"]).to_arrow()["model"]
        return sorted(pc.unique(column).to_pylist())

    # --- pairs -----------------------------------------------------------------------------------------------

    def pairs(self, model: str, min_cosine: float = -1.0) -> list[tuple[str, str, float]]:
        table = self._tables["pairs"].to_arrow()
        table = table.filter(pc.and_(pc.equal(table["model"], model), pc.greater_equal(table["cosine"], min_cosine)))
        data = table.select(["a", "b", "cosine"]).to_pydict()
        return list(zip(data["a"], data["b"], data["cosine"]))

    def add_pairs(self, model: str, pairs: Iterable[tuple[str, str, float]]) -> int:
        unique = {(min(a, b), max(a, b)): float(c) for a, b, c in pairs if a != b}
        if not unique:
            return 0
        rows = pa.table(
            {
                "key": [f"{model}|{a}|{b}" for a, b in unique],
                "model": [model] * len(unique),
                "a": [a for a, _ in unique],
                "b": [b for _, b in unique],
                "cosine": list(unique.values()),
            },
            schema=PAIRS,
        )
        self._merge("pairs", rows)
        return len(unique)

    def pair_count(self, model: str) -> int:
        return int(self._tables["pairs"].count_rows(f"model = '{_quote(model)}'"))

    def clear_pairs(self, model: str) -> None:
        self._tables["pairs"].delete(f"model = '{_quote(model)}'")

    # --- decisions -------------------------------------------------------------------------------------------

    def decisions(self) -> list[Decision]:
        """The user's decisions now, read again only when the table has a new version (the purge gate asks before
        every act, and a read costs a millisecond a fragment: each decision adds one until compaction)."""
        version = self._tables["decisions"].version  # the latest, another process's writes included
        if self._decisions is None or self._decisions[0] != version:
            self._decisions = (version, self._read_decisions())
        return list(self._decisions[1])

    def _read_decisions(self) -> list[Decision]:
        data = self._tables["decisions"].to_arrow().to_pydict()
        rows = zip(data["key"], data["kind"], data["contents"], data["paths"], data["created"])
        out = [
            Decision(k, kind, tuple(json.loads(c)), tuple(json.loads(p or "[]")), t or 0.0) for k, kind, c, p, t in rows
        ]
        return sorted(out, key=lambda d: (d.created, d.key))

    def add_decision(self, kind: str, contents: list[str], paths: list[str]) -> Decision:
        created = time.time()
        key = hashlib.blake2b(f"{kind}|{sorted(contents)}|{created}".encode(), digest_size=4).hexdigest()
        row = {
            "key": [key],
            "kind": [kind],
            "contents": [json.dumps(sorted(set(contents)))],
            "paths": [json.dumps(paths)],
            "created": [created],
        }
        self._merge("decisions", pa.table(row, schema=DECISIONS))
        return Decision(key, kind, tuple(sorted(set(contents))), tuple(paths), created)

    def remove_decision(self, key: str) -> bool:
        if not any(d.key == key for d in self.decisions()):
            return False
        self._tables["decisions"].delete(f"key = '{_quote(key)}'")
        return True

    # --- housekeeping ----------------------------------------------------------------------------------------

    def row_counts(self) -> dict[str, int]:
        return {name: table.count_rows() for name, table in self._tables.items()}

    def versions(self) -> dict[str, int]:
        return {name: table.version for name, table in self._tables.items()}

    def maybe_compact(self, force: bool = False) -> bool:
        """Compact fragments and drop old versions once enough commits have piled up."""
        compacted = False
        for name, table in self._tables.items():
            if force or table.version - int(self.get_meta(f"compacted.{name}", 0)) >= COMPACT_EVERY_VERSIONS:
                table.optimize(cleanup_older_than=KEEP_OLD_VERSIONS)
                self.set_meta(f"compacted.{name}", self._tables[name].version)
                compacted = True
        return compacted

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def _vector_query(self, model: str, columns: list[str], contents: list[str] | None = None) -> LanceQueryBuilder:
        """One model's rows (of `contents` only, if given), only `columns`: the vector column is most of the table's
        bytes (3 GB at 1M x 768), and a whole-table read would hold every column of every row at once."""
        where = f"model = '{_quote(model)}'"
        if contents is not None:
            where += f" AND content IN ({_sql_list(contents)})"
        return self._tables["vectors"].search().where(where).select(columns)

    def _merge(self, name: str, rows: pa.Table) -> None:
        table = self._tables[name]
        table.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(rows)


def _create_missing_tables(db: Any) -> None:
    existing = set(db.list_tables().tables) if hasattr(db.list_tables(), "tables") else set(db.list_tables())
    for name, schema in TABLES.items():
        if name not in existing:
            db.create_table(name, schema=schema, exist_ok=True)


# --- a damaged newest version -------------------------------------------------------------------------------------

DAMAGED_DIR = "damaged"  # unreadable manifests are moved here, never deleted
_OPEN_ERRORS = (OSError, RuntimeError, ValueError)


def _open_table(db: Any, path: Path, name: str) -> Any:
    """Open a table at its newest version; if that version's manifest cannot be read (a crash or a disk fault left it
    empty or garbled), fall back to the previous version: the unreadable manifest is moved to DAMAGED_DIR and the
    table reopens at the last good commit (its data files are untouched, so nothing older is lost). When the table
    does not open without it either, the manifest is put back and the store is refused with one clear line."""
    try:
        return db.open_table(name)
    except _OPEN_ERRORS as exc:
        error = exc
    time.sleep(0.05)
    try:
        return db.open_table(name)  # once more: never move a manifest aside for a passing hiccup
    except _OPEN_ERRORS as exc:
        error = exc
    refuse = (
        f"cannot open the store at {path}: table {name} is damaged ({_first_line(error)}); "
        f"move {path} aside and run `dedupd scan` again to rebuild it"
    )
    manifests = _manifests(path / f"{name}.lance")
    if len(manifests) < 2:
        raise StoreError(refuse) from error
    version, newest = manifests[0]
    try:
        newest.read_bytes()  # an I/O error (permissions, a failing disk) is not ours to repair
    except OSError as exc:
        raise StoreError(refuse) from exc
    aside = path / DAMAGED_DIR / f"{name}.lance-{newest.name}-{time.time_ns()}"
    aside.parent.mkdir(exist_ok=True)
    os.rename(newest, aside)
    try:
        table = db.open_table(name)
        table.count_rows()
    except _OPEN_ERRORS as exc:
        os.rename(aside, newest)  # not that manifest's fault: leave the store exactly as it was
        with contextlib.suppress(OSError):
            aside.parent.rmdir()  # only when empty: manifests set aside earlier stay
        raise StoreError(refuse) from exc
    log.warning(
        "store %s: version %d of table %s is unreadable (%s); reopened at version %d, the last good one "
        "(the damaged manifest is kept as %s)",
        path,
        version,
        name,
        _first_line(error),
        table.version,
        aside,
    )
    return table


def _manifests(table_dir: Path) -> list[tuple[int, Path]]:
    """(version, manifest file), newest first. Lance names manifests N.manifest, or (2**64 - 1 - N) zero-padded to 20
    digits in its v2 naming scheme."""
    found = []
    for manifest in (table_dir / "_versions").glob("*.manifest"):
        if manifest.stem.isdigit():
            number = int(manifest.stem)
            found.append(((2**64 - 1) - number if len(manifest.stem) == 20 else number, manifest))
    return sorted(found, reverse=True)


def _named(contents: list[str]) -> list[str] | None:
    """The contents to name in Lance's filter; None when they are too many to name, and the rows read are filtered
    afterwards."""
    return contents if len(contents) <= PUSHDOWN_MAX else None


def _matrix(column: pa.Array | pa.ChunkedArray, dtype: type = np.float32) -> np.ndarray:
    """A list<float32> column as an (n, dim) matrix: one flat buffer, never a Python list per row."""
    if len(column) == 0:
        return np.zeros((0, 0), dtype=dtype)
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return flat.reshape(len(column), -1)


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _sql_list(values: list[str]) -> str:
    return ", ".join(f"'{_quote(v)}'" for v in values)


# --- a damaged data file -------------------------------------------------------------------------------------------


class _Guarded:
    """A lancedb table (or a query builder made from it) whose calls turn Lance's read errors into one StoreError line
    naming the table: a truncated or garbled data file otherwise surfaces as a RuntimeError quoting Rust sources."""

    def __init__(self, target: Any, table: str, store_path: Path) -> None:
        self._target, self._table, self._store_path = target, table, store_path

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            with _damage_named(self._table, self._store_path):
                result = value(*args, **kwargs)
            # Builders (search().where().select()...) stay guarded; results (Arrow tables, counts) are plain data.
            return _Guarded(result, self._table, self._store_path) if _is_lance(result) else result

        return call


def _is_lance(value: object) -> bool:
    return type(value).__module__.split(".")[0] == "lancedb"


@contextlib.contextmanager
def _damage_named(table: str, store_path: Path) -> Iterator[None]:
    try:
        yield
    except _OPEN_ERRORS as exc:
        if "lance error" not in str(exc).lower():
            raise
        raise StoreError(
            f"the store at {store_path}: table {table} is damaged ({_lance_reason(exc)}); "
            f"move {store_path} aside and run `dedupd scan` again to rebuild it"
        ) from exc


def _lance_reason(exc: BaseException) -> str:
    # Lance appends the Rust source location of the error ("..., /rustc/<hash>/library/.../function.rs:250:5").
    return re.sub(r",?\s*\S+\.rs:\d+:\d+", "", _first_line(exc)).strip()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
