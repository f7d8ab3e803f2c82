"""``imgmod costs``: billed calls per day, job and service from the SQL ledger, and the spend
when prices are set (:mod:`worker.costs`)."""

from __future__ import annotations

import json
from datetime import date

import click

from worker.cli.context import CommandEnv, find_job, open_database, pass_env
from worker.cli.errors import CliError
from worker.prices import HOW_TO_PRICE


def _day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CliError(f"--since {value!r}: use a date as YYYY-MM-DD (UTC)") from None


@click.command()
@click.option("--since", default=None, help="From this UTC day on (YYYY-MM-DD).")
@click.option("--job", "job_name", default=None, help="Only this job.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_env
def costs(env: CommandEnv, since: str | None, job_name: str | None, as_json: bool) -> None:
    """Billed calls per UTC day, job and service, and the estimated spend (with prices set)."""
    from worker.costs import costs as billed

    settings = env.settings
    first = _day(since)
    engine = open_database(settings)
    job_id = find_job(engine, job_name).id if job_name else None
    prices = settings.billing.prices
    report = billed(engine, prices, first, job_id)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    if not report.lines:
        click.echo("no billed calls recorded" + (f" since {first}" if first else ""))
        return
    for line in report.lines:
        cost = "" if line.cost is None else f"  {prices.show(line.cost)}"
        row = line.row
        click.echo(f"{row.day}  {row.job}  {row.service}  {row.calls:,} calls{cost}")
    for service, calls in report.by_service.items():
        click.echo(f"total {service}: {calls:,} calls")
    if prices:
        click.echo(f"estimated spend: {prices.show(report.total)}")
    else:
        click.echo(f"estimated spend: unknown; {HOW_TO_PRICE}")


COMMANDS = (costs,)
