"""The commands as plain functions: they take validated settings, print through `echo`, and raise DedupdError.

cli.py is only an adapter from argv to these.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dedupd.cluster.session import join as join_cluster
from dedupd.config import Config
from dedupd.dedup import pairs
from dedupd.dedup.store_groups import rules_for, store_groups
from dedupd.errors import PurgeFailures, UsageError
from dedupd.ingest.decode_pool import DecodeFn, decode_for_model
from dedupd.ingest.indexer import Indexer, IndexResult, online_roots, roots_state
from dedupd.model.loader import LazyEmbedder, model_identity
from dedupd.output.report import build_report, group_id, human_bytes, load_report, store_report, write_report
from dedupd.own_folders import own_folders
from dedupd.paths import normalise_root
from dedupd.progress import bar
from dedupd.purge.journal import Entry, is_journal, journals, latest_states
from dedupd.purge.recovery import empty_trash as recovery_empty
from dedupd.purge.recovery import forget, parse_age, recover_all, still_open, undo
from dedupd.purge.run import check_trash_flag, execute, journal_dir, plan_from_groups, plan_from_report
from dedupd.service.status import read_status
from dedupd.store import PENDING, UNREADABLE, FileLock, FileRecord, LockBusy, Store

if TYPE_CHECKING:
    from dedupd.cluster.ray_embed import RayCluster

log = logging.getLogger("dedupd")
Echo = Callable[[str], None]


# --- shared plumbing ---------------------------------------------------------------------------------------------


def open_store(config: Config, create: bool = True) -> Store:
    return Store.open(config.store_path(), create=create)


def writer_lock(store: Store) -> FileLock:
    try:
        return store.writer_lock.acquire()
    except LockBusy as exc:
        raise UsageError(f"{exc}; is `dedupd run` using this store? stop it or use another --store") from None


def model_id(config: Config, store: Store) -> str:
    """The model whose vectors a command reads: the configured one when --model or model.name names it, else the
    one the store holds (a store scanned with --model M is then read with M, not the default)."""
    if "name" in config.model.model_fields_set:
        return model_identity(config.model)
    held = store.models()
    if len(held) > 1:
        raise UsageError(
            f"the store at {store.path} holds vectors of {len(held)} models ({', '.join(held)}); "
            "choose one with --model or model.name"
        )
    return held[0] if held else model_identity(config.model)


# --- scan --------------------------------------------------------------------------------------------------------


def scan(
    folder: str,
    config: Config,
    report_path: str | None,
    inplace: bool,
    trash: str | None,
    echo: Echo = print,
    threaded: bool = True,
    embedder: LazyEmbedder | None = None,
    decode: DecodeFn = decode_for_model,
) -> int:
    """The old one-shot tool: index FOLDER, group, write the report, and delete only with inplace. `embedder` and
    `decode` (what runs per file in the decode workers) are the tests' seams."""
    if not os.path.isdir(folder):
        raise UsageError(f"{folder}: not a directory")
    check_trash_flag(trash)  # before the scan, which may take hours
    root = normalise_root(folder)
    with join_cluster(config) as ray_cluster:  # first: a cluster that cannot be reached leaves the store as it was
        config = ray_cluster.settle(config) if ray_cluster is not None else config
        embedder = embedder or LazyEmbedder(config)
        model = embedder.model_id
        store = open_store(config)
        with writer_lock(store):
            result = _index_root(store, root, config, embedder, ray_cluster, threaded, decode)
            files = list(store.files(root).values())
            groups = pairs.load_groups(
                store, model, files, config.dedup.threshold, config.dedup.keep_policy, rules_for(store, config)
            )
            report = build_report(
                groups, len(files), config.dedup.keep_policy, config.dedup.threshold, model, roots=[root]
            )
            out = report_path or os.path.join(os.fsdecode(root), "dedup_report.json")
            write_report(report, out)
            _echo_scan(echo, result, report, out)
            if inplace or trash:
                return execute(store, plan_from_groups(groups, model, config), [root], config, trash, inplace, echo)
        return 0


