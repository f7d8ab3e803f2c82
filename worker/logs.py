"""Log output for the CLI and the Celery workers: text or one JSON object per line, secrets masked.

:func:`configure_logging` installs one handler on the root logger; every process of imgmod calls
it once (the CLI at start, a worker from Celery's ``setup_logging`` signal, see
:func:`connect_worker_signals`, which also stops Celery from installing its own handlers).

JSON lines carry ``ts``, ``level``, ``logger``, ``message`` and, when the record has them (the
task passes them with ``extra=``), the structured fields of :data:`STRUCTURED_FIELDS`, so a log
pipeline can count outcomes by code or find every line of one item without parsing the message.

Text lines are one line per record whatever the record holds: :class:`TextFormatter` escapes
control characters (``\\r``, ``\\n``, ANSI escape sequences, Unicode line separators and bidi
overrides) in the message, so input text that reaches a log line (a CSV header cell, a URL)
cannot forge another line, rewrite the terminal or hide itself. JSON lines are escaped by JSON.

:class:`RedactSecrets` is defence in depth: nothing in imgmod logs the AccessKey secret, but a
record that does (a third-party library echoing a header, an exception quoting a URL) has it
replaced by ``***`` before any handler writes it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import IO, Any

FORMATS = ("text", "json")
STRUCTURED_FIELDS = ("job", "item", "code", "attempts", "request_id")
TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"
MASK = "***"
# A secret shorter than this is not masked: replacing every "a" of every line helps nobody.
MIN_SECRET_LENGTH = 6

_HANDLER_MARK = "_imgmod_handler"
# C0 controls (tab excepted), DEL, C1 controls, line/paragraph separators and the bidi controls
# that reorder what a terminal shows.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# The same, with the line feed allowed: a traceback is several lines by design.
_CONTROL_BUT_NEWLINE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def escape_controls(text: str, keep_newlines: bool = False) -> str:
    """``text`` with control characters written as escapes (``\\r``, ``\\x1b``, ``\\u2028``)."""
    pattern = _CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(_escape, text)


# Libraries whose INFO lines are noise for an operator (alembic announces every plugin it loads
# on every command); they log at WARNING unless the level is DEBUG.
NOISY_LOGGERS = ("alembic",)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; exceptions go in ``exc`` as text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in STRUCTURED_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, one line per record: control characters in the line are escaped; a
    traceback or stack keeps its line breaks and nothing else."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, escaping each part: the traceback text is cached on the
        # record by whichever handler formats first, so it is escaped here, not when made.
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = escape_controls(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + escape_controls(record.exc_text, keep_newlines=True)
        if record.stack_info:
            text += "\n" + escape_controls(self.formatStack(record.stack_info), keep_newlines=True)
        return text


class RedactSecrets(logging.Filter):
    """Replace every configured secret in a record's message, arguments and traceback by ***.

    Attach it to handlers (not loggers): a handler filter sees the records every child logger
    propagates, a logger filter only its own.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(
            sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        )

    def __repr__(self) -> str:
        return f"RedactSecrets({len(self.secrets)} secrets)"

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def _arg(self, value: object) -> object:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, int | float | bool) or value is None:
            return value
        text = str(value)
        cleaned = self.redact(text)
        return value if cleaned == text else cleaned

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        elif self.redact(str(record.msg)) != str(record.msg):
            record.msg = self.redact(str(record.msg))
        if isinstance(record.args, dict):
            record.args = {k: self._arg(v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(self._arg(v) for v in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        for name in STRUCTURED_FIELDS:
            value = record.__dict__.get(name)
            if isinstance(value, str):
                record.__dict__[name] = self.redact(value)
        return True


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (test runners swap it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr


def make_formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    return value


def configure_logging(
    level: int | str = "INFO",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every record to ``stream`` (default: the current stderr) as ``fmt``, secrets masked.

    Idempotent: a second call replaces the handler the first one installed (other handlers,
    such as pytest's, are left alone). Returns the handler.
    """
    handler: logging.Handler = StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(RedactSecrets(secrets))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_level(level))
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
        )
    return handler


def credential_secrets() -> tuple[str, ...]:
    """The AccessKey secret and STS token of this process's configuration, if any."""
    from worker.settings import ConfigError, load_credentials

    try:
        creds = load_credentials()
    except ConfigError:
        return ()
    return tuple(s for s in (creds.access_key_secret, creds.security_token) if s)


def connect_worker_signals(level: str, fmt: str) -> None:
    """Make Celery workers log through :func:`configure_logging` (called by the app module).

    A receiver of ``setup_logging`` replaces Celery's own set-up entirely, so there is one
    handler and one format for Celery's lines and ours. Celery's ``--loglevel`` wins over
    ``level`` when given.
    """
    from celery.signals import setup_logging

    def on_setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
        configure_logging(loglevel or level, fmt, credential_secrets())

    setup_logging.disconnect(dispatch_uid="imgmod.logs")  # the last configuration wins
    setup_logging.connect(on_setup_logging, weak=False, dispatch_uid="imgmod.logs")
