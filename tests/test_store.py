from __future__ import annotations

import numpy as np
import pytest

from dedupd.store import SCHEMA_VERSION, FileRecord, Store, StoreError


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
    with a.writer_lock:
        with pytest.raises(LockBusy, match="held by another dedupd process"):
            b.writer_lock.acquire()
    b.writer_lock.acquire().release()
