"""`dedupd run` as a real process with the tiny real model: sd_notify over a real unix socket, signals, the store
lock, kill -9 during the bulk embed, and readers beside the running daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import imagegen
import numpy as np
import support
import yaml

from dedupd.store import Store

WAIT = 90.0


def wait_for(predicate, timeout=WAIT, what="condition"):
    return support.wait_for(predicate, timeout, what)


def make_tree(root, n, size=(96, 72)):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        imagegen.photo(i, size).save(root / f"p{i:03d}.jpg", quality=90)
    return root


def write_config(path, store, roots, model, **extra):
    data = {
        "store": str(store),
        "roots": [str(r) for r in roots],
        "model": {"name": str(model), "batch_size": 2},
        "scan": {"commit_every": 4},
        "watch": {"settle_seconds": 0.3, "poll_interval": 0.3},
        "report": {"min_interval": 0.0},
    }
    for key, value in extra.items():
        data.setdefault(key, {}).update(value) if isinstance(value, dict) else data.__setitem__(key, value)
    path.write_text(yaml.safe_dump(data))
    return path


class Notify:
    """A real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.running = True
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def seen(self, prefix):
        return any(line.startswith(prefix) for m in self.messages for line in m.splitlines())

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


def start(config, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "dedupd", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def stop(proc, sig=signal.SIGTERM, timeout=60):
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_notify_signals_lock_and_readers(tmp_path, tiny_siglip2):
    root = make_tree(tmp_path / "photos", 6)
    config = write_config(tmp_path / "c.yaml", tmp_path / "store", [root], tiny_siglip2)
    notify = Notify(tmp_path / "notify.sock")
    proc = start(config, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"})
    try:
        wait_for(lambda: notify.seen("READY=1"), what="READY=1")
        wait_for(lambda: notify.seen("STATUS="), what="STATUS=")
        wait_for(lambda: notify.seen("WATCHDOG=1"), what="WATCHDOG=1")
        second = subprocess.run(
            [sys.executable, "-m", "dedupd", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2 and "another `dedupd run`" in second.stderr
        report = subprocess.run(
            [sys.executable, "-m", "dedupd", "report", "--config", str(config), "--out", "-"],
            capture_output=True,
            timeout=120,
        )
        assert report.returncode == 0, report.stderr
        assert "groups" in json.loads(report.stdout)
        wait_for(lambda: len(Store.open(tmp_path / "store").files()) == 6, what="the bulk embed")
        status = subprocess.run(
            [sys.executable, "-m", "dedupd", "status", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert f"daemon: pid {proc.pid}" in status.stdout and "watcher" in status.stdout
        # SIGHUP picks up a new root without a restart.
        extra = make_tree(tmp_path / "more", 2, (80, 60))
        write_config(config, tmp_path / "store", [root, extra], tiny_siglip2)
        proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: os.fsencode(str(extra / "p000.jpg")) in Store.open(tmp_path / "store").files(),
            what="the new root to be indexed",
        )
        assert proc.poll() is None
        code, err = stop(proc)
        assert code == 0, err
        wait_for(lambda: notify.seen("STOPPING=1"), timeout=5, what="STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()


def test_kill_9_during_bulk_embed_then_restart_gives_the_same_store(tmp_path, tiny_siglip2):
    root = make_tree(tmp_path / "photos", 40, (160, 120))
    # The reference: an uninterrupted run.
    ref_cfg = write_config(tmp_path / "ref.yaml", tmp_path / "ref-store", [root], tiny_siglip2)
    ref = start(ref_cfg)
    wait_for(lambda: (tmp_path / "ref-store" / "report.json").exists(), what="the reference run")
    assert stop(ref)[0] == 0
    # The interrupted one.
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "store", [root], tiny_siglip2)
    # Killed at its first commit of vectors (a step, not a moment polled from here, which a fast machine outruns).
    proc = start(cfg, {"DEDUPD_FAULT": "after-vectors:1"})
    try:
        proc.communicate(timeout=240)
        assert proc.returncode == -signal.SIGKILL
        assert 0 < Store.open(tmp_path / "store").row_counts()["vectors"] < 40
        proc = start(cfg)
        wait_for(lambda: (tmp_path / "store" / "report.json").exists(), what="the resumed run")
        assert stop(proc)[0] == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    a, b = Store.open(tmp_path / "ref-store"), Store.open(tmp_path / "store")
    fa = {p: (f.content, f.status, f.width, f.height) for p, f in a.files().items()}
    fb = {p: (f.content, f.status, f.width, f.height) for p, f in b.files().items()}
    assert fa == fb and len(fa) == 40
    counts = b.row_counts()
    assert counts["files"] == 40
    model_id = json.loads((tmp_path / "store" / "report.json").read_bytes())["model"]
    ca, va = a.vectors(model_id)
    cb, vb = b.vectors(model_id)
    assert counts["vectors"] == len(set(cb)) == 40  # no duplicate rows
    order = np.argsort(ca), np.argsort(cb)
    assert sorted(ca) == sorted(cb)
    assert np.allclose(va[order[0]], vb[order[1]], atol=1e-5)


def test_sigterm_mid_batch_exits_0_and_resumes_cleanly(tmp_path, tiny_siglip2):
    root = make_tree(tmp_path / "photos", 30, (160, 120))
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "store", [root], tiny_siglip2)
    proc = start(cfg)
    wait_for(
        lambda: (
            (tmp_path / "store" / "vectors.lance").exists()
            and Store.open(tmp_path / "store").row_counts()["vectors"] > 0
        ),
        what="a first commit",
    )
    code, err = stop(proc)
    assert code == 0, err
    proc = start(cfg)
    try:
        wait_for(lambda: (tmp_path / "store" / "report.json").exists(), what="the resumed run")
    finally:
        assert stop(proc)[0] == 0
    store = Store.open(tmp_path / "store")
    assert len(store.files()) == 30 and all(f.status == "ok" for f in store.files().values())
    assert store.row_counts()["vectors"] == 30