def _index_root(
    store: Store,
    root: bytes,
    config: Config,
    embedder: LazyEmbedder,
    ray_cluster: RayCluster | None,
    threaded: bool,
    decode: DecodeFn,
) -> IndexResult:
    indexer = Indexer(store, config, embedder, threaded=threaded, decode=decode)
    if ray_cluster is not None:
        indexer.to_model = ray_cluster.embed_stage(indexer)
    try:
        with bar("indexing", unit="file") as progress:
            indexer.on_item = lambda c: _progress(progress, c)
            return indexer.reconcile(root, guard=False)
    finally:
        indexer.close()


def _progress(progress, counters) -> None:
    progress.update(1)
    progress.set_postfix_str(f"hashed {counters.hashed}, embedded {counters.embedded}", refresh=False)


def _echo_scan(echo: Echo, result: IndexResult, report: dict, out: str) -> None:
    c = result.counters
    echo(
        f"{c.seen} images: {c.unchanged} unchanged, {c.hashed} hashed, {c.embedded} embedded, "
        f"{c.unreadable} unreadable, {result.removed} gone"
    )
    echo(
        f"{report['duplicate_groups']} groups, {report['total_duplicates']} duplicates, "
        f"{human_bytes(report['bytes_reclaimable'])} reclaimable; report: {out}"
    )


# --- report ------------------------------------------------------------------------------------------------------


def report(config: Config, out: str | None, echo: Echo = print, model: str | None = None, fmt: str = "json") -> int:
    """A report from what the store holds; no embedding, and no search above the stored pair floor."""
    store = open_store(config, create=False)
    model = model or model_id(config, store)
    report = store_report(store, config, model)
    if fmt == "html":
        return _html(store, report, out or config.report.html_dir, echo)
    target = out or config.report.path or "-"
    write_report(report, target)
    if target != "-":
        echo(f"{report['duplicate_groups']} groups, {report['total_duplicates']} duplicates; report: {target}")
    return 0


def _html(store: Store, report: dict, out: str | None, echo: Echo) -> int:
    from dedupd.output.gallery import write_gallery

    if not out or out == "-":
        raise UsageError("--format html needs --out DIR (a folder for index.html and its thumbnails)")
    index = write_gallery(report, out, store.path)
    echo(f"{report['duplicate_groups']} groups, {report['total_duplicates']} duplicates; gallery: {index}")
    return 0


# --- purge -------------------------------------------------------------------------------------------------------


def purge(
    config: Config,
    report_file: str | None,
    inplace: bool,
    trash: str | None,
    echo: Echo = print,
    model: str | None = None,
) -> int:
    store = open_store(config, create=False)
    drop_purged(store)
    roots = online_roots(store)
    if report_file:
        # The evidence is the store's pairs under the current model, whatever model the report names.
        plan = plan_from_report(load_report(report_file), model or model_id(config, store), config)
    else:
        model = model or model_id(config, store)
        plan = plan_from_groups(store_groups(store, config, model)[0], model, config)
    return execute(store, plan, roots, config, trash, inplace, echo)


def drop_purged(store: Store) -> None:
    """Drop the rows of files a journaled purge removed that the store still lists: a purge killed before it could
    update the store leaves them, and status would count them as duplicates and every later plan would name them.
    Only a row naming the very inode and content a journal entry acted on, no longer at its path, is dropped; with
    a daemon running, its watchers drop them instead."""
    files = store.files()
    stale = []
    for journal in journals(journal_dir(store)):
        for intent, _ in latest_states(journal).values():
            record = files.get(intent.victim_path)
            if record is not None and _removed(record, intent.device, intent.inode, intent.content):
                stale.append(record.path)
    if stale and not store.delete_files_unless_busy(stale):
        log.info("the store is held by a running daemon; it will notice the removed files itself")


def _removed(record: FileRecord, device: int, inode: int, content: str) -> bool:
    if (record.device, record.inode, record.content) != (device, inode, content):
        return False
    try:
        st = os.lstat(record.path)
    except OSError:
        return True
    return (st.st_dev, st.st_ino) != (device, inode)


def undo_purge(config: Config, journal: str, echo: Echo = print) -> int:
    store = open_store(config, create=False)
    if not os.path.isfile(journal):
        raise UsageError(f"{journal}: no such journal (they live in {journal_dir(store)})")
    if not is_journal(Path(journal)):
        raise UsageError(f"{journal}: not a purge journal (they live in {journal_dir(store)})")
    with FileLock(store.path / "purge.lock", "purge"):
        tally = undo(Path(journal), lambda entry, path: _keep_both(store, entry, path, echo))
        for line in tally.lines:
            echo(line)
    if tally.failed:
        raise PurgeFailures(f"{tally.failed} entries could not be restored (see above)")
    return 0


