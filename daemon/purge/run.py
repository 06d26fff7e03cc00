"""A whole purge run: plan items from a report or from the store's groups, then act on them under the purge lock
with a journal, settling what an earlier run left open first.

The library layer under `dedupd scan --inplace`, `dedupd purge` and the daemon's purge.auto.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dedupd.config import Config
from dedupd.dedup.groups import Group
from dedupd.dedup.store_groups import rules_for, store_groups
from dedupd.errors import PurgeFailures, UsageError
from dedupd.ingest.indexer import online_roots
from dedupd.output.report import entry_path
from dedupd.own_folders import OffLimits, own_folders, remember
from dedupd.paths import normalise_root, path_text
from dedupd.purge.evidence import Evidence, KeeperProof
from dedupd.purge.execute import PurgeContext, PurgeItem, PurgeResult, run_purge
from dedupd.purge.journal import Journal, history
from dedupd.purge.recovery import recover_all, still_open
from dedupd.store import FileLock, LockBusy, Store

log = logging.getLogger("dedupd")
Echo = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What a purge is asked to do, and on what evidence: the store's pairs under `model` at or above `threshold`
    (the report's own threshold, or the groups')."""

    items: list[PurgeItem]
    model: str
    threshold: float


def purge_from_store(
    store: Store,
    config: Config,
    model: str,
    echo: Echo = print,
    stopping: Callable[[], bool] = lambda: False,
    roots: Sequence[bytes] | None = None,
) -> int:
    """The daemon's purge.auto: plan from the store with the configured policy and act per purge.action, until
    `stopping` says the daemon was told to stop. Groups are made of the files in `roots` only (the daemon's own,
    online): not a root a command-line scan added to the store, nor one dropped from its config. Neither its victims
    nor its keepers lie there: a drive scanned once and unplugged since holds no copy the daemon may count on."""
    roots = online_roots(store) if roots is None else roots
    groups, _, _ = store_groups(store, config, model, within=roots)
    return execute(store, plan_from_groups(groups, model, config), roots, config, None, True, echo, stopping)


def settle_interrupted(store: Store, config: Config, echo: Echo = print) -> int:
    """What an interrupted purge left open, settled as the next purge would settle it (the daemon does this on start,
    purge.auto or not: a file a kill left under a hidden aside name either goes, its keeper proven, or comes back
    into sight): how many entries stay open. LockBusy while another purge runs (it settles them itself)."""
    with FileLock(store.path / "purge.lock", "purge"):
        tally = recover_all(journal_dir(store), own_folders(store.path, config), online_roots(store))
    for line in tally.lines:
        echo(line)
    return tally.failed


def plan_from_groups(groups: Iterable[Group], model: str, config: Config) -> Plan:
    items = [PurgeItem(m.file.path, g.keep.path, m.file.content, g.keep.content) for g in groups for m in g.duplicates]
    return Plan(items, model, config.dedup.threshold)


def plan_from_report(report: dict[str, Any], model: str, config: Config) -> Plan:
    """Only `duplicates` are ever purged; `similar` members never are. A report's content hashes travel with each
    item; an old report without them is held to the store's current records."""
    items = [item for group in report["groups"] for item in _group_items(group)]
    # A report (perhaps hand-written) may raise the bar for "the same picture", never lower it below the
    # configured threshold: pairs are stored down to dedup.pair_floor, well below it.
    threshold = max(config.dedup.threshold, float(report.get("threshold") or 0.0))
    return Plan(items, model, threshold)


def _group_items(group: dict[str, Any]) -> list[PurgeItem]:
    """`keep` and `duplicates` are what the user reviews and edits: they say which files go and which stays. The
    details (`keep_info`, `duplicate_details`) only lend each of those paths its exact bytes (`path_b64`) and the
    content hash it was grouped with; a path struck from `duplicates` stays whatever the details still say."""
    keep_info = group.get("keep_info") or {}
    details = {d["path"]: d for d in [keep_info, *group.get("duplicate_details", ())] if "path" in d}
    keep = details.get(group.get("keep", keep_info.get("path")), {"path": group.get("keep")})
    keeper, keeper_content = entry_path(keep), keep.get("content", "")
    victims = [details.get(path, {"path": path}) for path in group["duplicates"]]
    return [PurgeItem(entry_path(v), keeper, v.get("content", ""), keeper_content) for v in victims]


