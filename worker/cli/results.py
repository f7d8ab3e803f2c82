"""Commands that read a job back out: export (JSONL, CSV) and report."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from worker.cli.context import CommandEnv, find_job, open_database, pass_env
from worker.cli.errors import CliError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from worker.store.jobs import Job


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command()
@click.argument("job_name")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option("--status", "states", default="", help="Comma list of states.")
@click.option("--risk", default="", help="Comma list of risk levels (high,medium,low,none).")
@click.option("--label", default=None, help="Only items with this label.")
@click.option("--min-confidence", type=float, default=None)
@click.option(
    "--decision",
    default="",
    help="Comma list of current decisions (block,review,pass,unscanned; see `imgmod decide`).",
)
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-")
@pass_env
def export(
    env: CommandEnv,
    job_name: str,
    fmt: str,
    states: str,
    risk: str,
    label: str | None,
    min_confidence: float | None,
    decision: str,
    output: IO[str],
) -> None:
    """Stream JOB's references with their results as JSONL or CSV."""
    from worker.export_services import csv_fields
    from worker.reports import ExportFilter, export_records, write_csv, write_jsonl
    from worker.store import DECISIONS

    wanted = _split(decision)
    unknown = [d for d in wanted if d not in DECISIONS]
    if unknown:
        raise CliError(
            f"--decision {unknown[0]!r} is not a decision; use {', '.join(DECISIONS)}; "
            "nothing was written"
        )
    engine = open_database(env.settings)
    job = find_job(engine, job_name)
    flt = ExportFilter(
        states=_split(states),
        risk_levels=_split(risk),
        label=label,
        min_confidence=min_confidence,
        decisions=wanted,
    )
    records = export_records(engine, job, flt)
    if fmt == "jsonl":
        write_jsonl(records, output)
    elif len(job.services) > 1:  # one row per reference, prefixed columns per service
        write_csv(records, output, csv_fields(job.services))
    else:
        write_csv(records, output)


@click.command()
@click.argument("job_name")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a self-contained HTML report with charts to this file.",
)
@pass_env
def report(env: CommandEnv, job_name: str, as_json: bool, html_path: Path | None) -> None:
    """Totals by state and risk, top labels, failures by code, billable calls (and their cost,
    each service at its IMGMOD_PRICE_PER_1000 price); a job of several services is broken
    down per service, its references counted once."""
    from worker.reports import build_report, render_report

    if as_json and html_path is not None:
        raise CliError("--json and --html cannot be used together: choose one")
    engine = open_database(env.settings)
    if html_path is not None:
        _write_html_report(env, engine, find_job(engine, job_name), html_path)
        return
    rep = build_report(engine, find_job(engine, job_name), env.settings.billing.prices)
    if as_json:
        click.echo(json.dumps(asdict(rep), indent=2, default=str))
        return
    click.echo(render_report(rep))


def _write_html_report(env: CommandEnv, engine: Engine, job: Job, path: Path) -> None:
    from worker.report_data import report_data
    from worker.report_html import ReportNotWritten, render_html, write_html

    data = report_data(engine, job, prices=env.settings.billing.prices)
    try:
        size = write_html(render_html(data), path)
    except ReportNotWritten as exc:
        raise CliError(f"{exc}; nothing was written") from None
    click.echo(f"report: wrote {path} ({size:,} bytes)")


COMMANDS = (export, report)
