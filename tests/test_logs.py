"""Log line formats (journald vs terminal) and the periodic progress logger."""

from __future__ import annotations

import io
import logging
import os
import re

import pytest

from dedupd import logs

TERMINAL_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$")


@pytest.fixture(autouse=True)
def clean_logger(monkeypatch):
    """Plain environment, and leave the 'dedupd' logger as we found it."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    logger = logging.getLogger(logs.LOGGER_NAME)
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
    logger.setLevel(level)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _emit_all(level: str = "debug") -> None:
    log = logging.getLogger("dedupd.test")
    log.debug("dbg")
    log.info("started")
    log.warning("disk nearly full")
    log.error("cannot read %s", "a.jpg")
    log.critical("giving up")


def test_journal_prefixes_under_journal_stream(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    out = io.StringIO()
    logs.setup_logging("debug", stream=out)
    _emit_all()
    assert out.getvalue().splitlines() == [
        "<7>dbg",
        "<6>started",
        "<4>disk nearly full",
        "<3>cannot read a.jpg",
        "<2>giving up",
    ]


def test_journal_prefixes_under_invocation_id(monkeypatch):
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    out = io.StringIO()
    logs.setup_logging("info", stream=out)
    _emit_all()
    assert out.getvalue().splitlines() == ["<6>started", "<4>disk nearly full", "<3>cannot read a.jpg", "<2>giving up"]


def test_terminal_format_outside_systemd():
    out = io.StringIO()
    logs.setup_logging("info", stream=out)
    logging.getLogger("dedupd").warning("disk nearly full")
    line = out.getvalue().rstrip("\n")
    match = TERMINAL_LINE.match(line)
    assert match, line
    assert match.groups() == ("WARNING", "disk nearly full")
    assert "<" not in line


def test_terminal_wins_over_inherited_journal_env(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    out = FakeTerminal()
    logs.setup_logging("info", stream=out)
    logging.getLogger("dedupd").info("hello")
    assert TERMINAL_LINE.match(out.getvalue().rstrip("\n"))


def test_journal_stream_compared_with_a_real_file(monkeypatch, tmp_path):
    with open(tmp_path / "stderr.log", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.under_journal(stream) is True
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert logs.under_journal(stream) is False  # inherited variable, output redirected elsewhere
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert logs.under_journal(stream) is False


def test_traceback_lines_all_carry_the_priority(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    out = io.StringIO()
    logs.setup_logging("info", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("dedupd").exception("batch failed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "<3>batch failed"
    assert lines[-1] == "<3>RuntimeError: boom"
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)


def test_level_filtering_and_reconfiguring_does_not_duplicate():
    out = io.StringIO()
    logs.setup_logging("warning", stream=out)
    logs.setup_logging("WARNING", stream=out)
    log = logging.getLogger("dedupd")
    log.info("hidden")
    log.warning("shown")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("WARNING shown")


def test_stream_defaults_to_current_stderr(capsys):
    logs.setup_logging("info")
    logging.getLogger("dedupd").info("to stderr")
    assert "INFO to stderr" in capsys.readouterr().err


def test_unknown_level_is_rejected():
    with pytest.raises(ValueError, match="verbose"):
        logs.setup_logging("verbose", stream=io.StringIO())


# --- ProgressLog --------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_log_rate_limited(caplog):
    clock = FakeClock()
    seen: list[str] = []
    progress = logs.ProgressLog("embedded", total=50000, every=30, clock=clock, on_line=seen.append)
    with caplog.at_level(logging.INFO, logger="dedupd"):
        clock.now += 10
        progress.update(240)
        assert caplog.messages == []  # only 10 s in
        clock.now += 40
        progress.update(960)
        assert caplog.messages == ["embedded 1200/50000 (24 img/s)"]
        clock.now += 5
        progress.update(100)
        assert len(caplog.messages) == 1  # next line not before 30 s after the last
        progress.close()
        progress.close()
    assert caplog.messages[-1] == "embedded 1300/50000 (24 img/s)"
    assert len(caplog.messages) == 2
    assert seen == caplog.messages


def test_progress_log_without_total_and_with_postfix(caplog):
    clock = FakeClock()
    with (
        caplog.at_level(logging.INFO, logger="dedupd"),
        logs.ProgressLog("hashed", unit="file", every=60, clock=clock) as progress,
    ):
        progress.set_postfix_str("/srv/photos/2024")
        clock.now += 4
        progress.update(6)
    assert caplog.messages == ["hashed 6 (1.5 file/s) /srv/photos/2024"]
