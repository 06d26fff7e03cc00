"""Duplicate groups: union-find over near-duplicate pairs plus exact-hash groups, with chaining made safe.

Union-find is transitive, so A~B and B~C put A and C together even when A and C are far apart. Only members whose
own cosine to the kept file reaches the threshold (or exact copies) become `duplicates`; the rest are `similar`,
which purge never touches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from dedupd.store import OK, FileRecord

from .policy import choose_keeper


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def components(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for x in list(self.parent):
            out[self.find(x)].append(x)
        return out


@dataclass
class Member:
    file: FileRecord
    cosine: float


@dataclass
class Group:
    keep: FileRecord
    duplicates: list[Member] = field(default_factory=list)
    similar: list[Member] = field(default_factory=list)

    @property
    def bytes_reclaimable(self) -> int:
        return sum(m.file.size for m in self.duplicates)


Cosine = Callable[[str, str], float]


def build_groups(
    files: Iterable[FileRecord],
    pairs: Iterable[tuple[str, str, float]],
    threshold: float,
    cosine: Cosine,
    policy: Sequence[str] | str,
) -> list[Group]:
    """Groups of files that are exact copies or near-duplicates, keeper chosen by policy, sorted by keeper path."""
    by_content = _by_content(files)
    finder = UnionFind()
    for content in by_content:
        finder.find(content)
    for a, b, cos in pairs:
        if cos >= threshold and a in by_content and b in by_content:
            finder.union(a, b)
    groups = [_group(component, by_content, threshold, cosine, policy) for component in finder.components().values()]
    return sorted((g for g in groups if g is not None), key=lambda g: g.keep.path)


def _by_content(files: Iterable[FileRecord]) -> dict[str, list[FileRecord]]:
    """Only decodable files take part: an unreadable file is never a keeper nor a duplicate."""
    out: dict[str, list[FileRecord]] = defaultdict(list)
    for record in files:
        if record.status == OK and record.content:
            out[record.content].append(record)
    return out


def _group(
    contents: list[str], by_content: dict[str, list[FileRecord]], threshold: float, cosine: Cosine,
    policy: Sequence[str] | str,
) -> Group | None:
    members = [f for c in contents for f in by_content[c]]
    if len(members) < 2:
        return None
    keep = choose_keeper(members, policy)
    group = Group(keep)
    for member in members:
        _place(group, member, threshold, cosine)
    if not group.duplicates and not group.similar:
        return None
    group.duplicates.sort(key=lambda m: m.file.path)
    group.similar.sort(key=lambda m: m.file.path)
    return group


def _place(group: Group, member: FileRecord, threshold: float, cosine: Cosine) -> None:
    keep = group.keep
    if member.path == keep.path or (member.device, member.inode) == (keep.device, keep.inode):
        return  # the keeper itself, or a hard link of it: removing it frees nothing
    cos = 1.0 if member.content == keep.content else cosine(keep.content, member.content)
    (group.duplicates if cos >= threshold else group.similar).append(Member(member, cos))
