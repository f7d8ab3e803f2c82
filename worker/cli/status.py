"""``imgmod status``: counts by state per job (and per service for a job of several), the
budgets used and left, and why rows are paused."""

from __future__ import annotations

import json
from typing import Any

import click

from worker import store
from worker.cli import budget
from worker.cli.context import CommandEnv, find_job, open_database, pass_env
from worker.cli.progress import print_counts


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
                "budget": budget.budget_status(engine, job, env.settings),
            }
        )
        if len(job.services) > 1:  # rows are per (reference, service): each service's own
            rows[-1]["by_service"] = store.service_state_counts(engine, job.id)
    if as_json:
        click.echo(json.dumps(rows if job_name is None else rows[0], indent=2))
        return
    for row in rows:
        print_counts(row["job"], row["states"])
        for service, counts in row.get("by_service", {}).items():
            print_counts(f"{row['job']} / {service}", counts)
        budget.print_budget(row["budget"])


COMMANDS = (status,)
