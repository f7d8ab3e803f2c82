"""Commands that act on decisions: act (quarantine OSS objects, or webhook events) and restore.

Nothing acts without ``--yes``: without it the command prints what it would do and exits 2
(nothing was done), so a backfill script can never quarantine on its own. ``--dry-run`` lists
every change and exits 0. After a run: 0 when every object (or event) went through, 3 when
some failed (each named on stderr, one line, and recorded as an event).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from worker.cli.context import CommandEnv, find_job, open_database, pass_env
from worker.cli.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, CliError
from worker.cli.governance import login_name
from worker.store.schema import DECISIONS

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from worker.actions import Change, Runner, Tally

SHOWN_WITHOUT_YES = 10


def _print_plan(changes: Iterator[Change], dry_run: bool) -> int:
    count = 0
    for change in changes:
        count += 1
        if dry_run or count <= SHOWN_WITHOUT_YES:
            click.echo(change.describe())
    if not dry_run and count > SHOWN_WITHOUT_YES:
        click.echo(f"... and {count - SHOWN_WITHOUT_YES:,} more")
    return count


def _finish(verb: str, tally: Tally, dry_run: bool, yes: bool) -> None:
    rest = f"{tally.unchanged:,} unchanged, {tally.not_oss:,} not OSS objects"
    if dry_run:
        click.echo(f"dry run: {tally.changes:,} objects would {verb}; {rest}")
        sys.exit(EXIT_OK)
    if not yes:
        click.echo(f"{tally.changes:,} objects would {verb}; {rest}")
        click.echo("nothing was done: add --yes to do it (--dry-run lists every change)", err=True)
        sys.exit(EXIT_USAGE)


def _runner(env: CommandEnv, engine: Engine, actor: str) -> Runner:
    from worker.actions import Pacer, Runner
    from worker.settings import ConfigError, load_credentials

    try:
        credentials = load_credentials()
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    settings = env.settings
    return Runner(engine, settings, credentials, actor, Pacer(settings.act.qps))


def _run(runner: Runner, changes: Iterator[Change], tally: Tally, verb: str) -> None:
    from worker.actions import run_changes

    run_changes(runner, changes, tally, lambda line: click.echo(line, err=True))
    done = tally.changes - tally.failed
    click.echo(
        f"{done:,} objects {verb}, {tally.failed:,} failed, {tally.unchanged:,} unchanged, "
        f"{tally.not_oss:,} not OSS objects"
    )
    sys.exit(EXIT_INCOMPLETE if tally.failed else EXIT_OK)


@click.command()
@click.argument("job_name")
@click.option("--decision", type=click.Choice(DECISIONS), required=True,
              help="Act on items whose latest decision is this.")  # fmt: skip
@click.option("--action", type=click.Choice(["quarantine", "webhook"]), required=True)
@click.option("--mode", type=click.Choice(["freeze", "move"]), default="freeze", show_default=True,
              help="quarantine: freeze (ACL private) or move (to --prefix).")  # fmt: skip
@click.option("--prefix", default="quarantine/", show_default=True,
              help="--mode move: the key prefix objects move under.")  # fmt: skip
@click.option("--url", default=None, help="--action webhook: where events are POSTed.")
@click.option("--dry-run", is_flag=True, help="List what would change; change nothing.")
@click.option("--yes", is_flag=True, help="Really act (without it: print the plan, exit 2).")
@click.option("--user", default=None, help="Who acts, for the log (default: your login name).")
@pass_env
def act(
    env: CommandEnv,
    job_name: str,
    decision: str,
    action: str,
    mode: str,
    prefix: str,
    url: str | None,
    dry_run: bool,
    yes: bool,
    user: str | None,
) -> None:
    """Quarantine JOB's OSS objects whose latest decision is --decision, or POST a signed
    webhook event per image. Idempotent: a rerun changes nothing already done.

    Exit 0: all done; 3: some objects (or events) failed, one line each; 2: nothing done
    (no --yes, or a bad option or setting).
    """
    from worker.actions import ActionRefused, Tally, check_prefix, plan

    if url is not None and action != "webhook":
        raise CliError("--url is for --action webhook; quarantine acts on the OSS objects")
    if action == "webhook":
        _webhook(env, job_name, decision, url, dry_run, yes, login_name(user))
        return
    try:
        check_prefix(prefix)
    except ActionRefused as exc:
        raise CliError(str(exc)) from None
    engine = open_database(env.settings)
    job = find_job(engine, job_name)
    verb = "be frozen" if mode == "freeze" else f"move under {prefix}"
    if dry_run or not yes:
        tally = Tally()
        _print_plan(plan(engine, job.id, decision, mode=mode, prefix=prefix, undo=False,
                         tally=tally), dry_run)  # fmt: skip
        _finish(verb, tally, dry_run, yes)
    runner = _runner(env, engine, login_name(user))
    tally = Tally()
    changes = plan(engine, job.id, decision, mode=mode, prefix=prefix, undo=False, tally=tally)
    _run(runner, changes, tally, "frozen" if mode == "freeze" else "moved")


@click.command()
@click.argument("job_name")
@click.option("--decision", type=click.Choice(DECISIONS), default=None,
              help="Only items whose latest decision is this (e.g. pass).")  # fmt: skip
@click.option("--mode", type=click.Choice(["freeze", "move"]), default=None,
              help="Only this kind of quarantine (default: both).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="List what would change; change nothing.")
@click.option("--yes", is_flag=True, help="Really restore (without it: print the plan, exit 2).")
@click.option("--user", default=None, help="Who restores, for the log (default: your login name).")
@pass_env
def restore(
    env: CommandEnv,
    job_name: str,
    decision: str | None,
    mode: str | None,
    dry_run: bool,
    yes: bool,
    user: str | None,
) -> None:
    """Undo what `imgmod act` did to JOB's OSS objects, from the log: ACLs put back, moved
    objects back at their original keys. Idempotent.

    Exit 0: all done; 3: some objects failed, one line each; 2: nothing done (no --yes).
    """
    from worker.actions import Tally, plan

    engine = open_database(env.settings)
    job = find_job(engine, job_name)
    if dry_run or not yes:
        tally = Tally()
        _print_plan(plan(engine, job.id, decision, mode=mode, undo=True, tally=tally), dry_run)
        _finish("be restored", tally, dry_run, yes)
    runner = _runner(env, engine, login_name(user))
    tally = Tally()
    _run(runner, plan(engine, job.id, decision, mode=mode, undo=True, tally=tally), tally,
         "restored")  # fmt: skip


def _webhook(
    env: CommandEnv,
    job_name: str,
    decision: str,
    url: str | None,
    dry_run: bool,
    yes: bool,
    actor: str,
) -> None:
    from worker.actions import Pacer
    from worker.store.actions import decided_pages
    from worker.webhook import Signer, WebhookUrlInvalid, check_url, send_events, shown_url

    settings = env.settings
    if not url:
        raise CliError("--action webhook needs --url URL (where the events are POSTed)")
    if not settings.act.webhook_secret:
        raise CliError(
            "set IMGMOD_WEBHOOK_SECRET (16 characters or more, shared with the receiver) to sign "
            "webhook events"
        )
    try:
        check_url(url, settings.allow_http)
    except WebhookUrlInvalid as exc:
        raise CliError(str(exc)) from None
    signer = Signer(settings.act.webhook_secret)
    engine = open_database(settings)
    job = find_job(engine, job_name)
    if dry_run or not yes:
        count = sum(len(page) for page in decided_pages(engine, job.id, decision))
        head = "dry run: up to" if dry_run else "up to"
        click.echo(f"{head} {count:,} events would be POSTed to {shown_url(url)} "
                   f"(decision {decision})")  # fmt: skip
        if dry_run:
            sys.exit(EXIT_OK)
        click.echo("nothing was done: add --yes to send them", err=True)
        sys.exit(EXIT_USAGE)
    sent = send_events(
        engine,
        decided_pages(engine, job.id, decision),
        job.name,
        url,
        signer,
        actor=actor,
        timeout=(settings.connect_timeout, settings.read_timeout),
        pace=Pacer(settings.act.qps).wait,
        on_error=lambda line: click.echo(line, err=True),
    )
    click.echo(
        f"{sent.delivered:,} events delivered, {sent.failed:,} failed, "
        f"{sent.unchanged:,} already delivered"
    )
    sys.exit(EXIT_INCOMPLETE if sent.failed else EXIT_OK)


COMMANDS = (act, restore)
