"""Duplicate groups: union-find over near-duplicate pairs plus exact-hash groups, with chaining made safe.

Union-find is transitive, so A~B and B~C put A and C together even when A and C are far apart. Only members whose
own cosine to the kept file reaches the threshold (or exact copies) become `duplicates`; the rest are `similar`,
which purge never touches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from dedupd.dedup.policy import PolicyContext, choose_keeper
from dedupd.ingest.capture import different_captures
from dedupd.store import OK, Decision, FileRecord


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
    why: str = ""  # for `similar` members held back although close: "burst guard", "decided: ..."


@dataclass(frozen=True)
class Rules:
    """What can hold a close member back from `duplicates`: the burst guard and the user's decisions."""

    burst_guard: bool = True
    decisions: tuple[Decision, ...] = ()
    policy: PolicyContext = PolicyContext()

    @classmethod
    def make(cls, burst_guard: bool, decisions, policy: PolicyContext | None = None) -> Rules:
        decisions = tuple(decisions)
        keep = frozenset(c for d in decisions if d.kind == "keep" for c in d.contents)
        base = policy or PolicyContext()
        return cls(burst_guard, decisions, PolicyContext(base.protect, base.formats, keep))

    def held_back(self, keep: FileRecord, member: FileRecord) -> str:
        if keep.content != member.content and max(keep.frames, member.frames) > 1:
            return "multi-frame: only a byte copy is the same picture"
        if member.content in self.policy.keep:
            return "decided: keep"
        for d in self.decisions:
            if d.kind in ("not-duplicate", "keep-all") and {keep.content, member.content} <= set(d.contents):
                return f"decided: {d.kind} ({d.key})"
        if self.burst_guard and different_captures(_capture(keep), _capture(member)):
            return "burst guard: a different capture"
        return ""


def _capture(record: FileRecord) -> dict:
    return {"taken": record.taken, "camera": record.camera, "burst": record.burst}


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
    rules: Rules | None = None,
) -> list[Group]:
    """Groups of files that are exact copies or near-duplicates, keeper chosen by policy, sorted by keeper path."""
    rules = rules or Rules()
    by_content = _by_content(files)
    finder = UnionFind()
    for content in by_content:
        finder.find(content)
    for a, b, cos in pairs:
        if cos >= threshold and a in by_content and b in by_content:
            finder.union(a, b)
    groups = [_group(c, by_content, threshold, cosine, policy, rules) for c in finder.components().values()]
    return sorted((g for g in groups if g is not None), key=lambda g: g.keep.path)


def _by_content(files: Iterable[FileRecord]) -> dict[str, list[FileRecord]]:
    """Only decodable files take part: an unreadable file is never a keeper nor a duplicate."""
    out: dict[str, list[FileRecord]] = defaultdict(list)
    for record in files:
        if record.status == OK and record.content:
            out[record.content].append(record)
    return out


def _group(
    contents: list[str],
    by_content: dict[str, list[FileRecord]],
    threshold: float,
    cosine: Cosine,
    policy: Sequence[str] | str,
    rules: Rules,
) -> Group | None:
    members = [f for c in contents for f in by_content[c]]
    if len(members) < 2:
        return None
    keep = choose_keeper(members, policy, rules.policy)
    group = Group(keep)
    for member in members:
        _place(group, member, threshold, cosine, rules)
    if not group.duplicates and not group.similar:
        return None
    group.duplicates.sort(key=lambda m: m.file.path)
    group.similar.sort(key=lambda m: m.file.path)
    return group


def _place(group: Group, member: FileRecord, threshold: float, cosine: Cosine, rules: Rules) -> None:
    keep = group.keep
    if member.path == keep.path or (member.device, member.inode) == (keep.device, keep.inode):
        return  # the keeper itself, or a hard link of it: removing it frees nothing
    cos = 1.0 if member.content == keep.content else cosine(keep.content, member.content)
    why = rules.held_back(keep, member) if cos >= threshold else ""
    (group.duplicates if cos >= threshold and not why else group.similar).append(Member(member, cos, why))
