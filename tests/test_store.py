from __future__ import annotations

import os

import numpy as np
import pytest

from dedupd.store import OWN_MARKER, SCHEMA_VERSION, FileRecord, Store, StoreError


def rec(path: bytes, content="c" * 32, **kw):
    return FileRecord(path, b"/r", kw.pop("size", 1), 2, 3, kw.pop("inode", 4), content, **kw)


def test_paths_round_trip_byte_exactly(tmp_path):
    store = Store.open(tmp_path)
    names = [b"/r/caf\xc3\xa9.jpg", b"/r/cafe\xcc\x81.jpg", b"/r/bad\xff\xfe.jpg", b"/r/new\nline.jpg"]
    store.upsert_files(rec(n) for n in names)
    assert sorted(Store.open(tmp_path).files()) == sorted(names)


def test_upsert_is_keyed_by_path_and_delete_removes(tmp_path):
    store = Store.open(tmp_path)
    store.upsert_files([rec(b"/r/a", size=1), rec(b"/r/b")])
    store.upsert_files([rec(b"/r/a", size=9)])
    files = store.files()
    assert len(files) == 2 and files[b"/r/a"].size == 9
    store.delete_files([b"/r/a"])
    assert list(store.files()) == [b"/r/b"]


def test_vectors_keyed_by_content_and_model_never_duplicate(tmp_path):
    store = Store.open(tmp_path)
    m = np.eye(3, dtype=np.float32)
    store.add_vectors("m1", ["a", "b", "c"], m)
    store.add_vectors("m1", ["a"], m[:1])  # a resumed batch
    store.add_vectors("m2", ["a"], m[1:2])
    contents, matrix = store.vectors("m1")
    assert sorted(contents) == ["a", "b", "c"] and matrix.shape == (3, 3)
    assert store.vector_contents("m2") == {"a"}
    (only,), got = store.vectors("m2", ["a"])
    assert np.allclose(got[0], m[1])


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def two_models(tmp_path):
    """23 vectors of model "m1" written in three commits, and 5 of "it's" (a quote to escape) for the same contents."""
    store = Store.open(tmp_path)
    rng = np.random.default_rng(3)
    written = {f"{i:032x}": row for i, row in enumerate(_unit_rows(rng, 23, 16))}
    names = list(written)
    for part in (names[:10], names[10:11], names[11:]):
        store.add_vectors("m1", part, np.stack([written[c] for c in part]))
    store.add_vectors("it's", names[:5], _unit_rows(rng, 5, 16))
    return store, written


def test_iter_vectors_streams_exactly_one_models_rows_as_float16_batches(two_models):
    store, written = two_models
    batches = list(store.iter_vectors("m1", batch_rows=4))
    assert len(batches) >= 6 and all(0 < len(names) <= 4 for names, _ in batches)
    assert all(m.dtype == np.float16 and m.shape == (len(names), 16) for names, m in batches)
    contents = [c for names, _ in batches for c in names]
    assert sorted(contents) == sorted(written)  # every row once, none of the other model's
    for names, matrix in batches:
        assert np.array_equal(matrix, np.stack([written[c] for c in names]).astype(np.float16))
    assert sum(len(names) for names, _ in store.iter_vectors("it's", batch_rows=2)) == 5
    assert list(store.iter_vectors("none")) == [] and list(store.iter_vectors("m1", contents=[])) == []


@pytest.mark.parametrize("pushdown_max", [1_000, 2])  # contents named in the Lance filter / filtered batch by batch
def test_iter_vectors_and_vectors_read_only_the_named_contents(two_models, monkeypatch, pushdown_max):
    import dedupd.store.store as store_module

    monkeypatch.setattr(store_module, "PUSHDOWN_MAX", pushdown_max)
    store, written = two_models
    wanted = [*list(written)[3:9], "not-there"]
    batches = list(store.iter_vectors("m1", batch_rows=2, dtype=np.float32, contents=wanted))
    assert sorted(c for names, _ in batches for c in names) == sorted(wanted[:-1])
    contents, matrix = store.vectors("m1", wanted)
    assert matrix.dtype == np.float32 and np.array_equal(matrix, np.stack([written[c] for c in contents]))
    assert sorted(store.vectors("it's", wanted)[0]) == wanted[:2]  # it has contents 0-4


def test_pairs_are_unordered_and_filtered_by_cosine(tmp_path):
    store = Store.open(tmp_path)
    store.add_pairs("m", [("b", "a", 0.95), ("a", "b", 0.95), ("a", "c", 0.91), ("x", "x", 1.0)])
    assert sorted(store.pairs("m")) == [("a", "b", pytest.approx(0.95)), ("a", "c", pytest.approx(0.91))]
    assert store.pairs("m", 0.93) == [("a", "b", pytest.approx(0.95))]
    assert store.pairs("other") == []


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    Store.open(tmp_path).set_meta("schema_version", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="newer than this dedupd understands"):
        Store.open(tmp_path)


def test_a_store_folder_carries_the_own_folder_mark_an_older_store_gets_it_on_open(tmp_path):
    """The walk never enters a folder holding OWN_MARKER: without it another store scanning a tree that holds this
    one would index its thumbs/ cache, and a thumbnail could win the keep policy against its original."""
    store = tmp_path / "store"
    Store.open(store)
    assert (store / os.fsdecode(OWN_MARKER)).is_dir()
    (store / os.fsdecode(OWN_MARKER)).rmdir()  # a store made before stores were marked
    Store.open(store, create=False)
    assert (store / os.fsdecode(OWN_MARKER)).is_dir()


def test_missing_store_is_an_error_when_not_creating(tmp_path):
    with pytest.raises(StoreError, match="no dedupd store"):
        Store.open(tmp_path / "none", create=False)


def test_batched_writes_are_one_commit_and_compaction_bounds_versions(tmp_path):
    store = Store.open(tmp_path)
    before = store.versions()["files"]
    store.upsert_files(rec(f"/r/{i}".encode(), inode=i) for i in range(500))
    assert store.versions()["files"] == before + 1
    for i in range(5):
        store.upsert_files([rec(f"/r/x{i}".encode())])
    assert store.maybe_compact(force=True)
    assert len(store.files()) == 505


def test_writer_lock_excludes_a_second_writer(tmp_path):
    from dedupd.store import LockBusy

    a, b = Store.open(tmp_path), Store.open(tmp_path)
    with a.writer_lock, pytest.raises(LockBusy, match="held by another dedupd process"):
        b.writer_lock.acquire()
    b.writer_lock.acquire().release()


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_data_file_is_one_line_naming_the_table_with_exit_2(tmp_path, capsys, damage):
    from dedupd import cli

    store = Store.open(tmp_path / "store")
    store.upsert_files([rec(b"/r/a.jpg"), rec(b"/r/b.jpg", content="d" * 32)])
    (data,) = (tmp_path / "store" / "files.lance" / "data").glob("*.lance")
    raw = bytearray(data.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 4 : len(raw) // 2] = np.random.default_rng(1).bytes(len(raw) // 2 - len(raw) // 4)
    data.write_bytes(bytes(raw))
    assert cli.main(["status", "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert "table files is damaged" in err and "move" in err and "dedupd scan" in err
    assert err.count("\n") == 1 and "unexpected" not in err and ".rs:" not in err
