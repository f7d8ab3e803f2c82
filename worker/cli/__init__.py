"""The ``imgmod`` command line: click parsing and printing; the work is done elsewhere.

Exit codes: 0 every reference done; 3 some failed or rejected (or still open after --timeout);
2 usage, configuration, input or connection error (one line saying what and where; nothing was
written unless it says so); 1 an unexpected error. No command prints a traceback unless run
with ``imgmod --debug``.

Commands by family: :mod:`~worker.cli.jobs` (enqueue, run, wait, resume, retry, status),
:mod:`~worker.cli.results` (export, report), :mod:`~worker.cli.governance` (decide, history),
:mod:`~worker.cli.actions` (act, restore), :mod:`~worker.cli.admin` (db, doctor, worker,
demo, emulator); what they share is in :mod:`~worker.cli.context`, the one-line errors in
:mod:`~worker.cli.errors`.
"""

from __future__ import annotations

import traceback
from dataclasses import replace
from typing import Any

import click

from worker.cli import actions, admin, costs, governance, jobs, results, status, ui
from worker.cli.context import CommandEnv
from worker.cli.errors import explain
from worker.settings import ConfigError, load_settings


class _Imgmod(click.Group):
    """The root group: turns whatever escapes a command into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                traceback.print_exception(exc)
            env = ctx.obj if isinstance(ctx.obj, CommandEnv) else None
            raise explain(exc, env.loaded if env else None) from None


def _read_settings(log_format: str | None) -> CommandEnv:
    """The settings, once for the whole command; ``--log-format`` overrides the variable (and
    reaches ``imgmod worker``'s Celery process through them)."""
    try:
        settings = load_settings()
    except ConfigError as exc:  # the command reports it (or, for doctor, diagnoses it)
        return CommandEnv(None, exc)
    return CommandEnv(replace(settings, log_format=log_format) if log_format else settings)


@click.group(cls=_Imgmod, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="imgmod")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text or one JSON object each (default IMGMOD_LOG_FORMAT, text).",
)
@click.option(
    "--debug",
    is_flag=True,
    help="Print the traceback of an error as well as its one-line explanation.",
)
@click.pass_context
def main(ctx: click.Context, log_format: str | None, debug: bool) -> None:
    """Moderate image archives with Alibaba Cloud Image Moderation 2.0.

    Settings come from IMGMOD_* environment variables (see README); credentials from
    ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET.
    """
    from worker.logs import configure_logging, credential_secrets

    env = ctx.obj = _read_settings(log_format)
    level, fmt = (env.loaded.log_level, env.loaded.log_format) if env.loaded else ("INFO", "text")
    configure_logging(level, log_format or fmt, credential_secrets())


for _command in (
    *jobs.COMMANDS,
    *status.COMMANDS,
    *results.COMMANDS,
    *governance.COMMANDS,
    *actions.COMMANDS,
    *admin.COMMANDS,
    *costs.COMMANDS,
    *ui.COMMANDS,
):
    main.add_command(_command)
for _name, _command in admin.emulator_commands().items():
    main.add_command(_command, _name)
