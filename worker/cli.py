"""The ``imgmod`` command line.

Exit codes: 0 every reference done; 3 some failed or rejected (or still open after --timeout);
2 usage, configuration, input or connection error (one line saying what and where; nothing was
written unless it says so); 1 an unexpected error. No command prints a traceback unless run
with ``imgmod --debug``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import IO, Any

import click
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from worker import store
from worker.settings import ConfigError, Settings, load_settings

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
# The database is away (restarting, failing over, network): workers wait it out, so do we.
DATABASE_DOWN = (OperationalError, InterfaceError)
OPEN_STATES = ("pending", "queued", "running")
_SETTINGS_KEY = "imgmod.settings"  # ctx.meta: the settings this command loaded, for errors
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
    """``scheme://user:***@host/...``: a URL fit for a message (no password)."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:***@", url)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0].strip().rstrip(".") if text else type(exc).__name__


_BROKER_DOWN_AFTER_WRITES = (
    "Rows recorded before this stay pending: `imgmod resume JOB` queues them once the broker "
    "is back"
)


def explain(
    exc: Exception, settings: Settings | None, broker_tail: str = _BROKER_DOWN_AFTER_WRITES
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
    if isinstance(exc, DATABASE_DOWN):
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
            raise explain(exc, ctx.meta.get(_SETTINGS_KEY)) from None


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_SETTINGS_KEY] = settings
    return settings


def _engine(settings: Settings) -> Engine:
    try:
        return store.ensure_schema(settings.database_url)
    except store.SchemaError as exc:
        raise CliError(str(exc)) from None


def _check_inputs(inputs: Sequence[str]) -> None:
    """Refuse the command, before anything is written, when an input can't be read at all."""
    from worker.sources import InputError, check_input

    for path in inputs:
        try:
            check_input(path)
        except InputError as exc:
            raise InputRefused(f"{exc}; nothing was enqueued") from None


def _check_broker(app: Any, settings: Settings) -> None:
    """Connect to the broker once (a Redis PING) before anything is written, so an unreachable
    or password-protected broker is one line, not a half-enqueued job."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0)
            conn.default_channel  # noqa: B018 - opening the channel is the PING
    except Exception as exc:
        error = explain(exc, settings, broker_tail="Nothing was written")
        if not isinstance(error, BrokerUnreachable):
            raise
        raise error from exc


def _job(engine: Engine, name: str) -> store.Job:
    job = store.get_job(engine, name)
    if job is None:
        known = ", ".join(j.name for j in store.list_jobs(engine)[:10]) or "none yet"
        raise CliError(f"no job named {name!r} (jobs: {known})")
    return job


def _app() -> Any:
    from worker.app import make_app

    return make_app()


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
def main(log_format: str | None, debug: bool) -> None:
    """Moderate image archives with Alibaba Cloud Image Moderation 2.0.

    Settings come from IMGMOD_* environment variables (see README); credentials from
    ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET.
    """
    from worker.logs import configure_logging, credential_secrets

    try:
        settings = load_settings()
        level, fmt = settings.log_level, settings.log_format
    except ConfigError:  # the command itself reports it (or, for doctor, diagnoses it)
        level, fmt = "INFO", "text"
    configure_logging(level, log_format or fmt, credential_secrets())
    if log_format:
        os.environ["IMGMOD_LOG_FORMAT"] = log_format  # for `imgmod worker`'s Celery process


# ---------------------------------------------------------------- database


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations to IMGMOD_DATABASE_URL."""
    settings = _settings()
    store.upgrade(settings.database_url, revision)
    engine = store.make_engine(settings.database_url)
    click.echo(f"database at revision {store.current_revision(engine)}")


@db.command("current")
def db_current() -> None:
    """Print the database's migration revision."""
    engine = store.make_engine(_settings().database_url)
    click.echo(store.current_revision(engine) or "unmigrated (run `imgmod db upgrade`)")


# ---------------------------------------------------------------- producing

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


