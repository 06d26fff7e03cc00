"""A whole purge run: plan items from a report or from the store's groups, then act on them under the purge lock
with a journal, settling what an earlier run left open first.

The library layer under `dedupd scan --inplace`, `dedupd purge` and the daemon's purge.auto.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from dedupd.config import Config
from dedupd.dedup.groups import Group
from dedupd.dedup.store_groups import rules_for, store_groups
from dedupd.errors import PurgeFailures, UsageError
from dedupd.ingest.indexer import online_roots
from dedupd.output.report import entry_path
from dedupd.paths import normalise_root, path_text, text_path
from dedupd.purge.execute import PurgeContext, PurgeItem, PurgeResult, run_purge
from dedupd.purge.journal import Journal, done_victims
from dedupd.purge.recovery import recover_all
from dedupd.store import FileLock, LockBusy, Store

log = logging.getLogger("dedupd")
Echo = Callable[[str], None]


def purge_from_store(store: Store, config: Config, model: str, echo: Echo = print) -> int:
    """The daemon's purge.auto: plan from the store with the configured policy and act per purge.action."""
    groups, _, _ = store_groups(store, config, model)
    return execute(store, items_from_groups(groups), online_roots(store), config, None, True, echo)


def items_from_groups(groups: Iterable[Group]) -> list[PurgeItem]:
    return [PurgeItem(m.file.path, g.keep.path) for g in groups for m in g.duplicates]


def items_from_report(report: dict[str, Any]) -> list[PurgeItem]:
    """Only `duplicates` are ever purged; `similar` members never are."""
    items: list[PurgeItem] = []
    for group in report["groups"]:
        keeper = entry_path(group["keep_info"]) if "keep_info" in group else text_path(group["keep"])
        details = group.get("duplicate_details")
        victims = (
            [entry_path(d) for d in details] if details is not None else [text_path(d) for d in group["duplicates"]]
        )
        items.extend(PurgeItem(v, keeper) for v in victims)
    return items


def execute(
    store: Store,
    items: list[PurgeItem],
    roots: Sequence[bytes],
    config: Config,
    trash: str | None,
    inplace: bool,
    echo: Echo,
) -> int:
    """Act on the items (a dry run unless inplace) under the store's purge lock, journaled; raise PurgeFailures
    when a safety check skipped any."""
    trash_dir = trash or (config.purge.trash_dir if config.purge.action == "trash" else None)
    if config.purge.action == "trash" and not trash_dir:
        raise UsageError("purge.action is trash but no purge.trash_dir (or --trash DIR) is set")
    ctx = PurgeContext(
        records=store.files(),
        roots=roots,
        protect=[normalise_root(p) for p in config.protect],
        trash_dir=normalise_root(trash_dir) if trash_dir else None,
        dry_run=not inplace,
        rules=rules_for(store, config),
    )
    with FileLock(store.path / "purge.lock", "purge"):
        for line in recover_all(journal_dir(store)).lines:
            echo(line)
        ctx.already_done = done_victims(journal_dir(store))
        ctx.journal = None if ctx.dry_run else Journal.create(journal_dir(store))
        try:
            result = run_purge(items, ctx)
        finally:
            if ctx.journal is not None:
                ctx.journal.close()
                echo(f"journal: {ctx.journal.path} (undo trashed files with `dedupd purge --undo` on it)")
    _forget(store, result)
    _echo_purge(echo, result, dry_run=not inplace)
    if result.skipped:
        raise PurgeFailures(f"{len(result.skipped)} of {len(result.outcomes)} purge items were skipped (see above)")
    return 0


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
        echo(line + (f" (keeps {path_text(o.item.keeper)})" if not o.reason else ""))
    verb = "would act on" if dry_run else "acted on"
    echo(
        f"purge: {verb} {len(result.outcomes) - len(result.skipped)}, skipped {len(result.skipped)}"
        + (" (dry run: nothing changed; add --inplace to act)" if dry_run else "")
    )
