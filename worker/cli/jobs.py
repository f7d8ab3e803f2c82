"""Commands that put work in line and follow it: enqueue, run, wait, resume, retry, status.

Each checks what it needs (inputs, database, broker) before it writes anything, then calls
:mod:`worker.producer` or :mod:`worker.watch` and prints what they report.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from worker import store
from worker.cli.context import (
    CommandEnv,
    celery_app,
    check_broker,
    check_inputs,
    find_job,
    open_database,
    pass_env,
)
from worker.cli.errors import CliError
from worker.cli.progress import print_counts, progress_bar, render_follow

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.engine import Engine

    from worker.settings import Settings

# The API's field names, as the producer's validation reports them -> the options that set them.
_OPTION_OF_FIELD = {"Service": "--service", "infoType": "--info-type", "referer": "--referer"}

_input_options = [
    click.argument("inputs", nargs=-1, required=True),
    click.option("--job", "job_name", required=True, help="Job name; reusing it adds to the job."),
    click.option("--service", default=None, help="baselineCheck_global or aigcDetector_global."),
    click.option(
        "--info-type",
        default=None,
        help="Ext data to ask for: comma list of customImage, textInImage, publicFigure, "
        'logoData (default IMGMOD_INFO_TYPE, customImage,textInImage; "" for none).',
    ),
    click.option("--referer", default=None, help="Referer sent for every image without its own."),
    click.option("--oss-region", default=None, help="Region for oss://bucket/key lines."),
]


def input_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_input_options):
        fn = option(fn)
    return fn


def _waiting_note(waiting: int, settings: Settings) -> None:
    if waiting:
        click.echo(
            f"{waiting} references wait in the database for room in the broker "
            f"(IMGMOD_QUEUE_WINDOW={settings.queue_window}): workers publish them as they go",
            err=True,
        )


def _enqueue(
    env: CommandEnv,
    inputs: tuple[str, ...],
    job_name: str,
    service: str | None,
    info_type: str | None,
    referer: str | None,
    oss_region: str | None,
) -> tuple[Engine, Celery, store.Job]:
    """Check inputs, database and broker (in that order: nothing is written when one fails),
    open the job and enqueue the inputs into it."""
    from worker.producer import eager_top_up, enqueue_inputs, open_job
    from worker.vendor import InvalidParameter

    settings = env.settings
    check_inputs(inputs)
    engine = open_database(settings)
    app = celery_app(settings)
    check_broker(app, settings)
    try:
        job = open_job(
            engine, settings, job_name, service=service, info_type=info_type, referer=referer
        )
    except InvalidParameter as exc:
        raise CliError(f"{_OPTION_OF_FIELD.get(exc.field, exc.field)}: {exc.reason}") from None
    except ValueError as exc:  # the name is taken by a job of another service
        raise CliError(str(exc)) from None
    with progress_bar("enqueue") as update:
        done = enqueue_inputs(
            engine,
            job,
            inputs,
            eager_top_up(engine, app, settings.queue_window),
            oss_region=oss_region,
            referer=referer,
            stdin=sys.stdin.buffer,
            on_batch=lambda s: update(
                f"{s.lines} lines, {s.accepted} accepted, "
                f"{s.duplicates} duplicate, {s.rejected} rejected"
            ),
        )
    summary = done.summary
    click.echo(
        f"job {job.name}: {summary.accepted} accepted, {summary.duplicates} duplicate, "
        f"{summary.rejected} rejected ({summary.lines} lines)"
    )
    for sample in summary.rejected_samples:
        click.echo(f"  rejected {sample}", err=True)
    _waiting_note(done.waiting, settings)
    return engine, app, job


def _follow(
    env: CommandEnv,
    engine: Engine,
    app: Celery,
    job: store.Job,
    stall: float,
    timeout: float | None,
) -> int:
    from worker.watch import follow_job

    return render_follow(job.name, follow_job(engine, app, env.settings, job, stall, timeout))


@click.command()
@input_options
@pass_env
def enqueue(
    env: CommandEnv,
    inputs: tuple[str, ...],
    job_name: str,
    service: str | None,
    info_type: str | None,
    referer: str | None,
    oss_region: str | None,
) -> None:
    """Read INPUT files (.txt, .csv, .jsonl, or - for stdin) into a job and queue them."""
    _enqueue(env, inputs, job_name, service, info_type, referer, oss_region)


_stall_option = click.option(
    "--stall-seconds",
    default=120.0,
    show_default=True,
    help="Re-enqueue open rows when nothing progresses for this long.",
)
_timeout_option = click.option(
    "--timeout", default=None, type=float, help="Give up waiting after this long."
)


@click.command()
@input_options
@_stall_option
@_timeout_option
@pass_env
def run(
    env: CommandEnv,
    inputs: tuple[str, ...],
    job_name: str,
    service: str | None,
    info_type: str | None,
    referer: str | None,
    oss_region: str | None,
    stall_seconds: float,
    timeout: float | None,
) -> None:
    """Enqueue INPUT files, then wait for the job with live progress."""
    engine, app, job = _enqueue(env, inputs, job_name, service, info_type, referer, oss_region)
    sys.exit(_follow(env, engine, app, job, stall_seconds, timeout))


@click.command()
@click.argument("job_name")
@_stall_option
@_timeout_option
@pass_env
def wait(env: CommandEnv, job_name: str, stall_seconds: float, timeout: float | None) -> None:
    """Wait until every reference of JOB is done, failed or rejected."""
    engine = open_database(env.settings)
    job = find_job(engine, job_name)
    sys.exit(_follow(env, engine, celery_app(env.settings), job, stall_seconds, timeout))


@click.command()
@click.argument("job_name")
@pass_env
def resume(env: CommandEnv, job_name: str) -> None:
    """Re-enqueue JOB's pending, queued and expired-lease rows (after a broker loss)."""
    from worker.producer import eager_top_up, requeue_open

    settings = env.settings
    engine = open_database(settings)
    job = find_job(engine, job_name)
    app = celery_app(settings)
    check_broker(app, settings)
    n = requeue_open(engine, job, eager_top_up(engine, app, settings.queue_window))
    click.echo(f"re-enqueued {n} references")


