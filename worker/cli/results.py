"""Commands that read a job back out: export (JSONL, CSV) and report."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import IO

import click

from worker.cli.context import CommandEnv, find_job, open_database, pass_env


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
    output: IO[str],
) -> None:
    """Stream JOB's references with their results as JSONL or CSV."""
    from worker.reports import ExportFilter, export_records, write_csv, write_jsonl

    engine = open_database(env.settings)
    job = find_job(engine, job_name)
    flt = ExportFilter(
        states=_split(states), risk_levels=_split(risk), label=label, min_confidence=min_confidence
    )
    records = export_records(engine, job, flt)
    (write_jsonl if fmt == "jsonl" else write_csv)(records, output)


@click.command()
@click.argument("job_name")
@click.option("--json", "as_json", is_flag=True)
@pass_env
def report(env: CommandEnv, job_name: str, as_json: bool) -> None:
    """Totals by state and risk, top labels, failures by code, billable calls."""
    from worker.reports import build_report, render_report

    engine = open_database(env.settings)
    rep = build_report(engine, find_job(engine, job_name))
    if as_json:
        click.echo(json.dumps(asdict(rep), indent=2, default=str))
        return
    click.echo(render_report(rep))


COMMANDS = (export, report)
