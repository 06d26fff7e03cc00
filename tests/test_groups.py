from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dedupd.dedup.groups import UnionFind, build_groups
from dedupd.dedup.policy import choose_keeper
from dedupd.dedup.search import VectorIndex, content_id
from dedupd.store import FileRecord


def f(path, content, size=10, mtime=1, inode=None, w=10, h=10, status="ok"):
    return FileRecord(path.encode(), b"/r", size, mtime, 1, inode or hash(path) % 10**9, content, w, h, status)


def test_union_find_components_with_path_halving():
    uf = UnionFind()
    for a, b in [("a", "b"), ("b", "c"), ("x", "y")]:
        uf.union(a, b)
    uf.find("z")
    comps = sorted(sorted(c) for c in uf.components().values())
    assert comps == [["a", "b", "c"], ["x", "y"], ["z"]]


@pytest.mark.parametrize(
    "policy, keeper",
    [
        ("lexi", "/r/a"),
        ("smallest", "/r/b"),
        ("largest", "/r/c"),
        ("newest", "/r/a"),
        ("oldest", "/r/c"),
        ("resolution", "/r/b"),
    ],
)
def test_each_keep_policy(policy, keeper):
    members = [
        f("/r/c", "3", size=30, mtime=1, w=10, h=10),
        f("/r/a", "1", size=20, mtime=3, w=10, h=10),
        f("/r/b", "2", size=10, mtime=2, w=40, h=30),
    ]
    assert choose_keeper(members, policy).path == keeper.encode()


def test_ties_break_by_path_not_scan_order():
    a, b = f("/r/b", "1", size=5), f("/r/a", "2", size=5)
    assert choose_keeper([a, b], "smallest").path == choose_keeper([b, a], "smallest").path == b"/r/a"


def test_exact_copies_group_without_any_pair():
    groups = build_groups([f("/r/a", "1"), f("/r/b", "1"), f("/r/c", "2")], [], 0.9, lambda a, b: 0.0, "lexi")
    (g,) = groups
    assert g.keep.path == b"/r/a" and [m.file.path for m in g.duplicates] == [b"/r/b"]
    assert g.duplicates[0].cosine == 1.0


def test_unreadable_files_are_never_keepers_or_duplicates():
    files = [f("/r/a", "1", status="unreadable"), f("/r/b", "1"), f("/r/c", "1")]
    (g,) = build_groups(files, [], 0.9, lambda a, b: 0.0, "lexi")
    assert g.keep.path == b"/r/b" and [m.file.path for m in g.duplicates] == [b"/r/c"]


def test_chained_members_land_in_similar():
    pairs = [("1", "2", 0.99), ("2", "3", 0.99)]
    cos = {("1", "3"): 0.97, ("1", "2"): 0.99}
    (g,) = build_groups(
        [f("/r/a", "1"), f("/r/b", "2"), f("/r/c", "3")], pairs, 0.98, lambda a, b: cos[(min(a, b), max(a, b))], "lexi"
    )
    assert [m.file.path for m in g.duplicates] == [b"/r/b"]
    assert [m.file.path for m in g.similar] == [b"/r/c"]


def _cosines(table):
    return lambda a, b: table.get((min(a, b), max(a, b)), 0.5)


def test_chain_members_near_one_another_get_a_keeper_of_their_own():
    # a~b, b~c, b~d, c~d and b~e at 0.99; a is far from c, d and e, and e from c and d: a keeps b, c keeps d, and
    # e (near none of the others it could be kept by) stays similar.
    table = {("1", "2"): 0.99, ("2", "3"): 0.99, ("2", "4"): 0.99, ("3", "4"): 0.99, ("2", "5"): 0.99}
    pairs = [(a, b, c) for (a, b), c in table.items()]
    files = [f("/r/a", "1"), f("/r/b", "2"), f("/r/c", "3"), f("/r/d", "4"), f("/r/e", "5")]
    first, second = build_groups(files, pairs, 0.98, _cosines(table), "lexi")
    assert (first.keep.path, [m.file.path for m in first.duplicates]) == (b"/r/a", [b"/r/b"])
    assert [m.file.path for m in first.similar] == [b"/r/e"]
    assert (second.keep.path, [m.file.path for m in second.duplicates]) == (b"/r/c", [b"/r/d"])
    assert second.similar == []
    for group in (first, second):  # every duplicate directly at or above the threshold to its own keeper
        assert all(_cosines(table)(group.keep.content, m.file.content) >= 0.98 for m in group.duplicates)


def test_exact_copies_reached_only_through_a_chain_get_their_keeper():
    table = {("1", "2"): 0.99, ("2", "3"): 0.99, ("1", "3"): 0.9}
    pairs = [(a, b, c) for (a, b), c in table.items() if c >= 0.98]
    files = [f("/r/a", "1"), f("/r/b", "2"), f("/r/c", "3"), f("/r/c2", "3")]
    first, second = build_groups(files, pairs, 0.98, _cosines(table), "lexi")
    assert (second.keep.path, [m.file.path for m in second.duplicates]) == (b"/r/c", [b"/r/c2"])


def test_hard_link_of_keeper_is_not_a_duplicate():
    files = [f("/r/a", "1", inode=7), f("/r/b", "1", inode=7)]
    assert build_groups(files, [], 0.9, lambda a, b: 0.0, "lexi") == []


def test_vector_index_finds_neighbours_above_floor_with_stable_ids():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    near = base[0] + 0.01 * rng.normal(size=16).astype(np.float32)
    near /= np.linalg.norm(near)
    contents = [hashlib.blake2b(bytes([i]), digest_size=16).hexdigest() for i in range(50)] + ["f" * 32]
    index = VectorIndex(16)
    index.add(contents, np.vstack([base, near]))
    index.add(contents[:3], base[:3])  # re-adding is a no-op
    assert len(index) == 51
    pairs = index.neighbours(["f" * 32], near[None], k=5, floor=0.95)
    assert [(a, b) for a, b, _ in pairs] == [("f" * 32, contents[0])]
    # The id is the hash's first 8 bytes as a signed int64: fixed values, so ids never change between runs.
    assert content_id("ab" * 16) == -6076574518398440533
    assert content_id("80" + "0" * 30) == -(2**63) and content_id("00" * 7 + "01" + "ff" * 8) == 1
    index.remove([contents[0]])
    assert index.neighbours(["f" * 32], near[None], k=5, floor=0.95) == []