def _keep_both(store: Store, entry: Entry, path: bytes, echo: Echo) -> None:
    """An undo is the user's word that both files stay: a decision keeps every later purge (the daemon's purge.auto,
    seconds later) from removing the restored file again. A byte copy is named by its path alone: its content alone
    would hold back every exact copy of the picture for good."""
    kept = entry.keeper_content or entry.content
    contents = sorted({kept, entry.content}) if kept != entry.content else []
    paths = [os.fsdecode(entry.keeper_path), os.fsdecode(path)]
    decision = store.add_decision("keep-all", contents, paths)
    echo(f"decided {decision.key}: keep-all {' '.join(paths)} (so no purge removes it again; undo: dedupd decide undo)")


def forget_purge(config: Config, folder: str, echo: Echo = print) -> int:
    """Close the interrupted acts in a folder the user removed, which no purge can settle (see recovery.forget)."""
    store = open_store(config, create=False)
    with FileLock(store.path / "purge.lock", "purge"):
        tally = forget(journal_dir(store), normalise_root(folder), online_roots(store))
    if not tally.lines:
        raise UsageError(f"--forget {folder}: no interrupted purge act is open in that folder")
    for line in tally.lines:
        echo(line)
    if tally.failed:
        raise PurgeFailures(f"{tally.failed} entries were not forgotten (see above)")
    return 0


def empty_trash(config: Config, older_than: str, echo: Echo = print) -> int:
    store = open_store(config, create=False)
    age = parse_age(older_than)
    with FileLock(store.path / "purge.lock", "purge"):
        own = own_folders(store.path, config)
        # First what an interrupted purge left open, as a purge settles it: a photo gone for good whose companion's
        # act is still open would leave that companion to be put back alone, beside whatever takes the photo's name.
        settled = recover_all(journal_dir(store), own, online_roots(store))
        tally = recovery_empty(journal_dir(store), age, own=own)
    for line in settled.lines + tally.lines:
        echo(line)
    echo(f"trash: removed {tally.removed} files" + (f", kept {tally.failed} (see above)" if tally.failed else ""))
    if tally.failed or settled.failed:
        raise PurgeFailures(
            f"{tally.failed} trashed files were kept, {settled.failed} interrupted acts stay open (see above)"
        )
    return 0


# --- decide ------------------------------------------------------------------------------------------------------


def decide(config: Config, action: str, targets: Sequence[str], echo: Echo = print, model: str | None = None) -> int:
    """Decisions that stick: stored against content hashes, so they survive renames, moves and rescans."""
    store = open_store(config, create=False)
    if action == "list":
        return _list_decisions(store, echo)
    if action == "undo":
        return _undo_decisions(store, targets, echo)
    contents, paths = _decision_targets(store, config, model or model_id(config, store), action, targets)
    decision = store.add_decision(action, contents, paths)
    echo(f"decided {decision.key}: {action} {' '.join(paths)} ({len(contents)} contents)")
    return 0


def _decision_targets(store: Store, config: Config, model: str, action: str, targets: Sequence[str]):
    wanted = {"keep": 1, "not-duplicate": 2}.get(action)
    if wanted is not None and len(targets) != wanted:
        raise UsageError(f"decide {action} takes {wanted} path{'s' if wanted > 1 else ''}")
    if not targets:
        raise UsageError(f"decide {action} needs at least one group id or path")
    if action == "not-duplicate" and normalise_root(targets[0]) == normalise_root(targets[1]):
        # Stored, {content} alone would hold back every exact copy of the file: not what "A is not B" says.
        raise UsageError(f"decide not-duplicate: {targets[0]} and {targets[1]} are the same file; name two files")
    # The files' absolute paths go with the contents: a file edited in place since is still the one decided on.
    if action == "keep-all":
        members = [m for t in targets for m in _group_members(store, config, model, t)]
        return sorted({m.content for m in members}), sorted({os.fsdecode(m.path) for m in members})
    return [_content_of(store, t) for t in targets], [os.fsdecode(normalise_root(t)) for t in targets]


