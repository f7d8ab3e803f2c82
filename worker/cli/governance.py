"""Commands about what to do with the answers: decide (a policy over a job), history (one image).

Neither calls the API. Who acts is ``--user`` or the OS login name; every decision is logged
under it.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

from worker.cli.context import CommandEnv, find_job, open_database, pass_env
from worker.cli.errors import CliError

_user_option = click.option(
    "--user",
    default=None,
    help="The name recorded as who decided (default: your login name).",
)


def login_name(user: str | None) -> str:
    """``--user``, else the OS login name, else ``unknown`` (a container may have no name)."""
    if user and user.strip():
        return user.strip()
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):
        return "unknown"


@click.command()
@click.argument("job_name")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A policy TOML file (default: the shipped policy: high block, medium review, "
    "low and none pass). See docs/policies.md.",
)
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@_user_option
@pass_env
def decide(
    env: CommandEnv,
    job_name: str,
    policy_file: Path | None,
    dry_run: bool,
    as_json: bool,
    user: str | None,
) -> None:
    """Apply a policy to JOB's stored answers: block, review or pass per image; no API call.

    Rows without an answer (failed, rejected, still open) are decided `unscanned`, never
    `pass`. A new policy version keeps the old decisions and prints what changed; a rerun of
    the same file writes nothing; an image a reviewer decided keeps that decision.
    """
    from worker.decide import (
        VersionReused,
        decide_job,
        load_policy,
        outcome_json,
        render_outcome,
    )
    from worker.policy import PolicyError

    try:
        policy = load_policy(policy_file)
    except PolicyError as exc:
        raise CliError(f"{exc}; nothing was written") from None
    except OSError as exc:
        raise CliError(f"--policy {policy_file}: cannot read it ({exc.strerror})") from None
    engine = open_database(env.settings)
    job = find_job(engine, job_name)
    try:
        outcome = decide_job(engine, job, policy, login_name(user), dry_run=dry_run)
    except VersionReused as exc:
        raise CliError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(outcome_json(outcome), ensure_ascii=False))
    else:
        click.echo(render_outcome(outcome))


@click.command()
@click.argument("ref")
@click.option("--job", "job_name", default=None, help="Only this job's item.")
@click.option("--json", "as_json", is_flag=True, help="Print the story as JSON.")
@pass_env
def history(env: CommandEnv, ref: str, job_name: str | None, as_json: bool) -> None:
    """One image's story in time order: enqueued, answered or failed, decisions, reviews,
    actions. REF is the image URL, oss://bucket/key, local path or dataId as enqueued."""
    from worker.history import UnknownReference, history_json, image_history, render_history

    engine = open_database(env.settings)
    job = find_job(engine, job_name) if job_name else None
    try:
        stories = image_history(engine, ref, job)
    except UnknownReference as exc:
        raise CliError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(history_json(stories), ensure_ascii=False, indent=2))
    else:
        click.echo(render_history(stories))


COMMANDS = (decide, history)