def input_options(fn: Any) -> Any:
    for option in reversed(_input_options):
        fn = option(fn)
    return fn


def _open_job(
    engine: Engine,
    settings: Settings,
    name: str,
    service: str | None,
    info_type: str | None,
    referer: str | None,
) -> store.Job:
    from worker.params import InvalidParameter, validate_info_type, validate_service

    try:
        svc = validate_service(service or settings.service)
        info = validate_info_type(settings.info_type if info_type is None else info_type)
        if referer is not None and len(referer) > 256:
            raise CliError("--referer: longer than 256 characters")
        return store.get_or_create_job(engine, name, svc, info, referer)
    except InvalidParameter as exc:
        option = {"Service": "--service", "infoType": "--info-type"}.get(exc.field, exc.field)
        raise CliError(f"{option}: {exc.reason}") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _enqueue(
    settings: Settings,
    engine: Engine,
    job: store.Job,
    inputs: Sequence[str],
    oss_region: str | None,
    referer: str | None,
) -> None:
    from worker.producer import enqueue_records
    from worker.sources import read_inputs
    from worker.window import Refiller

    # Whenever the window is not full: the producer's batches are small, and a full window
    # lets the workers' own refills (at half) wait long.
    refiller = Refiller(engine, _app(), settings.queue_window, low_water=1.0)
    records = read_inputs(
        list(inputs), oss_region=oss_region, referer=referer or job.referer, stdin=sys.stdin.buffer
    )
    with _progress("enqueue") as update:
        summary = enqueue_records(
            engine,
            job,
            records,
            refiller.top_up,
            on_batch=lambda s: update(
                f"{s.lines} lines, {s.accepted} accepted, "
                f"{s.duplicates} duplicate, {s.rejected} rejected"
            ),
        )
    click.echo(
        f"job {job.name}: {summary.accepted} accepted, {summary.duplicates} duplicate, "
        f"{summary.rejected} rejected ({summary.lines} lines)"
    )
    for sample in summary.rejected_samples:
        click.echo(f"  rejected {sample}", err=True)
    waiting = store.state_counts(engine, job.id)["pending"]
    if waiting:
        click.echo(
            f"{waiting} references wait in the database for room in the broker "
            f"(IMGMOD_QUEUE_WINDOW={settings.queue_window}): workers publish them as they go",
            err=True,
        )


@main.command()
@input_options
def enqueue(
    inputs: tuple[str, ...],
    job_name: str,
    service: str | None,
    info_type: str | None,
    referer: str | None,
    oss_region: str | None,
) -> None:
    """Read INPUT files (.txt, .csv, .jsonl, or - for stdin) into a job and queue them."""
    settings = _settings()
    _check_inputs(inputs)
    engine = _engine(settings)
    _check_broker(_app(), settings)
    job = _open_job(engine, settings, job_name, service, info_type, referer)
    _enqueue(settings, engine, job, inputs, oss_region, referer)