def _content_of(store: Store, target: str) -> str:
    record = store.files().get(normalise_root(target))
    if record is None or not record.content:
        raise UsageError(f"{target}: not in the store (scan it first)")
    return record.content


def _group_members(store: Store, config: Config, model: str, target: str) -> list[FileRecord]:
    groups, _, _ = store_groups(store, config, model)
    path = normalise_root(target) if os.path.sep in target or os.path.exists(target) else None
    for group in groups:
        members = [group.keep, *(m.file for m in group.duplicates + group.similar)]
        if group_id(group) == target or any(m.path == path for m in members):
            return members
    raise UsageError(f"{target}: no current group has this id or path (see `dedupd report`)")


def _list_decisions(store: Store, echo: Echo) -> int:
    decisions = store.decisions()
    for d in decisions:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.created))
        echo(f"{d.key}  {when}  {d.kind:<13} {' '.join(d.paths)}")
    if not decisions:
        echo("no decisions")
    return 0


def _undo_decisions(store: Store, keys: Sequence[str], echo: Echo) -> int:
    if not keys:
        raise UsageError("decide undo takes the id(s) shown by `dedupd decide list`")
    missing = [k for k in keys if not store.remove_decision(k)]
    for key in keys:
        if key not in missing:
            echo(f"undone {key}")
    if missing:
        raise UsageError(f"no decision with id {', '.join(missing)}")
    return 0


# --- status ------------------------------------------------------------------------------------------------------


def status(config: Config, echo: Echo = print, model: str | None = None) -> int:
    store = open_store(config, create=False)
    drop_purged(store)
    model = model or model_id(config, store)
    for key, value in status_fields(store, config, model).items():
        echo(f"{key}: {value}")
    daemon = read_status(store.path)
    echo(f"daemon: {_daemon_line(daemon)}")
    for root, backend in (daemon or {}).get("watchers", {}).items():
        echo(f"  watcher {root}: {backend}, {daemon.get('health', {}).get(root, 'unknown')}")
    for error in (daemon or {}).get("last_errors", []):
        echo(f"  error: {error}")
    for line in still_open(journal_dir(store)).lines:
        echo(line)
    return 0


def _daemon_line(daemon: dict | None) -> str:
    if daemon is None:
        return "not running"
    progress = f" ({daemon['progress']})" if daemon.get("progress") else ""
    return f"pid {daemon['pid']}, {daemon['phase']}{progress}, backlog {daemon['backlog']}"


def status_fields(store: Store, config: Config, model: str) -> dict[str, object]:
    files = list(store.files().values())
    embedded = store.vector_contents(model)
    contents = {f.content for f in files if f.content}
    reasons = Tally(f.error for f in files if f.status == UNREADABLE)
    groups_line, dups_line, bytes_line = "-", "-", "-"
    if pairs.stored_floor(store, model) is not None and files:
        groups, _, _ = store_groups(store, config, model)
        groups_line = str(sum(1 for g in groups if g.duplicates))
        dups_line = str(sum(len(g.duplicates) for g in groups))
        bytes_line = human_bytes(sum(g.bytes_reclaimable for g in groups))
    return {
        "files": len(files),
        "unique contents": len(contents),
        "embedded": len(contents & embedded),
        "pending": sum(1 for f in files if f.status == PENDING),
        "unreadable": _reasons(reasons),
        "groups": groups_line,
        "duplicates": dups_line,
        "bytes reclaimable": bytes_line,
        "model": model,
        "roots": ", ".join(f"{r} ({s.get('state', 'online')})" for r, s in roots_state(store).items()) or "-",
        "store": f"{store.path} ({human_bytes(store.size_bytes())})",
    }


def _reasons(reasons: Tally) -> str:
    total = sum(reasons.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{n} {why}" for why, n in reasons.most_common()) + ")"


# --- check-config ------------------------------------------------------------------------------------------------


def check_config(path: str | None, echo: Echo = print) -> int:
    from dedupd.config import load_config

    config = load_config(path)
    echo(
        f"{path or 'defaults'}: ok (store {config.store_path()}, model {config.model.name}, {len(config.roots)} roots)"
    )
    return 0
