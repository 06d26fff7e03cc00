"""sd_notify client: real AF_UNIX datagram sockets stand in for systemd's notify socket."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from dedupd.service import sdnotify

_MAX_SUN_PATH = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


def _bound_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.fixture
def socket_dir(tmp_path: Path):
    """tmp_path, unless its path is too long for sun_path; then a short directory under /tmp."""
    if len(str(tmp_path / "notify")) <= _MAX_SUN_PATH:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="sdn") as short:
        yield Path(short)


@pytest.fixture
def receiver(socket_dir: Path, monkeypatch: pytest.MonkeyPatch):
    path = socket_dir / "notify"
    sock = _bound_socket(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_receiver(monkeypatch: pytest.MonkeyPatch):
    name = f"dedupd-test-{uuid.uuid4().hex}"
    sock = _bound_socket("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready(receiver):
    assert sdnotify.ready() is True
    assert _recv(receiver) == ["READY=1"]


def test_ready_with_status(receiver):
    assert sdnotify.ready("watching 3 roots") is True
    assert _recv(receiver) == ["READY=1", "STATUS=watching 3 roots"]


def test_status(receiver):
    assert sdnotify.status("embedded 1200/50000 (24 img/s)") is True
    assert _recv(receiver) == ["STATUS=embedded 1200/50000 (24 img/s)"]


def test_watchdog(receiver):
    assert sdnotify.watchdog() is True
    assert _recv(receiver) == ["WATCHDOG=1"]


def test_stopping(receiver):
    assert sdnotify.stopping() is True
    assert _recv(receiver) == ["STOPPING=1"]
    assert sdnotify.stopping("closing the store") is True
    assert _recv(receiver) == ["STOPPING=1", "STATUS=closing the store"]


def test_reloading_carries_monotonic_usec(receiver):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = _recv(receiver)
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_extend_timeout(receiver):
    assert sdnotify.extend_timeout(90) is True
    assert _recv(receiver) == ["EXTEND_TIMEOUT_USEC=90000000"]


def test_notify_fields_keys_upper_cased_and_newlines_flattened(receiver):
    assert sdnotify.notify(status="two\nlines", ready=True) is True
    assert _recv(receiver) == ["STATUS=two lines", "READY=1"]


def test_several_messages_in_order(receiver):
    assert sdnotify.ready()
    assert sdnotify.status("busy")
    assert sdnotify.watchdog()
    assert sdnotify.stopping()
    assert [_recv(receiver) for _ in range(4)] == [["READY=1"], ["STATUS=busy"], ["WATCHDOG=1"], ["STOPPING=1"]]


def test_abstract_socket(abstract_receiver):
    assert sdnotify.ready() is True
    assert _recv(abstract_receiver) == ["READY=1"]
    assert sdnotify.status("abstract ok") is True
    assert _recv(abstract_receiver) == ["STATUS=abstract ok"]
    assert sdnotify.watchdog() is True
    assert _recv(abstract_receiver) == ["WATCHDOG=1"]
    assert sdnotify.stopping() is True
    assert _recv(abstract_receiver) == ["STOPPING=1"]


def test_no_notify_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify(READY=1) is False
    assert sdnotify.ready() is False
    assert sdnotify.status("x") is False
    assert sdnotify.watchdog() is False
    assert sdnotify.stopping() is False
    assert sdnotify.reloading() is False
    assert sdnotify.extend_timeout(1) is False


def test_empty_notify_sends_nothing(receiver):
    assert sdnotify.notify() is False


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234", "@"])
def test_unsupported_addresses_are_a_no_op(monkeypatch, value):
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.ready() is False


def test_send_failure_returns_false_and_does_not_raise(socket_dir, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(socket_dir / "nobody-listens-here"))
    with caplog.at_level("DEBUG", logger="dedupd"):
        assert sdnotify.ready() is False
    assert any("failed" in r.getMessage() for r in caplog.records)


def test_send_to_regular_file_returns_false(socket_dir, monkeypatch):
    not_a_socket = socket_dir / "plain-file"
    not_a_socket.write_text("")
    monkeypatch.setenv("NOTIFY_SOCKET", str(not_a_socket))
    assert sdnotify.watchdog() is False


# --- watchdog interval ------------------------------------------------------------


@pytest.fixture
def no_watchdog_env(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    return monkeypatch


def test_watchdog_interval_is_half_the_timeout(no_watchdog_env):
    no_watchdog_env.setenv("WATCHDOG_USEC", "120000000")
    assert sdnotify.watchdog_timeout() == 120.0
    assert sdnotify.watchdog_interval() == 60.0


def test_watchdog_interval_with_our_pid(no_watchdog_env):
    no_watchdog_env.setenv("WATCHDOG_USEC", "3000000")
    no_watchdog_env.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 1.5


def test_watchdog_pid_mismatch_means_none(no_watchdog_env):
    no_watchdog_env.setenv("WATCHDOG_USEC", "120000000")
    no_watchdog_env.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_timeout() is None
    assert sdnotify.watchdog_interval() is None


def test_watchdog_unset_means_none(no_watchdog_env):
    assert sdnotify.watchdog_interval() is None
    no_watchdog_env.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() is None


@pytest.mark.parametrize("usec", ["0", "-5", "soon", "1.5e6", " "])
def test_watchdog_bad_usec_means_none(no_watchdog_env, usec):
    no_watchdog_env.setenv("WATCHDOG_USEC", usec)
    assert sdnotify.watchdog_interval() is None


def test_watchdog_bad_pid_means_none(no_watchdog_env):
    no_watchdog_env.setenv("WATCHDOG_USEC", "1000000")
    no_watchdog_env.setenv("WATCHDOG_PID", "self")
    assert sdnotify.watchdog_interval() is None