@main.command()
@input_options
@click.option(
    "--stall-seconds",
    default=120.0,
    show_default=True,
    help="Re-enqueue open rows when nothing progresses for this long.",
)
@click.option("--timeout", default=None, type=float, help="Give up waiting after this long.")
def run(
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
    settings = _settings()
    _check_inputs(inputs)
    engine = _engine(settings)
    _check_broker(_app(), settings)
    job = _open_job(engine, settings, job_name, service, info_type, referer)
    _enqueue(settings, engine, job, inputs, oss_region, referer)
    sys.exit(_wait(engine, job, stall_seconds, timeout))


@main.command()
@click.argument("job_name")
@click.option("--stall-seconds", default=120.0, show_default=True)
@click.option("--timeout", default=None, type=float)
def wait(job_name: str, stall_seconds: float, timeout: float | None) -> None:
    """Wait until every reference of JOB is done, failed or rejected."""
    engine = _engine(_settings())
    sys.exit(_wait(engine, _job(engine, job_name), stall_seconds, timeout))


@main.command()
@click.argument("job_name")
def resume(job_name: str) -> None:
    """Re-enqueue JOB's pending, queued and expired-lease rows (after a broker loss)."""
    settings = _settings()
    engine = _engine(settings)
    job = _job(engine, job_name)
    _check_broker(_app(), settings)
    n = _requeue_open(engine, job, include_queued=True)
    click.echo(f"re-enqueued {n} references")


@main.command()
@click.argument("job_name")
@click.option("--code", default=None, help="Only rows whose last code is this (e.g. 405).")
def retry(job_name: str, code: str | None) -> None:
    """Re-run JOB's failed rows."""
    from worker.queue import publish_ids

    settings = _settings()
    engine = _engine(settings)
    job = _job(engine, job_name)
    app = _app()
    _check_broker(app, settings)
    ids = store.reset_failed(engine, job.id, code)
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        publish_ids(app, chunk)
        store.mark_queued(engine, chunk)
    click.echo(f"re-queued {len(ids)} failed references")


def _requeue_open(engine: Engine, job: store.Job, include_queued: bool) -> int:
    """Put the job's lost work (queued, expired leases) back to ``pending`` and fill the
    publishing window; returns how many of its rows are back in line. Rows beyond the window
    wait in SQL for the workers' refills, as after ``imgmod enqueue``."""
    from worker.window import Refiller

    total = store.reopen_open_items(engine, job.id, include_queued=include_queued)
    Refiller(engine, _app(), _settings().queue_window, low_water=1.0).top_up()
    return total


# ---------------------------------------------------------------- watching


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    """``update(text, completed=None, total=None)``: a live bar on a terminal (a spinner while
    the total is unknown), plain lines every 10 s otherwise (logs, cron mail)."""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[text]}"),
            console=Console(stderr=True),
            transient=False,
        )
        with progress:
            task = progress.add_task(label, total=None, text="")

            def live(text: str, completed: int | None = None, total: int | None = None) -> None:
                progress.update(task, text=text, completed=completed, total=total)

            yield live
        return
    last = [0.0]

    def update(text: str, completed: int | None = None, total: int | None = None) -> None:
        now = time.monotonic()
        if now - last[0] >= 10:
            last[0] = now
            click.echo(f"{label}: {text}", err=True)

    yield update


def _stall_floor(settings: Settings) -> float:
    """The longest a job with nothing lost may show no new attempt: one retry countdown (at
    most the backoff cap) plus one call. Stall detection waiting less would republish rows
    whose retry is only waiting its turn, and defeat the backoff."""
    return settings.backoff_cap + settings.connect_timeout + settings.read_timeout + 1.0


