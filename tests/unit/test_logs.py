"""Log formats and the secret filter: pure logging, no services."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker.logs import (
    MASK,
    JsonFormatter,
    RedactSecrets,
    configure_logging,
    connect_worker_signals,
)

SECRET = "s3cr3t-AccessKey-Secret"  # noqa: S105 - a made-up value the tests look for


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Leave the root logger as we found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.NOTSET)


def _logger_to(
    stream: io.StringIO, fmt: str = "json", secrets: tuple[str, ...] = ()
) -> logging.Logger:
    configure_logging("INFO", fmt, secrets, stream=stream)
    return logging.getLogger("imgmod.test")


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_format_writes_one_object_per_record_with_the_basic_fields(root_logging) -> None:
    out = io.StringIO()
    _logger_to(out).info("hello %s", "world")
    (line,) = _lines(out)
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "imgmod.test"
    assert entry["ts"].endswith("+00:00") and "T" in entry["ts"]
    assert not {"job", "item", "code", "attempts", "request_id"} & set(entry)


def test_json_format_carries_the_outcome_fields_passed_as_extra(root_logging) -> None:
    out = io.StringIO()
    _logger_to(out).info(
        "job=%s item=%s code=%s",
        7,
        42,
        "405",
        extra={"job": 7, "item": 42, "code": "405", "attempts": 2, "request_id": "RID-1"},
    )
    entry = json.loads(_lines(out)[0])
    assert (entry["job"], entry["item"], entry["code"], entry["attempts"]) == (7, 42, "405", 2)
    assert entry["request_id"] == "RID-1"


def test_json_format_keeps_a_traceback_on_the_same_line(root_logging) -> None:
    out = io.StringIO()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        _logger_to(out).exception("it failed")
    (line,) = _lines(out)
    entry = json.loads(line)
    assert "RuntimeError: boom" in entry["exc"] and "Traceback" in entry["exc"]


def test_text_format_is_one_readable_line(root_logging) -> None:
    out = io.StringIO()
    _logger_to(out, "text").warning("careful")
    (line,) = _lines(out)
    assert "WARNING" in line and "imgmod.test: careful" in line


def test_configure_logging_twice_leaves_one_handler_of_ours(root_logging) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "text", stream=first)
    configure_logging("WARNING", "json", stream=second)
    log = logging.getLogger("imgmod.test")
    log.info("dropped")
    log.warning("kept")
    assert first.getvalue() == ""
    assert [json.loads(x)["message"] for x in _lines(second)] == ["kept"]


def test_configure_logging_rejects_an_unknown_format(root_logging) -> None:
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("INFO", "xml", stream=io.StringIO())


def test_alembic_chatter_is_quiet_below_debug(root_logging) -> None:
    out = io.StringIO()
    configure_logging("INFO", "text", stream=out)
    logging.getLogger("alembic.runtime.plugins").info("setup plugin x")
    assert out.getvalue() == ""
    configure_logging("DEBUG", "text", stream=out)
    logging.getLogger("alembic.runtime.plugins").info("setup plugin x")
    assert "setup plugin x" in out.getvalue()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secret_in_message_or_args_is_masked(root_logging, fmt: str) -> None:
    out = io.StringIO()
    log = _logger_to(out, fmt, (SECRET,))
    log.info(f"header was {SECRET}")
    log.info("arg %s and %r", SECRET, {"secret": SECRET})
    log.info("named %(key)s", {"key": f"x{SECRET}x"})
    text = out.getvalue()
    assert SECRET not in text
    assert text.count(MASK) >= 4


def test_secret_in_a_traceback_or_an_extra_field_is_masked(root_logging) -> None:
    out = io.StringIO()
    log = _logger_to(out, "json", (SECRET,))
    try:
        raise ValueError(f"bad secret {SECRET}")
    except ValueError:
        log.exception("failed", extra={"request_id": SECRET})
    assert SECRET not in out.getvalue()
    entry = json.loads(_lines(out)[0])
    assert MASK in entry["exc"] and entry["request_id"] == MASK


def test_secret_logged_by_a_third_party_logger_is_masked(root_logging) -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "text", (SECRET,), stream=out)
    logging.getLogger("urllib3.connectionpool").debug("sent Authorization: %s", SECRET)
    assert SECRET not in out.getvalue() and MASK in out.getvalue()


def test_numbers_and_short_values_are_left_alone() -> None:
    flt = RedactSecrets(["abc", "", SECRET])
    assert flt.secrets == (SECRET,)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "n=%d", (5,), None)
    flt.filter(record)
    assert record.getMessage() == "n=5"
    assert SECRET not in repr(flt)


def test_json_formatter_serialises_values_json_does_not_know() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.item = object()  # not JSON: rendered with str()
    assert json.loads(JsonFormatter().format(record))["item"].startswith("<object")


def test_celery_setup_logging_signal_installs_our_format(root_logging) -> None:
    from celery.signals import setup_logging

    connect_worker_signals("INFO", "json")
    try:
        setup_logging.send(
            sender=None, loglevel=logging.WARNING, logfile=None, format="", colorize=False
        )
        ours = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
        assert len(ours) == 1
        assert logging.getLogger().level == logging.WARNING  # Celery's --loglevel wins
    finally:
        setup_logging.disconnect(dispatch_uid="imgmod.logs")


def test_default_handler_writes_to_the_stderr_of_the_moment(root_logging, capsys) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("imgmod.test").info("now")
    assert json.loads(capsys.readouterr().err)["message"] == "now"


def test_the_last_worker_logging_configuration_wins(root_logging) -> None:
    from celery.signals import setup_logging

    connect_worker_signals("INFO", "text")
    connect_worker_signals("INFO", "json")
    try:
        setup_logging.send(sender=None, loglevel=None, logfile=None, format="", colorize=False)
        (ours,) = [h for h in logging.getLogger().handlers if getattr(h, "_imgmod_handler", False)]
        assert isinstance(ours.formatter, JsonFormatter)
    finally:
        setup_logging.disconnect(dispatch_uid="imgmod.logs")


# --- text lines cannot be forged -----------------------------------------------------------------

FORGED = "name\r\x1b[2K[2026-11-25 03:12:45,101: ERROR/MainProcess] imgmod.task: forged"


def test_a_carriage_return_and_ansi_codes_cannot_forge_a_text_line(root_logging) -> None:
    out = io.StringIO()
    _logger_to(out, "text").warning("ignoring unknown CSV column(s) %s", FORGED)
    (line,) = _lines(out)
    assert "\r" not in line and "\x1b" not in line
    assert line.count("ERROR/") == 1 and "WARNING/" in line.split("ERROR/")[0]
    assert "name\\r\\x1b[2K[2026-11-25" in line  # shown, escaped, not hidden


@pytest.mark.parametrize(
    ("char", "escaped"),
    [
        ("\n", "\\n"),
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
        ("\x9b", "\\x9b"),  # C1 CSI: an escape sequence in one character
        ("\u2028", "\\u2028"),  # line separator
        ("\u202e", "\\u202e"),  # right-to-left override: hides what follows
    ],
)
def test_every_control_character_in_a_text_message_is_escaped(
    root_logging, char: str, escaped: str
) -> None:
    out = io.StringIO()
    _logger_to(out, "text").info("a%sb", char)
    (line,) = _lines(out)
    assert line.endswith(f"a{escaped}b")


def test_tabs_and_non_ascii_text_are_left_alone(root_logging) -> None:
    out = io.StringIO()
    _logger_to(out, "text").info("列\tcolumn é")
    assert _lines(out)[0].endswith("列\tcolumn é")


def test_a_traceback_keeps_its_lines_but_not_its_control_characters(root_logging) -> None:
    out = io.StringIO()
    log = _logger_to(out, "text")
    try:
        raise ValueError("bad\r\x1b[31mvalue")
    except ValueError:
        log.exception("failed")
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert "Traceback (most recent call last):\n" in text
    assert "ValueError: bad\\r\\x1b[31mvalue" in text


def test_json_lines_stay_one_line_and_carry_the_text_verbatim(root_logging) -> None:
    out = io.StringIO()
    _logger_to(out, "json").warning("%s", FORGED)
    (line,) = _lines(out)
    assert "\r" not in line and json.loads(line)["message"] == FORGED
