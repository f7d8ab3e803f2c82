"""What every command shares: the settings read once, and the checks made before writing.

The root group reads the settings once per command into :class:`CommandEnv` (the click context
object) and every command takes them from there. A bad setting is kept, not raised: ``--help``
needs no settings, ``doctor`` diagnoses them itself, and any other command refuses with the
setting's own one-line message when it first asks for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from worker import store
from worker.cli.errors import (
    BROKER_DOWN_BEFORE_WRITES,
    BrokerUnreachable,
    CliError,
    InputRefused,
    explain,
)
from worker.settings import ConfigError, Settings

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.engine import Engine

    from worker.sources.oss_prefix import Filters


@dataclass(frozen=True)
class CommandEnv:
    """The settings of this command (``loaded``), or why they could not be read."""

    loaded: Settings | None
    problem: ConfigError | None = None

    @property
    def settings(self) -> Settings:
        """The settings, or a one-line exit-2 error naming the bad variable."""
        if self.loaded is None:
            raise CliError(str(self.problem))
        return self.loaded


pass_env = click.make_pass_decorator(CommandEnv)


def open_database(settings: Settings) -> Engine:
    """The engine, once the database is known to be at the current schema."""
    try:
        # One writer thread: it polls for SQLite's write lock rather than sleep beside workers.
        return store.ensure_schema(settings.database_url, eager_writes=True)
    except store.SchemaError as exc:
        raise CliError(str(exc)) from None


def celery_app(settings: Settings) -> Celery:
    """The process's one Celery app, built from this command's settings on first use."""
    from worker.app import process_app

    return process_app(settings)


def check_inputs(inputs: Sequence[str], folder_filters: Filters | None = None) -> None:
    """Refuse the command, before anything is written, when an input can't be read at all
    (a folder under ``--include``/``--exclude`` when given: it may hold no image by name)."""
    from worker.sources import InputError, check_input

    for path in inputs:
        try:
            check_input(path, folder_filters)
        except InputError as exc:
            raise InputRefused(f"{exc}; nothing was enqueued") from None


def check_broker(app: Celery, settings: Settings) -> None:
    """Connect to the broker once (a Redis PING) before anything is written, so an unreachable
    or password-protected broker is one line, not a half-enqueued job."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0)
            conn.default_channel  # noqa: B018 - opening the channel is the PING
    except Exception as exc:
        error = explain(exc, settings, broker_tail=BROKER_DOWN_BEFORE_WRITES)
        if not isinstance(error, BrokerUnreachable):
            raise
        raise error from exc


def find_job(engine: Engine, name: str) -> store.Job:
    job = store.get_job(engine, name)
    if job is None:
        known = ", ".join(j.name for j in store.list_jobs(engine)[:10]) or "none yet"
        raise CliError(f"no job named {name!r} (jobs: {known})")
    return job