def _wait(engine: Engine, job: store.Job, stall_seconds: float, timeout: float | None) -> int:
    """Wait for the job with live progress; republish open rows when it stalls.

    Stalled means: no row closed and no attempt started for ``stall_seconds`` (raised to the
    longest legitimate pause, see :func:`_stall_floor`). Retries waiting out their backoff
    start attempts, so they never count as a stall; a broker that lost its messages does.
    Meanwhile it tops up the publishing window too, like every worker does.
    """
    from worker.queue import BrokerUnavailable
    from worker.window import Refiller, RefillLoop

    settings = _settings()
    refills = RefillLoop(Refiller(engine, _app(), settings.queue_window))
    floor = _stall_floor(settings)
    if stall_seconds < floor:
        click.echo(
            f"stall detection waits {floor:.0f}s, not {stall_seconds:.0f}s: "
            "a retry may legitimately pause that long (backoff cap plus one call)",
            err=True,
        )
        stall_seconds = floor
    started = time.monotonic()
    last_closed, last_change = -1, time.monotonic()
    last_attempts = store.attempts_made(engine, job.id)
    first_closed = None
    outage_since: float | None = None
    with _progress(f"job {job.name}") as update:
        while True:
            try:
                counts = store.state_counts(engine, job.id)
            except DATABASE_DOWN as exc:
                if outage_since is None:
                    outage_since = time.monotonic()
                    click.echo(
                        f"database unavailable ({type(exc.orig).__name__}); waiting", err=True
                    )
                if timeout is not None and time.monotonic() - started > timeout:
                    click.echo("timeout: the database is still unavailable", err=True)
                    return EXIT_INCOMPLETE
                last_change = time.monotonic()  # an outage is not a stall
                time.sleep(1.0)
                continue
            if outage_since is not None:
                click.echo(f"database back after {time.monotonic() - outage_since:.0f}s", err=True)
                outage_since = None
            open_rows = sum(counts.get(s, 0) for s in OPEN_STATES)
            closed = sum(counts.values()) - open_rows
            now = time.monotonic()
            if first_closed is None:
                first_closed = closed
            if closed != last_closed:
                last_closed, last_change = closed, now
            rate = (closed - first_closed) / max(now - started, 1e-6)
            eta = f"{open_rows / rate:.0f}s" if rate > 0 else "?"
            update(
                f"done {counts.get('done', 0)}, failed {counts.get('failed', 0)}, "
                f"rejected {counts.get('rejected', 0)}, open {open_rows}, "
                f"{rate:.1f}/s, ETA {eta}",
                closed,
                closed + open_rows,
            )
            if open_rows == 0:
                break
            if now - last_change >= stall_seconds:
                try:
                    attempts = store.attempts_made(engine, job.id)
                except DATABASE_DOWN:
                    continue  # the next poll reports the outage
                if attempts != last_attempts:  # retries under way: slow, not stalled
                    last_attempts = attempts
                else:
                    try:
                        n = _requeue_open(engine, job, include_queued=True)
                    except BrokerUnavailable as exc:
                        click.echo(f"no progress, and the broker is unavailable ({exc})", err=True)
                    else:
                        click.echo(
                            f"no progress for {stall_seconds:.0f}s with {open_rows} open rows: "
                            f"re-enqueued {n} (broker lost its messages?)",
                            err=True,
                        )
                last_change = now
            if timeout is not None and now - started > timeout:
                click.echo(f"timeout: {open_rows} references still open", err=True)
                return EXIT_INCOMPLETE
            refills.tick()
            time.sleep(0.5)
    store.finish_job_if_complete(engine, job.id)
    _print_counts(job.name, counts)
    bad = counts.get("failed", 0) + counts.get("rejected", 0)
    return EXIT_INCOMPLETE if bad else EXIT_OK


def _print_counts(name: str, counts: dict[str, int]) -> None:
    parts = ", ".join(f"{state} {counts[state]}" for state in sorted(counts) if counts[state])
    click.echo(f"job {name}: {parts or 'empty'}")


