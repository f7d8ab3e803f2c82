"""Commands that run or check the installation: db, doctor, worker, demo (and the emulator's)."""

from __future__ import annotations

import sys
from dataclasses import replace

import click

from worker import store
from worker.cli.context import CommandEnv, celery_app, check_broker, open_database, pass_env
from worker.cli.errors import CliError
from worker.settings import ConfigError, Settings


@click.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_env
def db_upgrade(env: CommandEnv, revision: str) -> None:
    """Apply migrations to IMGMOD_DATABASE_URL."""
    from alembic.util.exc import CommandError

    settings = env.settings
    try:
        store.upgrade(settings.database_url, revision)
    except CommandError as exc:  # an unknown --revision, a database ahead of this imgmod
        raise CliError(f"db upgrade --revision {revision}: {exc}") from None
    engine = store.make_engine(settings.database_url)
    click.echo(f"database at revision {store.current_revision(engine)}")


@db.command("current")
@pass_env
def db_current(env: CommandEnv) -> None:
    """Print the database's migration revision."""
    engine = store.make_engine(env.settings.database_url)
    click.echo(store.current_revision(engine) or "unmigrated (run `imgmod db upgrade`)")


@click.command()
@click.option(
    "--oss",
    "oss_prefixes",
    multiple=True,
    metavar="oss://BUCKET/PREFIX",
    help="Also check these credentials may list this OSS prefix (repeatable).",
)
@click.option("--oss-region", default=None, help="The buckets' region (default IMGMOD_REGION).")
def doctor(oss_prefixes: tuple[str, ...], oss_region: str | None) -> None:
    """Check settings, credentials, database, broker, limiter and endpoint; nothing is billed.

    With --oss, also list one key of each OSS prefix (oss:ListObjects). Exit 0 when every
    check passes, 1 otherwise (each failure says how to fix it).
    """
    from worker.doctor import all_ok, render, run_checks

    checks = run_checks()  # reads the settings itself: a bad one is a finding, not an error
    if oss_prefixes:
        from worker.doctor_oss import run_oss_checks

        checks += run_oss_checks(oss_prefixes, oss_region)
    encoding = (sys.stdout.encoding or "").lower().replace("-", "")
    click.echo(render(checks, unicode=encoding == "utf8"))
    sys.exit(0 if all_ok(checks) else 1)


def worker_launch(
    settings: Settings, loglevel: str | None = None, hostname: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The Celery worker's argv, and the settings its environment must carry.

    Pure. The worker reads its settings from the environment (``celery -A worker`` builds the
    app at import), so the values this command resolved (``-c``, ``--log-format``) travel there
    as well as in argv: the broker, database and HTTP pools the app sizes from
    ``worker_concurrency`` then match the threads Celery starts.
    """
    from worker.processes import worker_command

    argv = worker_command(settings.worker_concurrency, loglevel or settings.log_level, hostname)
    carried = {
        "IMGMOD_WORKER_CONCURRENCY": str(settings.worker_concurrency),
        "IMGMOD_LOG_FORMAT": settings.log_format,
    }
    return argv, carried


def worker_group_launch(
    settings: Settings,
    processes: int,
    loglevel: str | None = None,
    hostname: str | None = None,
) -> list[tuple[list[str], dict[str, str]]]:
    """:func:`worker_launch` for each of ``processes`` worker processes, the worker's threads
    (``settings.worker_concurrency``) split over them, each under its own node name; with
    metrics on, process ``i`` (from 0) serves them on ``IMGMOD_METRICS_PORT + i``. Pure."""
    from worker.supervise import member_hostname, threads_per_process

    each = replace(
        settings, worker_concurrency=threads_per_process(settings.worker_concurrency, processes)
    )
    launches = []
    for i in range(processes):
        argv, carried = worker_launch(each, loglevel, member_hostname(hostname, i + 1))
        if settings.metrics_port:
            carried["IMGMOD_METRICS_PORT"] = str(settings.metrics_port + i)
        launches.append((argv, carried))
    return launches


@click.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=None,
    help="Threads, split over the processes (default IMGMOD_WORKER_CONCURRENCY).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default IMGMOD_WORKER_PROCESSES: one per core).",
)
@click.option("--loglevel", "-l", default=None)
@click.option("--hostname", "-n", default=None)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_env
def worker(
    env: CommandEnv,
    concurrency: int | None,
    processes: int | None,
    loglevel: str | None,
    hostname: str | None,
    celery_args: tuple[str, ...],
) -> None:
    """Start the worker: one Celery worker process per core (IMGMOD_WORKER_PROCESSES), each
    a thread pool (as `celery -A worker worker`), sharing one rate limiter."""
    from worker.supervise import Child, processes_for, supervise, usable_cores

    settings = env.settings
    if concurrency is not None:
        settings = replace(settings, worker_concurrency=concurrency)
    count = processes_for(processes or settings.worker_processes, usable_cores())
    _preflight_worker(settings)
    if count == 1:
        from worker.processes import exec_worker

        argv, carried = worker_launch(settings, loglevel, hostname)
        exec_worker([*argv, *celery_args], carried)
    launches = worker_group_launch(settings, count, loglevel, hostname)
    sys.exit(supervise([Child([*argv, *celery_args], carried) for argv, carried in launches]))


def _preflight_worker(settings: Settings) -> None:
    """What a worker needs before it takes a message: the database at the current schema, the
    broker, and credentials. Checked once here, so a misconfigured worker says so in one line
    instead of failing every message (``imgmod doctor`` also proves the credentials work)."""
    from worker.settings import load_credentials

    open_database(settings).dispose()
    check_broker(celery_app(settings), settings)
    try:
        load_credentials()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


@click.command()
@click.option("--images", default=300, show_default=True, help="How many references.")
def demo(images: int) -> None:
    """Run a real job end to end against the local emulator, then print its report."""
    from worker.demo import run_demo

    sys.exit(run_demo(images))


COMMANDS: tuple[click.Command, ...] = (db, doctor, worker, demo)


def emulator_commands() -> dict[str, click.Command]:
    """``imgmod emulator`` and ``imgmod sample-images``, when the emulator is installed."""
    try:
        from worker.emulator.command import emulator_command, images_command
    except ImportError:  # pragma: no cover - the emulator ships with the package
        return {}
    return {"emulator": emulator_command, "sample-images": images_command}
