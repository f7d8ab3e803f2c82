"""Quarantine and restore of many OSS objects against the emulator, through ``imgmod act`` /
``imgmod restore`` as a user runs them (the real OSS SDK, one process per command).

    .venv/bin/python bench/act.py [--objects 1000] [--db sqlite|postgresql] [--qps 100000]

Writes ``--objects`` PNGs into the emulator's OSS, a job with a ``block`` decision per object,
then times, for ``--mode freeze`` and ``--mode move``: the act, a rerun (nothing to change),
and the restore; after each step it checks every object's ACL (freeze) or key (move) through
the SDK or on disk, and counts the events. Prints objects/s per step (start-up included),
the CPU probe (:func:`broker_memory.cpu_probe`) and the load average, so figures from other
machines compare. ``IMGMOD_ACT_QPS`` is ``--qps`` (the default leaves the pacer out of it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import alibabacloud_oss_v2 as oss
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.acting
sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker_memory import cpu_probe  # noqa: E402
from stack import fresh_database, loadavg  # noqa: E402

from tests.support.acting import REGION, decided_job, oss_client, write_objects  # noqa: E402
from worker import store  # noqa: E402
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET  # noqa: E402
from worker.processes import running_emulator  # noqa: E402
from worker.store.schema import events  # noqa: E402

BUCKET = "bench-act"


def step(env: dict[str, str], n: int, label: str, *args: str) -> None:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--yes"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{label}: exit {done.returncode}: {done.stderr.strip()}")
    print(f"  {label:<22} {seconds:6.2f} s  {n / seconds:8.0f} objects/s   "
          f"({done.stdout.strip()})", flush=True)  # fmt: skip


def acls(client: oss.Client, keys: list[str]) -> set[str]:
    return {
        str(client.get_object_acl(oss.GetObjectAclRequest(bucket=BUCKET, key=k)).acl) for k in keys
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--qps", type=float, default=100_000)
    args = parser.parse_args()
    keys = [f"img/{n:07d}.png" for n in range(args.objects)]
    print(f"imgmod act/restore, {args.objects:,} objects, {args.db}", flush=True)
    print(f"  cpu probe: {cpu_probe():.0f} ms, load average {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="imgmod-act-") as tmp, fresh_database(args.db) as db:
        root = Path(tmp)
        write_objects(root, BUCKET, keys)
        engine = store.make_engine(db)
        job_id = decided_job(engine, "bench-act", [(BUCKET, k) for k in keys])
        with running_emulator(oss_root=str(root)) as emu:
            env = {
                "IMGMOD_DATABASE_URL": db,
                "IMGMOD_OSS_ENDPOINT": emu.oss_url,
                "IMGMOD_ACT_QPS": str(args.qps),
                "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
            }
            client = oss_client(emu.oss_url)
            act = ["act", "bench-act", "--decision", "block", "--action", "quarantine"]
            n = args.objects
            step(env, n, "freeze", *act)
            assert acls(client, keys) == {"private"}, "not every object is private"
            step(env, n, "freeze again (no-op)", *act)
            step(env, n, "restore (unfreeze)", "restore", "bench-act")
            assert acls(client, keys) == {"default"}, "not every ACL is back"
            step(env, n, "move", *act, "--mode", "move", "--prefix", "q/")
            on_disk = {p.relative_to(root / REGION / BUCKET).as_posix()
                       for p in (root / REGION / BUCKET).rglob("*.png")}  # fmt: skip
            assert on_disk == {f"q/{k}" for k in keys}, "not every object moved"
            step(env, n, "move again (no-op)", *act, "--mode", "move", "--prefix", "q/")
            step(env, n, "restore (move back)", "restore", "bench-act")
            on_disk = {p.relative_to(root / REGION / BUCKET).as_posix()
                       for p in (root / REGION / BUCKET).rglob("*.png")}  # fmt: skip
            assert on_disk == set(keys), "not every object is back"
        with engine.connect() as conn:
            logged = conn.execute(
                sa.select(sa.func.count()).select_from(events).where(events.c.job_id == job_id)
            ).scalar_one()
        assert logged == 4 * n, f"{logged} events, expected {4 * n}"
        print(f"  checked: every ACL/key after each step, {logged:,} events (4 per object)")
        print(f"  load average after: {loadavg()}", flush=True)
        engine.dispose()


if __name__ == "__main__":
    main()
