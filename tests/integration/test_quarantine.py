"""``imgmod act`` / ``imgmod restore`` on the emulator's OSS through the real SDK: quarantine by
freeze and by move, undone from the log; idempotent reruns, an interrupted act resumed, and one
line (and an event) per object that cannot be changed while the rest goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import alibabacloud_oss_v2 as oss
import pytest
import sqlalchemy as sa

from tests.support import Emulator, run_imgmod, running_emulator
from tests.support.acting import REGION, decided_job, oss_client, write_objects
from worker import store
from worker.actions import Pacer, Runner, Tally, plan, run_changes
from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.settings import load_credentials, load_settings
from worker.store.schema import decisions, events, object_actions

pytestmark = pytest.mark.service

N = 40
KEYS = [f"photos/{n:03d}.png" for n in range(N)]
PUBLIC = KEYS[7]  # public-read before the freeze: restored to public-read, not to default
MISSING = "photos/gone.png"  # decided, but no such object: "object gone"
LOCKED = ("locked-bucket", "a.png")  # the bucket refuses writes: "no permission"
URL = "https://img.example/1.png"  # decided block, but imgmod cannot touch a URL


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("oss")


@pytest.fixture(scope="module")
def emu(root) -> Iterator[Emulator]:
    with running_emulator(oss_root=str(root), oss_deny_list=LOCKED[0]) as emulator:
        yield emulator


def _env(emu: Emulator, url: str) -> dict[str, str]:
    return {
        "IMGMOD_DATABASE_URL": url,
        "IMGMOD_OSS_ENDPOINT": emu.oss_url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        "IMGMOD_ACT_QPS": "100000",
    }


def _acls(client: oss.Client, bucket: str, keys: list[str]) -> dict[str, str]:
    return {
        key: str(client.get_object_acl(oss.GetObjectAclRequest(bucket=bucket, key=key)).acl)
        for key in keys
    }


def _on_disk(root: Path, bucket: str) -> set[str]:
    base = root / REGION / bucket
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}


def _events(engine: sa.Engine, job_id: int) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(events).where(events.c.job_id == job_id).order_by(events.c.id))
        )


def _left(engine: sa.Engine, job_id: int, mode: str | None, undo: bool) -> Tally:
    """What a rerun would do (the plan it runs), without running it."""
    tally = Tally()
    decision = None if undo else "block"
    for _ in plan(engine, job_id, decision, mode=mode, prefix="q/", undo=undo, tally=tally):
        pass
    return tally


def _run(engine: sa.Engine, env: dict[str, str], job_id: int, mode: str | None, undo: bool):
    """``imgmod act --yes`` / ``restore --yes`` in this process: the same plan and runner."""
    runner = Runner(engine, load_settings(env), load_credentials(env), "bob", Pacer(100_000.0))
    tally, errors = Tally(), []
    decision = None if undo else "block"
    changes = plan(engine, job_id, decision, mode=mode, prefix="q/", undo=undo, tally=tally)
    run_changes(runner, changes, tally, on_error=errors.append)
    return tally, errors


def test_freeze_and_move_are_undone_from_the_log_and_reruns_change_nothing(
    emu, root, sqlite_url
) -> None:
    database_url, bucket = sqlite_url, "archive"
    write_objects(root, bucket, KEYS)
    write_objects(root, LOCKED[0], [LOCKED[1]])
    client = oss_client(emu.oss_url)
    client.put_object_acl(oss.PutObjectAclRequest(bucket=bucket, key=PUBLIC, acl="public-read"))
    store.upgrade(database_url)
    engine = store.ensure_schema(database_url)
    refs: list[tuple[str, str] | str] = [(bucket, k) for k in KEYS]
    refs += [(bucket, MISSING), LOCKED, URL, (bucket, "photos/passed.png")]
    job_id = decided_job(engine, "acting", refs, {n: "block" for n in range(len(refs) - 1)})
    env = _env(emu, database_url)
    act = ("act", "acting", "--decision", "block", "--action", "quarantine")

    refused = run_imgmod(env, *act)
    assert refused.returncode == 2, refused.stderr
    assert "nothing was done: add --yes" in refused.stderr
    assert f"{N + 2} objects would be frozen" in refused.stdout
    assert set(_acls(client, bucket, [PUBLIC, KEYS[0]]).values()) == {"public-read", "default"}
    assert _events(engine, job_id) == []

    frozen = run_imgmod(env, *act, "--yes", "--user", "alice")
    assert frozen.returncode == 3, frozen.stderr  # two objects failed; the rest went on
    assert f"{N} objects frozen, 2 failed, 0 unchanged, 1 not OSS objects" in frozen.stdout
    failures = frozen.stderr.strip().splitlines()
    assert len(failures) == 2 and "Traceback" not in frozen.stderr
    assert any(MISSING in line and "no such object" in line for line in failures)
    assert any(LOCKED[0] in line and "oss:PutObjectAcl" in line for line in failures)
    assert set(_acls(client, bucket, KEYS).values()) == {"private"}
    logged = _events(engine, job_id)
    applied = [e for e in logged if e.detail["outcome"] == "applied"]
    assert len(applied) == N and {e.what for e in applied} == {"freeze"}
    assert {e.kind for e in logged} == {"action"} and {e.actor for e in logged} == {"alice"}
    public = next(e for e in applied if e.detail["original_key"] == PUBLIC)
    assert public.before["acl"] == "public-read" and public.after["acl"] == "private"
    assert {e.detail["error"][:40] for e in logged if e.detail["outcome"] == "failed"}

    again = _left(engine, job_id, "freeze", undo=False)  # a rerun retries only the failures
    assert (again.changes, again.unchanged, again.not_oss) == (2, N, 1)

    undone = run_imgmod(env, "restore", "acting", "--yes")
    # the locked object's intent is undone too (its ACL may have changed); it still can't be
    assert undone.returncode == 3, undone.stderr
    assert f"{N} objects restored, 1 failed" in undone.stdout
    acls = _acls(client, bucket, KEYS)
    assert acls.pop(PUBLIC) == "public-read" and set(acls.values()) == {"default"}
    again = _left(engine, job_id, None, undo=True)
    assert (again.changes, again.unchanged) == (1, N + 3)

    moved, errors = _run(engine, env, job_id, "move", undo=False)
    assert (moved.changes - moved.failed, moved.failed, len(errors)) == (N, 2, 2)
    assert _on_disk(root, bucket) == {f"q/{k}" for k in KEYS}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(object_actions).where(object_actions.c.action == "move")
        ).all()
    assert {(r.original_key, r.current_key, r.state) for r in rows if r.state == "applied"} == {
        (k, f"q/{k}", "applied") for k in KEYS
    }
    again = _left(engine, job_id, "move", undo=False)
    assert (again.changes, again.unchanged, again.not_oss) == (2, N, 1)

    back, errors = _run(engine, env, job_id, "move", undo=True)
    assert (back.changes - back.failed, back.failed) == (N, 2)  # locked and gone, again
    assert _on_disk(root, bucket) == set(KEYS)
    kinds = [(e.kind, e.what) for e in _events(engine, job_id) if e.detail["outcome"] != "failed"]
    assert kinds.count(("action", "freeze")) == N and kinds.count(("restore", "unfreeze")) == N
    assert kinds.count(("action", "move")) == N and kinds.count(("restore", "move back")) == N


def test_an_interrupted_freeze_is_completed_from_the_acl_it_remembered(emu, root, database_url):
    bucket = f"resume-{database_url.split(':')[0].split('+')[0]}"  # one per database
    write_objects(root, bucket, ["x.png"])
    client = oss_client(emu.oss_url)
    # the killed run had read public-read, recorded its intent, and set the ACL to private
    client.put_object_acl(oss.PutObjectAclRequest(bucket=bucket, key="x.png", acl="private"))
    store.upgrade(database_url)
    engine = store.ensure_schema(database_url)
    job_id = decided_job(engine, "resume", [(bucket, "x.png")])
    with engine.begin() as conn:
        item_id = conn.execute(sa.select(store.items.c.id)).scalar_one()
        conn.execute(
            object_actions.insert().values(
                item_id=item_id, job_id=job_id, action="freeze", state="applying",
                bucket=bucket, original_key="x.png", current_key="x.png",
                acl_before="public-read", updated_at=sa.func.now(),
            )
        )  # fmt: skip
    env = _env(emu, database_url)
    dry = run_imgmod(env, "act", "resume", "--decision", "block", "--action", "quarantine",
                     "--dry-run")  # fmt: skip
    assert dry.returncode == 0 and f"freeze oss://{bucket}/x.png: ACL -> private" in dry.stdout
    assert _run(engine, env, job_id, "freeze", undo=False)[1] == []
    [event] = _events(engine, job_id)
    assert (event.what, event.before["acl"]) == ("freeze", "public-read")  # not the private found
    # a reviewer passes it: `restore --decision block` no longer names it, `--decision pass` does
    with engine.begin() as conn:
        conn.execute(decisions.insert().values(
            item_id=item_id, job_id=job_id, decision="pass", source="review", actor="carol",
            decided_at=sa.func.now()))  # fmt: skip
    left = Tally()
    assert list(plan(engine, job_id, "block", mode=None, undo=True, tally=left)) == []
    [change] = plan(engine, job_id, "pass", mode=None, undo=True, tally=left)
    assert change.describe() == f"unfreeze oss://{bucket}/x.png: ACL -> public-read"
    restored, errors = _run(engine, env, job_id, None, undo=True)
    assert (restored.changes, errors) == (1, [])
    assert _acls(client, bucket, ["x.png"]) == {"x.png": "public-read"}


def test_the_emulators_acl_copy_and_delete_answer_the_sdk_as_oss_does(emu, root) -> None:
    write_objects(root, "edges", ["a.png"])
    client = oss_client(emu.oss_url)
    acl = oss.GetObjectAclRequest(bucket="edges", key="a.png")
    assert client.get_object_acl(acl).acl == "default"
    client.put_object_acl(oss.PutObjectAclRequest(bucket="edges", key="a.png", acl="private"))
    assert client.get_object_acl(acl).acl == "private"
    client.copy_object(oss.CopyObjectRequest(
        bucket="edges", key="b c/é.png", source_bucket="edges", source_key="a.png"))  # fmt: skip
    assert (root / REGION / "edges" / "b c" / "é.png").read_bytes() == (
        root / REGION / "edges" / "a.png"
    ).read_bytes()
    assert client.get_object_acl(oss.GetObjectAclRequest(bucket="edges", key="b c/é.png")).acl == (
        "default"
    )  # a copy gets the default ACL, as in OSS
    client.delete_object(oss.DeleteObjectRequest(bucket="edges", key="a.png"))
    client.delete_object(oss.DeleteObjectRequest(bucket="edges", key="a.png"))  # gone: still 204
    assert _on_disk(root, "edges") == {"b c/é.png"}
    for call in (
        lambda: client.get_object_acl(acl),
        lambda: client.copy_object(oss.CopyObjectRequest(
            bucket="edges", key="c.png", source_bucket="edges", source_key="a.png")),
    ):  # fmt: skip
        with pytest.raises(oss.exceptions.OperationError) as caught:
            call()
        error = caught.value.unwrap()
        assert isinstance(error, oss.exceptions.ServiceError) and error.status_code == 404


def test_an_object_two_services_blocked_is_frozen_once_and_restored(emu, root, sqlite_url):
    """A job of two services has a row per (object, service); when both rows say block, the
    object is frozen once (a second freeze would remember "private" as its ACL and a restore
    would leave it private)."""
    bucket, keys = "two-services", [f"p/{n}.png" for n in range(5)]
    write_objects(root, bucket, keys)
    client = oss_client(emu.oss_url)
    client.put_object_acl(oss.PutObjectAclRequest(bucket=bucket, key=keys[0], acl="public-read"))
    store.upgrade(sqlite_url)
    engine = store.ensure_schema(sqlite_url)
    n = len(keys)
    # Baseline blocks objects 0-2, the AIGC detector blocks 0, 1 and 3; object 4 passes both.
    decided = {0: "block", 1: "block", 2: "block", n: "block", n + 1: "block", n + 3: "block"}
    job_id = decided_job(
        engine,
        "two-act",
        [(bucket, k) for k in keys],
        decided,
        services=("baselineCheck_global", "aigcDetector_global"),
    )
    env = _env(emu, sqlite_url)

    frozen = run_imgmod(env, "act", "two-act", "--decision", "block", "--action", "quarantine",
                        "--yes")  # fmt: skip

    assert frozen.returncode == 0, frozen.stderr
    assert "4 objects frozen" in frozen.stdout
    with engine.connect() as conn:
        acted = conn.execute(
            sa.select(object_actions.c.original_key, object_actions.c.acl_before).where(
                object_actions.c.job_id == job_id
            )
        ).all()
    assert sorted(acted) == [(keys[0], "public-read"), *((keys[i], "default") for i in (1, 2, 3))]
    assert _acls(client, bucket, keys) == {
        keys[0]: "private", keys[1]: "private", keys[2]: "private", keys[3]: "private",
        keys[4]: "default",
    }  # fmt: skip
    assert _left(engine, job_id, "freeze", undo=False).changes == 0

    undone = run_imgmod(env, "restore", "two-act", "--yes")

    assert undone.returncode == 0, undone.stderr
    assert _acls(client, bucket, keys) == {
        keys[0]: "public-read",
        **{k: "default" for k in keys[1:]},
    }
