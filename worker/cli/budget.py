"""The command line of budgets: ``--max-calls``/``--dry-run``/``--json`` on enqueue and run, the
line ``imgmod run`` prints when rows wait on a budget, ``imgmod resume J [--max-calls N]``, and
the budget lines of ``imgmod status``. The work is in :mod:`worker.costs`,
:mod:`worker.store.budgets` and :mod:`worker.producer`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from worker.cli.context import (
    CommandEnv,
    celery_app,
    check_broker,
    find_job,
    open_database,
    pass_env,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from worker import store
    from worker.settings import Settings

OPTIONS = [
    click.option(
        "--max-calls",
        type=click.IntRange(min=1),
        default=None,
        help="Bill at most N calls for this job (rows past it wait as paused; imgmod resume J "
        "--max-calls M raises it).",
    ),
    click.option(
        "--dry-run",
        is_flag=True,
        help="Read and validate every input, then print what would be billed, cost and take; "
        "write, publish and call nothing.",
    ),
    click.option("--json", "as_json", is_flag=True, help="With --dry-run: one JSON object."),
]


def paused_note(engine: Engine, job: store.Job) -> None:
    """The one line saying why rows wait and what to do (after ``run``/``wait`` ended)."""
    from worker.store.budgets import paused_reasons

    for reason, n in paused_reasons(engine, job.id).items():
        if "daily" in reason:
            todo = (
                f"`imgmod resume {job.name}` after 00:00 UTC, or after raising "
                "IMGMOD_DAILY_CALL_BUDGET"
            )
        else:
            todo = f"`imgmod resume {job.name} --max-calls N` with a higher N"
        click.echo(f"{n:,} references {reason}: nothing lost; {todo}", err=True)


def budget_status(engine: Engine, job: store.Job, settings: Settings) -> dict[str, Any]:
    """The budget part of ``imgmod status --json`` for one job."""
    from worker.costs import budget_state
    from worker.store.budgets import paused_reasons

    state = budget_state(engine, job, settings.billing.daily_call_budget)
    return {**state.as_dict(), "paused": paused_reasons(engine, job.id)}


def print_budget(budget: dict[str, Any]) -> None:
    """The budget lines of ``imgmod status`` (only what is set or used)."""
    from worker.budget import usage

    for what, key in (("job budget (--max-calls)", "job"), ("daily budget (UTC today)", "daily")):
        figures = budget[key]
        if figures["cap"] or (key == "job" and figures["used"]):
            click.echo(f"  {usage(figures['cap'], figures['used']).line(what)}")
    for reason, n in budget["paused"].items():
        click.echo(f"  {n:,} {reason}")


@click.command()
@click.argument("job_name")
@click.option(
    "--max-calls",
    type=click.IntRange(min=1),
    default=None,
    help="Raise (or set) the job's cap on billed calls before continuing.",
)
@pass_env
def resume(env: CommandEnv, job_name: str, max_calls: int | None) -> None:
    """Re-enqueue JOB's pending, queued and expired-lease rows (after a broker loss), and its
    rows paused on a budget (after the UTC day turned, or with --max-calls N)."""
    from worker.producer import eager_top_up
    from worker.requeue import requeue_open
    from worker.store.budgets import set_max_calls, unpause_job

    settings = env.settings
    engine = open_database(settings)
    job = find_job(engine, job_name)
    app = celery_app(settings)
    check_broker(app, settings)
    if max_calls is not None:
        set_max_calls(engine, job.id, max_calls)
    paused = unpause_job(engine, job.id)
    n = requeue_open(
        engine,
        job,
        eager_top_up(engine, app, settings.queue_window, settings.batch.ids_per_message),
    )
    if paused:
        click.echo(f"reopened {paused} references paused on a budget")
    click.echo(f"re-enqueued {n} references")
