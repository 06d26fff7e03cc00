"""Duplicate groups: union-find over near-duplicate pairs plus exact-hash groups, with chaining made safe.

Union-find is transitive, so A~B and B~C put A and C together even when A and C are far apart. Only members whose
own cosine to the kept file reaches the threshold (or exact copies) become `duplicates`. Members linked to the
keeper only through others get a keeper of their own where they are near-duplicates of one another (a group of
their own, split off the same component, each duplicate again directly at or above the threshold to its keeper);
the rest are `similar`, which purge never touches.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from dedupd.dedup.companions import Companion, differing, kinds, no_companions
from dedupd.dedup.policy import PolicyContext, choose_keeper
from dedupd.ingest.capture import different_captures
from dedupd.paths import RAW_FORMATS
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
    companions: tuple[Companion, ...] = ()


_APART_DECISIONS = ("not-duplicate", "keep-all")  # the decisions that hold two files apart


@dataclass(frozen=True)
class Rules:
    """What can hold a close member back from `duplicates`: the burst guard and the user's decisions."""

    burst_guard: bool = True
    decisions: tuple[Decision, ...] = ()
    policy: PolicyContext = PolicyContext()
    raw_jpeg: str = "keep"  # dedup.raw_jpeg: "keep" holds the JPEG (or RAW) of one capture back; "dedupe" does not
    companions: Callable[[bytes], tuple[Companion, ...]] = no_companions

    @classmethod
    def make(
        cls,
        burst_guard: bool,
        decisions: Iterable[Decision],
        policy: PolicyContext | None = None,
        raw_jpeg: str = "keep",
        companions: Callable[[bytes], tuple[Companion, ...]] = no_companions,
    ) -> Rules:
        decisions = tuple(decisions)
        keep = frozenset(c for d in decisions if d.kind == "keep" for c in d.contents)
        keep_paths = frozenset(p for d in decisions if d.kind == "keep" for p in d.paths)
        base = policy or PolicyContext()
        context = PolicyContext(base.protect, base.formats, keep, lambda path: kinds(companions(path)), keep_paths)
        return cls(burst_guard, decisions, context, raw_jpeg, companions)

    def with_decisions(self, decisions: Iterable[Decision]) -> Rules:
        """These rules under the user's decisions as they are now: one made while a purge runs counts at once."""
        decisions = tuple(decisions)
        if decisions == self.decisions:
            return self
        return Rules.make(self.burst_guard, decisions, self.policy, self.raw_jpeg, self.companions)

    def held_back(self, keep: FileRecord, member: FileRecord) -> str:
        return self.apart(keep, member) or self._files_kept(keep, member)

    def apart(
        self, keep: FileRecord, member: FileRecord, decided: tuple[str, ...] = ("not-duplicate", "keep-all")
    ) -> str:
        """Why these two contents are not one picture, whatever files hold them ("" when nothing says so): the
        multi-frame rule, the user's decisions on the two (of the kinds `decided`), the burst guard."""
        if keep.content != member.content and max(keep.frames, member.frames) > 1:
            return "multi-frame: only a byte copy is the same picture"
        for d in self.decisions:
            if d.kind in decided and _decided_apart(d, keep, member):
                return f"decided: {d.kind} ({d.key})"
        if self.burst_guard and different_captures(_capture(keep), _capture(member)):
            return "burst guard: a different capture"
        return ""

    def _files_kept(self, keep: FileRecord, member: FileRecord) -> str:
        """Why this member file stays although its picture is the keeper's: kept by decision, RAW+JPEG, companions."""
        if self.policy.decided_keep(member):
            return "decided: keep"
        if self.raw_jpeg == "keep" and raw_and_jpeg(keep, member):
            return "raw+jpeg: one capture kept as RAW and JPEG (dedup.raw_jpeg: keep)"
        return companions_held_back(self.companions(member.path), self.companions(keep.path))


