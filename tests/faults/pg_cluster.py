"""A private PostgreSQL cluster for outage tests: ours to stop and start, nobody else's.

The machine's PostgreSQL on 5432 is shared with other test runs, so an outage is staged on a
cluster of our own: ``initdb`` into a temporary directory, ``pg_ctl start`` on a free loopback
port (TCP on 127.0.0.1 only, its Unix socket in the same directory), ``trust`` authentication
for the ``postgres`` superuser. PostgreSQL refuses to run as root, so when the tests run as root
every server command runs as the ``postgres`` system user, who owns the directory.

    with private_pg_cluster() as pg:
        url = pg.create_database("imgmod")
        pg.stop()      # an outage: every connection is cut, new ones are refused
        pg.start()     # back, same data
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from worker.processes import free_port, wait_until

SERVER_USER = "postgres"
COMMAND_TIMEOUT = 120


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or no user that may run them."""


def server_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl``."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise ClusterUnavailable("no pg_ctl under /usr/lib/postgresql/*/bin nor on PATH")


def _as_server_user(argv: list[str]) -> list[str]:
    """Run ``argv`` as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ClusterUnavailable(f"running as root and there is no {SERVER_USER!r} user") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterUnavailable("running as root and runuser is not installed")
    return [runuser, "-u", SERVER_USER, "--", *argv]


@dataclass
class PgCluster:
    """One cluster in ``directory`` (data in ``directory/data``) on ``127.0.0.1:port``."""

    directory: Path
    port: int
    bin_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = _as_server_user([str(self.bin_dir / tool), *args])
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            cwd=str(self.directory),
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
                f"\n{self.server_log()[-2000:]}"
            )
        return done

    def server_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SERVER_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.directory} "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        wait_until(self.accepting, 30, f"the private PostgreSQL on port {self.port}")

    def stop(self) -> None:
        """Fast shutdown: open transactions roll back, every client connection is cut."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def accepting(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(self.url(), connect_timeout=2).close()
        except psycopg2.OperationalError:
            return False
        return True

    def create_database(self, name: str) -> str:
        """Create ``name`` (an identifier we choose, never user input); return its URL."""
        import psycopg2

        admin = psycopg2.connect(self.url(), connect_timeout=5)
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            admin.close()
        return self.url(name)


@contextmanager
def private_pg_cluster() -> Iterator[PgCluster]:
    """A started cluster on a free loopback port; stopped and deleted on exit."""
    bin_dir = server_bin_dir()
    directory = Path(tempfile.mkdtemp(prefix="imgmod-pg-"))
    try:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        directory.chmod(0o700)
        cluster = PgCluster(directory=directory, port=free_port(), bin_dir=bin_dir)
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            if cluster.running():
                try:
                    cluster.stop()
                except RuntimeError:
                    _kill_postmaster(cluster)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _kill_postmaster(cluster: PgCluster) -> None:
    """Last resort when pg_ctl could not stop our server: signal the pid it recorded."""
    import signal

    try:
        pid = int(cluster.data_dir.joinpath("postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)
