"""``imgmod ui``: serve the review page; ``imgmod ui adduser``: add a user to its users file."""

from __future__ import annotations

import sys

import click

from worker.cli.context import CommandEnv, open_database, pass_env
from worker.cli.errors import CliError
from worker.settings import ConfigError, is_loopback_host, load_credentials


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8300, show_default=True, type=click.IntRange(0, 65535))
@click.pass_context
def ui(ctx: click.Context, host: str, port: int) -> None:
    """Serve the review page (queue, browse and export, dashboard) until interrupted.

    Everyone signs in: users and password hashes come from IMGMOD_UI_USERS (add them with
    `imgmod ui adduser NAME`), or from IMGMOD_UI_TRUSTED_HEADER set by a reverse proxy on this
    host. Binds 127.0.0.1 unless --host says otherwise. Exit 2 when the users file, the
    database or the port is not usable (one line saying which).
    """
    if ctx.invoked_subcommand is not None:
        return
    from worker.ui.app import listen, serve
    from worker.ui.auth import UsersFile, UsersFileError

    env: CommandEnv = ctx.find_object(CommandEnv)  # type: ignore[assignment]
    settings = env.settings
    try:
        if not UsersFile(settings.ui.users_file).users():
            raise CliError(
                f"{settings.ui.users_file} lists no users: add one with imgmod ui adduser NAME"
            )
    except UsersFileError as exc:
        raise CliError(str(exc)) from None
    engine = open_database(settings)
    try:
        credentials = load_credentials()
    except ConfigError:
        credentials = None  # OSS pictures cannot be signed; the page says so per picture
    try:
        sock = listen(host, port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if not is_loopback_host(host):
        click.echo(
            f"warning: listening on {host}, off this machine, without TLS: put a TLS proxy "
            "in front",
            err=True,
        )
    bound = sock.getsockname()
    click.echo(f"imgmod ui: http://{bound[0]}:{bound[1]}/ (Ctrl-C stops)", err=True)
    serve(settings, engine, credentials, sock)


@ui.command("adduser")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "reviewer", "admin"]),
    default="reviewer",
    show_default=True,
    help="viewer: browse; reviewer: decide; admin: actions on objects.",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line)."
)
@pass_env
def adduser(env: CommandEnv, name: str, role: str, password_stdin: bool) -> None:
    """Add NAME to the users file (IMGMOD_UI_USERS), or change their role and password.

    The file keeps a salted scrypt hash, never the password; it is created readable by its
    owner only.
    """
    from worker.ui.auth import UsersFileError, add_user

    path = env.settings.ui.users_file
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        new = add_user(path, name, role, password)
    except (ValueError, UsersFileError, OSError) as exc:
        raise CliError(f"{path}: {exc}; nothing was changed") from None
    click.echo(f"{'added' if new else 'updated'} {name} ({role}) in {path}")


COMMANDS = (ui,)