def _decided_apart(decision: Decision, a: FileRecord, b: FileRecord) -> bool:
    """Whether the decision names both files. Byte copies by their paths, or by a decision on their bytes alone (a
    keep-all of a group of byte copies keeps every copy, renamed or moved): "A is not B" says nothing against a copy
    of B, and an undone byte copy's keep-all names the two files, not every copy of their bytes."""
    if a.content == b.content:
        both_named = os.fsdecode(a.path) in decision.paths and os.fsdecode(b.path) in decision.paths
        return both_named or decision.contents == (a.content,)
    return _named(decision, a) and _named(decision, b)


def _named(decision: Decision, record: FileRecord) -> bool:
    """A decision names a file by the bytes it was made on, or by its path: a file edited in place since (a title
    saved into it) is still the one the user decided on."""
    return record.content in decision.contents or os.fsdecode(record.path) in decision.paths


def companions_held_back(member: tuple[Companion, ...], keeper: tuple[Companion, ...]) -> str:
    """A member's sidecar or Live Photo video may be the only copy of its data: it goes with the member only where
    the keeper has one of the same kind that can be a byte copy of it."""
    lacking = kinds(member) - kinds(keeper)
    if lacking:
        return f"companions: has {', '.join(sorted(lacking))} the keeper lacks"
    other = differing(member, keeper)
    if other:
        return f"companions: its {', '.join(sorted(other))} differs from the keeper's"
    return ""


def raw_and_jpeg(a: FileRecord, b: FileRecord) -> bool:
    """The RAW and the camera's JPEG of one capture: one folder, one stem, one RAW and one not, and the same capture
    second where both files say (LibRaw gives a RAW's time without sub-seconds)."""
    if (a.format in RAW_FORMATS) == (b.format in RAW_FORMATS):
        return False
    (folder_a, name_a), (folder_b, name_b) = os.path.split(a.path), os.path.split(b.path)
    if folder_a != folder_b or os.path.splitext(name_a)[0] != os.path.splitext(name_b)[0]:
        return False
    return not (a.taken and b.taken) or a.taken[:19] == b.taken[:19]


def _capture(record: FileRecord) -> dict:
    return {"taken": record.taken, "camera": record.camera, "burst": record.burst}


@dataclass
class Group:
    keep: FileRecord
    duplicates: list[Member] = field(default_factory=list)
    similar: list[Member] = field(default_factory=list)
    keep_companions: tuple[Companion, ...] = ()

    @property
    def bytes_reclaimable(self) -> int:
        return sum(m.file.size for m in self.duplicates)


Cosine = Callable[[str, str], float]
Edge = tuple[str, str]


@dataclass(frozen=True)
class _Setting:
    threshold: float
    cosine: Cosine
    policy: Sequence[str] | str
    rules: Rules


def build_groups(
    files: Iterable[FileRecord],
    pairs: Iterable[tuple[str, str, float]],
    threshold: float,
    cosine: Cosine,
    policy: Sequence[str] | str,
    rules: Rules | None = None,
) -> list[Group]:
    """Groups of files that are exact copies or near-duplicates, keeper chosen by policy, sorted by keeper path."""
    setting = _Setting(threshold, cosine, policy, rules or Rules())
    by_content = _by_content(files)
    finder = UnionFind()
    for content in by_content:
        finder.find(content)
    edges: list[Edge] = []
    for a, b, cos in pairs:
        if cos >= threshold and a in by_content and b in by_content:
            finder.union(a, b)
            edges.append((a, b))
    components = finder.components()
    edges_of: dict[str, list[Edge]] = defaultdict(list)
    for a, b in edges:
        edges_of[finder.find(a)].append((a, b))
    groups = [g for root, c in components.items() for g in _groups(c, edges_of[root], by_content, setting)]
    return sorted(groups, key=lambda g: g.keep.path)


def _by_content(files: Iterable[FileRecord]) -> dict[str, list[FileRecord]]:
    """Only decodable files take part: an unreadable file is never a keeper nor a duplicate."""
    out: dict[str, list[FileRecord]] = defaultdict(list)
    for record in files:
        if record.status == OK and record.content:
            out[record.content].append(record)
    return out