@click.command()
@click.argument("job_name")
@click.option("--code", default=None, help="Only rows whose last code is this (e.g. 405).")
@pass_env
def retry(env: CommandEnv, job_name: str, code: str | None) -> None:
    """Re-run JOB's failed rows."""
    from worker.producer import eager_top_up, retry_failed

    settings = env.settings
    engine = open_database(settings)
    job = find_job(engine, job_name)
    app = celery_app(settings)
    check_broker(app, settings)  # before the reset: a dead broker leaves the rows failed
    retried = retry_failed(engine, job, eager_top_up(engine, app, settings.queue_window), code)
    click.echo(f"re-queued {retried.count} failed references")
    _waiting_note(retried.waiting, settings)


@click.command()
@click.argument("job_name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_env
def status(env: CommandEnv, job_name: str | None, as_json: bool) -> None:
    """Counts by state for JOB (or every job)."""
    engine = open_database(env.settings)
    jobs = [find_job(engine, job_name)] if job_name else store.list_jobs(engine)
    rows: list[dict[str, Any]] = []
    for job in jobs:
        counts = store.state_counts(engine, job.id)
        rows.append(
            {
                "job": job.name,
                "service": job.service,
                "info_type": job.info_type,
                "created_at": job.created_at.isoformat() if job.created_at else None,
                "finished_at": job.finished_at.isoformat() if job.finished_at else None,
                "lines": job.total_lines,
                "accepted": job.accepted,
                "duplicates": job.duplicates,
                "states": counts,
            }
        )
    if as_json:
        click.echo(json.dumps(rows if job_name is None else rows[0], indent=2))
        return
    for row in rows:
        print_counts(row["job"], row["states"])


COMMANDS = (enqueue, run, wait, resume, retry, status)