def execute(
    store: Store,
    plan: Plan,
    roots: Sequence[bytes],
    config: Config,
    trash: str | None,
    inplace: bool,
    echo: Echo,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Act on the plan (a dry run unless inplace) under the store's purge lock, journaled; raise PurgeFailures
    when a safety check skipped any item."""
    trash_dir = check_trash_flag(trash) or (config.purge.trash_dir if config.purge.action == "trash" else None)
    if config.purge.action == "trash" and not trash_dir:
        raise UsageError("purge.action is trash but no purge.trash_dir (or --trash DIR) is set")
    with FileLock(store.path / "purge.lock", "purge"):
        if trash_dir and inplace:
            remember(store.path, normalise_root(trash_dir))  # under the purge lock, before anything lands there
        ctx = _context(store, plan, roots, config, trash_dir, inplace)
        ctx.stopping = stopping
        own = ctx.keepers.off_limits.known
        recovered = recover_all(journal_dir(store), own, roots) if inplace else still_open(journal_dir(store))
        for line in recovered.lines:
            echo(line)
        past = history(journal_dir(store))
        ctx.already_done, ctx.earlier, ctx.reserved = past.removed, past.earlier, past.reserved
        ctx.earlier_facts = store.vector_facts(plan.model, ctx.earlier.contents()) if ctx.earlier else {}
        ctx.journal = None if ctx.dry_run else Journal.create(journal_dir(store))
        try:
            result = run_purge(plan.items, ctx)
        finally:
            if ctx.journal is not None:
                ctx.journal.close()
                echo(f"journal: {ctx.journal.path} (undo trashed files with `dedupd purge --undo` on it)")
    _forget(store, result)
    _echo_purge(echo, result, dry_run=not inplace)
    left = sum(len(o.left) for o in result.outcomes)
    if left:
        raise PurgeFailures(f"{left} companions could not follow their photo (see above; the journal has them)")
    if result.skipped:
        raise PurgeFailures(f"{len(result.skipped)} of {len(result.outcomes)} purge items were skipped (see above)")
    if recovered.failed:
        raise PurgeFailures(f"{recovered.failed} interrupted acts could not be settled yet (see above; they stay open)")
    return 0


def check_trash_flag(trash: str | None) -> str | None:
    """`--trash ""` (a variable left unset in a script) asks for a trash and names none: never a delete."""
    if trash is not None and not trash.strip():
        raise UsageError("--trash: the folder name is empty (a variable left unset?); nothing was moved or deleted")
    return trash


def _context(
    store: Store, plan: Plan, roots: Sequence[bytes], config: Config, trash_dir: str | None, inplace: bool
) -> PurgeContext:
    return PurgeContext(
        records=store.files(),
        roots=roots,
        evidence=Evidence.load(store, plan.model, plan.threshold),
        rules=rules_for(store, config),
        decisions=store.decisions,
        keepers=KeeperProof(OffLimits(own_folders(store.path, config))),
        protect=[normalise_root(p) for p in config.protect],
        trash_dir=normalise_root(trash_dir) if trash_dir else None,
        dry_run=not inplace,
    )


def journal_dir(store: Store) -> Path:
    return store.path / "journal"


def _forget(store: Store, result: PurgeResult) -> None:
    """Drop removed files from the store, unless a running daemon owns it (its watchers see the deletions)."""
    victims = [o.item.victim for o in result.acted]
    if not victims:
        return
    if store.writer_lock.held:
        store.delete_files(victims)
        return
    try:
        with store.writer_lock.acquire():
            store.delete_files(victims)
    except LockBusy:
        log.info("the store is held by a running daemon; it will notice the removed files itself")


def _echo_purge(echo: Echo, result: PurgeResult, dry_run: bool) -> None:
    for o in result.outcomes:
        line = f"{o.action} {path_text(o.item.victim)}"
        if o.destination:
            line += f" -> {path_text(o.destination)}"
        if o.reason:
            line += f": {o.reason}"
        if o.companions:
            line += " with " + ", ".join(os.path.basename(path_text(c)) for c in o.companions)
        echo(line + (f" (keeps {path_text(o.item.keeper)})" if not o.reason else ""))
        for left in o.left:
            echo(f"  companion left in place: {left}")
    verb = "would act on" if dry_run else "acted on"
    done = sum(o.action == "already done" for o in result.outcomes)  # by an earlier run: not acted on by this one
    echo(
        f"purge: {verb} {len(result.outcomes) - len(result.skipped) - done}, skipped {len(result.skipped)}"
        + (f", already done {done}" if done else "")
        + (" (dry run: nothing changed; add --inplace to act)" if dry_run else "")
    )