def _groups(
    contents: list[str], edges: list[Edge], by_content: dict[str, list[FileRecord]], setting: _Setting
) -> list[Group]:
    """One component: a group around the policy's keeper, then, among the members linked to that keeper only
    through others, a group of their own wherever some of them are near-duplicates of one another."""
    members = [f for c in contents for f in by_content[c]]
    if len(members) < 2:
        return []
    rules = setting.rules
    keep = choose_keeper(members, setting.policy, rules.policy)
    group = Group(keep, keep_companions=rules.companions(keep.path))
    chained: set[str] = set()
    for member in sorted(members, key=lambda m: m.path):  # of two pictures close to one keeper, the second stays
        _place(group, member, setting, chained)
    out = _regroup(chained, _held_apart(group, rules), edges, by_content, setting, group)
    if group.duplicates or group.similar:
        group.duplicates.sort(key=lambda m: m.file.path)
        group.similar.sort(key=lambda m: m.file.path)
        out.append(group)
    return out


def _held_apart(group: Group, rules: Rules) -> set[str]:
    """Contents held back from this keeper as another picture (a burst frame, multi-frame, `not-duplicate`), whose
    files none of its duplicates hold: their own byte copies and near-duplicates still make a group of their own. A
    file held for what it is (a RAW+JPEG half, its companions, `decide keep`) or named by a keep-all stays put: the
    user's word keeps it where it is."""
    going = {m.file.content for m in group.duplicates} | {group.keep.content}
    held = [m.file for m in group.similar if m.why and m.file.content not in going]
    return {f.content for f in held if _another_picture_than(group, f, rules)}


def _another_picture_than(group: Group, member: FileRecord, rules: Rules) -> bool:
    others = [group.keep, *(m.file for m in group.duplicates if m.file.content != member.content)]
    return any(rules.apart(other, member, decided=("not-duplicate",)) for other in others)


def _regroup(
    chained: set[str],
    held: set[str],
    edges: list[Edge],
    by_content: dict[str, list[FileRecord]],
    setting: _Setting,
    group: Group,
) -> list[Group]:
    """Chained members that still pair at or above the threshold among themselves form groups of their own (their
    own keeper, each duplicate directly above the threshold to it); the others stay `similar` of this group. So do
    members held apart as another picture, where that frees a copy of theirs: else they stay `similar` here, where
    the report says why."""
    pool = chained | held
    finder = UnionFind()
    for content in pool:
        finder.find(content)  # exact copies of one content group even without an edge
    inner = [(a, b) for a, b in edges if a in pool and b in pool]
    for a, b in inner:
        finder.union(a, b)
    inner_of: dict[str, list[Edge]] = defaultdict(list)
    for a, b in inner:
        inner_of[finder.find(a)].append((a, b))
    out: list[Group] = []
    regrouped: set[str] = set()
    for root, contents in finder.components().items():
        groups = _groups(contents, inner_of[root], by_content, setting)
        if groups and (set(contents) <= chained or any(g.duplicates for g in groups)):
            out.extend(groups)
            regrouped.update(contents)
    group.similar = [m for m in group.similar if m.file.content not in regrouped]
    return out


def _place(group: Group, member: FileRecord, setting: _Setting, chained: set[str]) -> None:
    keep = group.keep
    if member.path == keep.path or (member.device, member.inode) == (keep.device, keep.inode):
        return  # the keeper itself, or a hard link of it: removing it frees nothing
    rules = setting.rules
    cos = 1.0 if member.content == keep.content else setting.cosine(keep.content, member.content)
    close = cos >= setting.threshold
    why = (rules.held_back(keep, member) or _another_picture(group, member, rules)) if close else ""
    entry = Member(member, cos, why, rules.companions(member.path))
    (group.duplicates if close and not why else group.similar).append(entry)
    if not close:
        chained.add(member.content)


def _another_picture(group: Group, member: FileRecord, rules: Rules) -> str:
    """A keeper stands for one picture: of two duplicates the rules hold apart (two burst frames close to one export
    without EXIF, two files decided not-duplicate), the second stays. The purge's gate asks the same of every act."""
    for other in group.duplicates:
        why = "" if other.file.content == member.content else rules.apart(other.file, member)
        if why:
            return f"{why}, and {os.fsdecode(other.file.path)} goes against this keeper: it can be only one of the two"
    return ""
