"""`dedupd run`: the long-running service.

Start: config -> exclusive store lock -> store -> the Ray cluster, if one is configured -> watchers (before the first
walk, so nothing written during a long bulk embed is missed) -> READY=1 -> reconcile every root (on the cluster, if
any, which is then left) -> process settled events until stopped.

All real work happens on the main thread; signal handlers and watcher threads only set flags or enqueue.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dedupd.cluster.session import join
from dedupd.config import Config, load_config
from dedupd.errors import UsageError
from dedupd.ingest.indexer import Indexer, IndexResult, mark_root, online_roots
from dedupd.model.loader import LazyEmbedder
from dedupd.output.report import store_report, write_report
from dedupd.paths import is_companion_name, normalise_root, path_text
from dedupd.purge.run import purge_from_store, settle_interrupted
from dedupd.service import sdnotify
from dedupd.service.status import write_status
from dedupd.store import LockBusy, Store

if TYPE_CHECKING:
    from dedupd.cluster.ray_embed import RayCluster

log = logging.getLogger("dedupd")

TICK = 0.25  # main-loop period: how quickly settled events, signals and health checks are noticed
PROGRESS_LOG_EVERY = 30.0


@dataclass
class Health:
    phase: str = "starting"
    progress: str = ""
    errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        log.error("%s", text)
        self.errors = [*self.errors[-9:], f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"]


# At most this share of the daemon's time goes to rewriting the report, however large the library's report gets.
REPORT_DUTY = 0.1


def report_gap(min_interval: float, last_cost: float) -> float:
    """Seconds between two report rewrites: report.min_interval, or ten times what the last rewrite took if that is
    longer, so a small library's report follows each change within seconds and a huge one's is not rewritten
    back to back under constant change."""
    return max(min_interval, last_cost / REPORT_DUTY)


class Service:
    def __init__(self, config: Config, config_path: str | None = None, embedder: LazyEmbedder | None = None):
        self.config = config
        self.config_path = config_path
        self._embedder = embedder
        self.stop = threading.Event()
        self.reload_requested = threading.Event()
        self.health = Health()
        self.roots: list[bytes] = []
        self._last_rescan = 0.0
        self._report_due: float | None = None
        self._last_report = 0.0
        self._report_cost = 0.0  # seconds the last report rewrite took
        self._last_ping = 0.0
        self._last_progress_log = time.monotonic()
        self._watch_health: dict[bytes, str] = {}  # the last supervise() result, for the status file
        self._started = False  # the indexer and the watchers are built once the cluster, if any, is joined (_start)

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    def run(self) -> int:
        self.store = Store.open(self.config.store_path())
        try:
            self.store.writer_lock.acquire()
        except LockBusy as exc:
            raise UsageError(f"{exc}: another `dedupd run` already uses this store") from None
        try:
            return self._serve()
        finally:
            self.store.writer_lock.release()

    def _serve(self) -> int:
        try:
            # The cluster first: one that cannot be reached ends the run before READY, with the store as it was. It
            # is left once the bulk phase ends: every later change is embedded here.
            with join(self.config) as ray_cluster:
                self._start(ray_cluster)
                self._settle_purges()  # before the walk, so a file put back into sight is indexed by it
                self._first_reconcile(ray_cluster)
            self._report_due = time.monotonic()  # a restart with nothing new still leaves a current report
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _start(self, ray_cluster: RayCluster | None) -> None:
        """The indexer and the watchers, then READY. With a cluster the fast preset resolves for where its model
        replicas run, and the local work after the bulk phase embeds with the same settings (one key per store)."""
        from dedupd.service.dirty import DirtyPaths
        from dedupd.service.watchers import Watchers

        config = ray_cluster.settle(self.config) if ray_cluster is not None else self.config
        embedder = self._embedder or LazyEmbedder(config)
        self.indexer = Indexer(self.store, config, embedder)
        self.indexer.stop = self.stop
        self.indexer.on_item = self._on_item
        self.indexer.on_tick = self._heartbeat
        self.dirty = DirtyPaths()
        self.watchers = Watchers(
            self.dirty, config.watch.mode, config.watch.poll_interval, ignore=self.indexer.options.ignore
        )
        self._started = True
        self._set_roots(self._configured_roots())
        sdnotify.ready("watching; reconciling roots")
        log.info("ready: store %s, %d roots, model %s", self.store.path, len(self.roots), embedder.model_id)

    def _shutdown(self) -> None:
        if not self._started:  # the cluster could not be joined: nothing ran, nothing was written, status included
            return
        sdnotify.stopping("stopping")
        self.health.phase = "stopping"
        self.watchers.stop()
        self.indexer.close()
        self._write_status()
        log.info("stopped")

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())

    # --- the main loop -------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        self.health.phase = "watching"
        while not self.stop.wait(TICK):
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - one bad batch is logged; the service stays up
                self.health.error(f"{type(exc).__name__}: {exc}")
                log.debug("step failed", exc_info=True)

    def _step(self) -> None:
        self._heartbeat()
        if self.reload_requested.is_set():
            self._reload()
        for root in self.dirty.overflowed():
            self._reconcile(root)
        self._process_settled()
        if time.monotonic() - self._last_rescan >= self.config.watch.rescan_interval:
            self._reconcile_all()
        self._maybe_report()

    def _heartbeat(self) -> None:
        """WATCHDOG=1 only while healthy: a daemon whose watchers are down and cannot be restarted gets restarted."""
        health = self._watch_health = self.watchers.supervise()
        now = time.monotonic()
        if now - self._last_ping < 1.0:
            return
        self._last_ping = now
        if all(h == "ok" or h.startswith("degraded") for h in health.values()):
            sdnotify.watchdog()
        self._write_status()

    def _on_item(self, counters) -> None:
        now = time.monotonic()
        if now - self._last_ping >= 1.0:
            self.health.progress = f"{counters.seen} files seen, {counters.embedded} embedded"
            sdnotify.status(f"{self.health.phase}: {self.health.progress}")
            self._heartbeat()
        if now - self._last_progress_log >= PROGRESS_LOG_EVERY:
            self._last_progress_log = now  # counts in the journal, not bars
            log.info("%s: %s", self.health.phase, self.health.progress)

    # --- roots -----------------------------------------------------------------------------------------------------

    def _configured_roots(self) -> list[bytes]:
        return [normalise_root(r) for r in self.config.roots]

    def _set_roots(self, roots: list[bytes]) -> None:
        for root in [r for r in self.roots if r not in roots]:
            self.watchers.remove_root(root)
            mark_root(self.store, root, state="removed", reason="no longer configured")
            log.info("stopped watching %s", path_text(root))
        for root in [r for r in roots if r not in self.roots]:
            backend = self.watchers.add_root(root)
            log.info("watching %s with %s (%s)", path_text(root), backend.kind, backend.reason)
        self.roots = roots

    def _first_reconcile(self, ray_cluster: RayCluster | None) -> None:
        """The bulk phase: with cluster.ray_address set, the first reconcile of every root (a new library's whole
        backlog) is embedded on that Ray cluster; every later change is embedded here."""
        if ray_cluster is not None:
            self.indexer.to_model = ray_cluster.embed_stage(self.indexer)
        try:
            self._reconcile_all()
        finally:
            self.indexer.to_model = None

    def _reconcile_all(self) -> None:
        for root in self.roots:
            if self.stop.is_set():
                return
            self._reconcile(root)
        self._last_rescan = time.monotonic()

    def _reconcile(self, root: bytes) -> None:
        self.health.phase = f"reconciling {path_text(root)}"
        sdnotify.status(self.health.phase)
        result = self.indexer.reconcile(root)
        if result.offline:
            log.warning(
                "%s is offline: %s; its files stay in the store and are never purged", path_text(root), result.offline
            )
        self._after(result)
        self.health.phase = "watching"

    def _process_settled(self) -> None:
        by_root: dict[bytes, list[bytes]] = {}
        for path in self.dirty.settled(self.config.watch.settle_seconds):
            root = self._root_of(path)
            if root is not None:
                by_root.setdefault(root, []).append(path)
        if any(is_companion_name(os.path.basename(p)) for batch in by_root.values() for p in batch):
            # A sidecar or Live Photo video came or went: nothing to index, but the report lists companions and they
            # may change which copy is kept.
            self._report_due = self._report_due or time.monotonic()
        online = set(online_roots(self.store))
        for root, batch in by_root.items():
            result = self.indexer.refresh_paths(root, batch, guard=True) if root in online else None
            if result is None or result.offline:
                self._reconcile(root)  # a returning root, or a mass loss: let the guarded sweep decide
            else:
                self._after(result)

    def _root_of(self, path: bytes) -> bytes | None:
        inside = [r for r in self.roots if path == r or path.startswith(r.rstrip(b"/") + b"/")]
        return max(inside, key=len) if inside else None

    def _after(self, result: IndexResult) -> None:
        c = result.counters
        if c.committed or result.removed:
            log.info(
                "indexed %d files (%d embedded, %d unreadable), %d removed, %d new pairs",
                c.committed,
                c.embedded,
                c.unreadable,
                result.removed,
                result.pairs,
            )
            self._report_due = self._report_due or time.monotonic()

    # --- reload ------------------------------------------------------------------------------------------------------

    def _reload(self) -> None:
        self.reload_requested.clear()
        sdnotify.reloading("reloading configuration")
        try:
            config = load_config(self.config_path) if self.config_path else self.config
        except Exception as exc:  # noqa: BLE001 - a bad edit must not kill a running daemon
            self.health.error(f"reload failed, keeping the old configuration: {exc}")
            sdnotify.ready("watching")
            return
        self.config = config
        self.indexer.config = self._indexer_config(config)
        before = set(self.roots)
        self._set_roots(self._configured_roots())
        for root in [r for r in self.roots if r not in before]:
            self._reconcile(root)
        sdnotify.ready("watching")
        log.info("configuration reloaded: %d roots", len(self.roots))

    def _indexer_config(self, new: Config) -> Config:
        """What a reload changes under the running indexer: what it walks and skips (scan.ignore, scan.sniff, the
        trash and gallery folders, watch.*). The model and the decoding stay as started: a vector's key and an
        unreadable verdict's stamp name them, so a change there takes effect at the next start (and says so)."""
        old = self.indexer.config
        fixed = {"max_pixels": old.scan.max_pixels, "decode_workers": old.scan.decode_workers}
        if new.model != old.model or new.scan.model_copy(update=fixed) != new.scan:
            log.warning("model.* and scan.max_pixels / scan.decode_workers take effect at the next start")
        return new.model_copy(update={"model": old.model, "scan": new.scan.model_copy(update=fixed)})

    # --- report and auto purge ---------------------------------------------------------------------------------------

    def _maybe_report(self) -> None:
        if self._report_due is None or len(self.dirty):
            return  # wait for changes to settle
        if time.monotonic() - self._last_report < report_gap(self.config.report.min_interval, self._report_cost):
            return
        self._report_due, started = None, time.monotonic()
        report = store_report(self.store, self.config, self.indexer.model)
        write_report(report, self.report_path())
        if self.config.report.html_dir:
            from dedupd.output.gallery import write_gallery

            write_gallery(report, self.config.report.html_dir, self.store.path)
        self._last_report = time.monotonic()
        self._report_cost = self._last_report - started
        if self.config.purge.auto:
            self._auto_purge()

    def report_path(self) -> Path:
        return Path(self.config.report.path) if self.config.report.path else self.store.path / "report.json"

    def _settle_purges(self) -> None:
        try:
            left = settle_interrupted(self.store, self.config, echo=log.info)
        except LockBusy:
            log.info("a purge is running: it settles what an interrupted one left open")
            return
        except Exception as exc:  # noqa: BLE001 - the daemon stays up; the next purge tries again
            left = 0
            self.health.error(f"settling interrupted purges: {exc}")
        if left:
            self.health.error(f"{left} interrupted purge acts could not be settled yet (see the log; they stay open)")

    def _auto_purge(self) -> None:
        try:
            roots = [
                r for r in online_roots(self.store) if r in self.roots
            ]  # its own: not a CLI scan's, nor a dropped one
            purge_from_store(self.store, self.config, self.indexer.model, log.info, self.stop.is_set, roots)
        except LockBusy:  # a purge, undo or trash empty from the command line: this cycle comes again after it
            log.info("auto purge: another purge holds the store's purge lock; trying again later")
            self._report_due = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - a failed item is logged; the daemon stays up
            self.health.error(f"auto purge: {exc}")

    # --- status for other processes ------------------------------------------------------------------------------

    def _write_status(self) -> None:
        data = {
            "pid": os.getpid(),
            "updated": time.time(),
            "phase": self.health.phase,
            "progress": self.health.progress,
            "backlog": len(self.dirty),
            "watchers": {path_text(r): f"{b.kind} ({b.reason})" for r, b in self.watchers.backends().items()},
            "health": {path_text(r): h for r, h in self._watch_health.items()},
            "last_errors": self.health.errors,
        }
        write_status(self.store.path, data)


def run(config_path: str | None, config: Config) -> int:
    service = Service(config, config_path)
    service.install_signals()
    return service.run()