@main.command()
@click.argument("job_name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(job_name: str | None, as_json: bool) -> None:
    """Counts by state for JOB (or every job)."""
    engine = _engine(_settings())
    jobs = [_job(engine, job_name)] if job_name else store.list_jobs(engine)
    rows = []
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
        _print_counts(str(row["job"]), row["states"])  # type: ignore[arg-type]


@main.command()
@click.argument("job_name")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option("--status", "states", default="", help="Comma list of states.")
@click.option("--risk", default="", help="Comma list of risk levels (high,medium,low,none).")
@click.option("--label", default=None, help="Only items with this label.")
@click.option("--min-confidence", type=float, default=None)
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-")
def export(
    job_name: str,
    fmt: str,
    states: str,
    risk: str,
    label: str | None,
    min_confidence: float | None,
    output: IO[str],
) -> None:
    """Stream JOB's references with their results as JSONL or CSV."""
    from worker.reports import ExportFilter, export_records, write_csv, write_jsonl

    engine = _engine(_settings())
    job = _job(engine, job_name)
    flt = ExportFilter(
        states=_split(states), risk_levels=_split(risk), label=label, min_confidence=min_confidence
    )
    records = export_records(engine, job, flt)
    (write_jsonl if fmt == "jsonl" else write_csv)(records, output)


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@main.command()
@click.argument("job_name")
@click.option("--json", "as_json", is_flag=True)
def report(job_name: str, as_json: bool) -> None:
    """Totals by state and risk, top labels, failures by code, billable calls."""
    from worker.reports import build_report

    engine = _engine(_settings())
    rep = build_report(engine, _job(engine, job_name))
    if as_json:
        click.echo(json.dumps(asdict(rep), indent=2, default=str))
        return
    click.echo(render_report(rep))


def render_report(rep: Any) -> str:
    job = rep.job
    lines = [
        f"Job {job.name} ({job.service}; {job.total_lines} lines read, "
        f"{job.duplicates} duplicates skipped)"
    ]
    lines.append("  states:         " + _fmt_counts(rep.by_state))
    lines.append("  risk levels:    " + _fmt_counts(rep.by_risk))
    lines.append(f"  billable calls: {rep.billable_calls}")
    if rep.failures_by_code:
        lines.append("  failures by code: " + _fmt_counts(rep.failures_by_code))
    if rep.top_labels:
        lines.append("  top labels:                               images  max confidence")
        for label, count, max_conf in rep.top_labels:
            conf = "-" if max_conf is None else f"{max_conf:.2f}"
            lines.append(f"    {label:<40} {count:>6}  {conf:>6}")
    for sample in rep.rejected_samples:
        lines.append(f"  rejected in {sample.source}, {sample.error}")
    return "\n".join(lines)


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "-"


# ---------------------------------------------------------------- operations


@main.command()
def doctor() -> None:
    """Check settings, credentials, database, broker, limiter and endpoint; nothing is billed.

    Exit 0 when every check passes, 1 otherwise (each failure says how to fix it).
    """
    from worker.doctor import all_ok, render, run_checks

    checks = run_checks()
    encoding = (sys.stdout.encoding or "").lower().replace("-", "")
    click.echo(render(checks, unicode=encoding == "utf8"))
    sys.exit(0 if all_ok(checks) else 1)


# ---------------------------------------------------------------- processes


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--concurrency",
    "-c",
    type=int,
    default=None,
    help="Threads (default IMGMOD_WORKER_CONCURRENCY).",
)
@click.option("--loglevel", "-l", default=None)
@click.option("--hostname", "-n", default=None)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    concurrency: int | None,
    loglevel: str | None,
    hostname: str | None,
    celery_args: tuple[str, ...],
) -> None:
    """Start a Celery worker (same as `celery -A worker worker`, friendlier defaults)."""
    from worker.local import worker_command

    settings = _settings()
    _preflight_worker(settings)
    argv = worker_command(
        concurrency or settings.worker_concurrency, loglevel or settings.log_level, hostname
    )
    argv += list(celery_args)
    os.execv(sys.executable, argv)  # noqa: S606 - replace this process with the worker


def _preflight_worker(settings: Settings) -> None:
    """What a worker needs before it takes a message: the database at the current schema, the
    broker, and credentials. Checked once here, so a misconfigured worker says so in one line
    instead of failing every message (``imgmod doctor`` also proves the credentials work)."""
    from worker.settings import load_credentials

    _engine(settings).dispose()
    _check_broker(_app(), settings)
    try:
        load_credentials()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


@main.command()
@click.option("--images", default=300, show_default=True, help="How many references.")
def demo(images: int) -> None:
    """Run a real job end to end against the local emulator, then print its report."""
    from worker.demo import run_demo

    sys.exit(run_demo(images))


def _register_emulator_commands() -> None:
    try:
        from worker.emulator.command import emulator_command, images_command
    except ImportError:  # pragma: no cover - the emulator ships with the package
        return
    main.add_command(emulator_command, "emulator")
    main.add_command(images_command, "sample-images")


_register_emulator_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
