"""What the user reads when a command cannot go on: one line, an exit code, no traceback.

Every exception that escapes a command ends here (:func:`explain`); each situation has its own
class, so a caller (and a test) can tell "the database is away" from "the input is unreadable"
without parsing the text. Passwords of the configured URLs never reach a message.
"""

from __future__ import annotations

import re

import click
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.settings import Settings

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
# run/wait: every row closed, some paused on a budget (worker.budget); `imgmod resume` goes on.
EXIT_BUDGET = 4
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):([^@\s]*)@")


class CliError(click.ClickException):
    """A usage or configuration error: one line, exit 2."""

    exit_code = EXIT_USAGE


class InputRefused(CliError):
    """An input file cannot be read at all; refused before anything is written."""


class DatabaseUnreachable(CliError):
    """IMGMOD_DATABASE_URL could not be reached, or refused us."""


class BrokerUnreachable(CliError):
    """IMGMOD_BROKER_URL could not be reached, or refused us."""


class UnexpectedError(click.ClickException):
    """Anything else: still one line (the traceback is for ``--debug``), exit 1."""

    exit_code = EXIT_CRASH


def mask_url(url: str) -> str:
    """``scheme://user:***@host/...``: a URL fit for a message (no password).

    Works on free text too (a driver's error quoting its URL), unlike
    :func:`worker.settings.mask_url`, which takes exactly one URL.
    """
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:***@", url)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0].strip().rstrip(".") if text else type(exc).__name__


BROKER_DOWN_AFTER_WRITES = (
    "Rows recorded before this stay pending: `imgmod resume JOB` queues them once the broker "
    "is back"
)
BROKER_DOWN_BEFORE_WRITES = "Nothing was written"


def explain(
    exc: Exception, settings: Settings | None, broker_tail: str = BROKER_DOWN_AFTER_WRITES
) -> click.ClickException:
    """The one line (and exit code) the user sees for an exception that escaped a command.

    Pure: the exception and the settings in force (None when they never loaded) decide it.
    Passwords of the configured URLs never reach the message.
    """
    import kombu.exceptions
    import redis.exceptions
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from worker.sources import InputError

    db_url = mask_url(settings.database_url) if settings else "IMGMOD_DATABASE_URL"
    broker_url = mask_url(settings.broker_url) if settings else "IMGMOD_BROKER_URL"
    reason = mask_url(_first_line(exc))
    for url in (settings.database_url, settings.broker_url) if settings else ():
        match = _URL_PASSWORD.search(url)
        if match and match.group(2):
            reason = reason.replace(match.group(2), "***")
    if isinstance(exc, InputError):
        return InputRefused(f"{exc}; nothing was enqueued")
    # The database is away (restarting, failing over, network).
    if isinstance(exc, (OperationalError, InterfaceError)):
        return DatabaseUnreachable(
            f"cannot reach the database {db_url}: {reason}; check IMGMOD_DATABASE_URL (host, "
            "port, user, password, database name) and that the server is running"
        )
    if isinstance(exc, (ArgumentError, NoSuchModuleError)):
        return CliError(
            f"IMGMOD_DATABASE_URL={db_url} is not a usable database URL ({reason}); "
            "use sqlite:///path or postgresql://user@host/db"
        )
    if isinstance(exc, (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError)):
        return BrokerUnreachable(
            f"cannot reach the broker {broker_url}: {reason}; check IMGMOD_BROKER_URL (host, "
            f"port, password) and that Redis is running. {broker_tail}"
        )
    return UnexpectedError(
        f"unexpected {type(exc).__name__}: {reason} (run `imgmod --debug ...` for the traceback)"
    )
