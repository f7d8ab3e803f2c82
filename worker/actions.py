"""Acting on decisions: quarantine OSS objects (and undo it), or tell the owner by webhook.

``imgmod act JOB --decision block --action quarantine`` acts on every item whose latest decision
is ``block``; ``imgmod restore JOB`` undoes what the log says was done. Two ways to quarantine:

* ``freeze``: the object's ACL becomes ``private`` (the ACL it had is remembered, and put back
  on restore);
* ``move``: copied to ``PREFIX + key`` in the same bucket, then deleted (restore copies it back
  and deletes the quarantined copy). The original key stays in ``object_actions`` and the event.

A backfill must never quarantine on its own, so the plan (:func:`plan_act`,
:func:`plan_restore`: pure, from the store alone, no OSS request) is what ``--dry-run`` lists
and what a command without ``--yes`` prints before refusing. Running it (:func:`run_changes`)
is idempotent and resumable: an object already in the wanted state is not in the plan, and an
interrupted change is completed from what its ``applying`` row remembers. Every change and
every per-object failure is an event; a failure is one line and the rest goes on. OSS requests
are paced at ``IMGMOD_ACT_QPS``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import alibabacloud_oss_v2 as oss
from sqlalchemy.engine import Engine

from worker import oss_actions
from worker.oss import make_client
from worker.oss_actions import ObjectActionError
from worker.settings import Credentials, Settings
from worker.store.actions import (
    DecidedItem,
    ObjectAction,
    begin_object_action,
    decided_pages,
    finish_object_action,
    first_of_each_object,
    object_actions_for,
    record_event,
)
from worker.store.events import NewEvent

MODES = ("freeze", "move")
FROZEN_ACL = "private"
# Objects changed at once: OSS answers in tens of milliseconds, so one at a time would hold a
# run well under IMGMOD_ACT_QPS; the pacer, shared by the threads, holds the rate.
THREADS = 8


class ActionRefused(ValueError):
    """An option makes no sense (a bad --prefix ...); refused before anything is done."""


@dataclass(frozen=True)
class Change:
    """One change to one object: what ``--dry-run`` lists and :func:`run_changes` makes."""

    item: DecidedItem
    mode: str  # freeze | move
    undo: bool  # restore (True) or act (False)
    bucket: str
    key: str  # where the object is now
    target: str  # freeze: the same key; move: where it goes
    acl_before: str | None = None  # freeze: known when resuming or restoring
    resume: bool = False  # an interrupted act (an ``applying`` row) is completed

    def describe(self) -> str:
        where = f"oss://{self.bucket}/{self.key}"
        if self.mode == "freeze":
            acl = (self.acl_before or "default") if self.undo else FROZEN_ACL
            return f"{'unfreeze' if self.undo else 'freeze'} {where}: ACL -> {acl}"
        return (
            f"{'move back' if self.undo else 'move'} {where} -> oss://{self.bucket}/{self.target}"
        )


@dataclass
class Tally:
    """What a plan or a run came to."""

    changes: int = 0
    unchanged: int = 0  # already in the wanted state
    not_oss: int = 0  # items that are no OSS object (URLs, local files): use a webhook
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def check_prefix(prefix: str) -> str:
    """A quarantine prefix: not empty, no leading ``/`` (pure)."""
    if not prefix or prefix.startswith("/") or "\x00" in prefix or len(prefix) > 512:
        raise ActionRefused(
            f"--prefix {prefix!r}: give a key prefix such as quarantine/ (not empty, no leading /)"
        )
    return prefix


def plan_act(
    item: DecidedItem, existing: ObjectAction | None, mode: str, prefix: str
) -> Change | str:
    """The change acting on ``item`` makes, or why there is none ("unchanged", "not oss")."""
    if item.kind != "oss" or not item.bucket or not item.key:
        return "not oss"
    if existing is not None and existing.state == "applied":
        return "unchanged"
    resume = existing is not None and existing.state == "applying"
    if mode == "freeze":
        acl = existing.acl_before if resume and existing else None
        return Change(item, mode, False, item.bucket, item.key, item.key, acl, resume)
    if item.key.startswith(prefix):
        return "unchanged"  # already under the quarantine prefix: moving it would nest it
    target = existing.current_key if resume and existing else prefix + item.key
    return Change(item, mode, False, item.bucket, item.key, target, None, resume)


def plan_restore(item: DecidedItem, existing: ObjectAction | None) -> Change | str:
    """The change undoing the action recorded on ``item``, or why there is none."""
    if existing is None or existing.state == "restored":
        return "unchanged"
    if existing.action == "freeze":
        return Change(
            item, "freeze", True, existing.bucket, existing.original_key,
            existing.original_key, existing.acl_before,
        )  # fmt: skip
    if existing.state == "applying" and existing.current_key == existing.original_key:
        return "unchanged"  # pragma: no cover - a move's intent always names its target
    return Change(item, "move", True, existing.bucket, existing.current_key, existing.original_key)


def plan(
    engine: Engine,
    job_id: int,
    decision: str | None,
    *,
    mode: str | None,
    prefix: str = "",
    undo: bool,
    tally: Tally,
) -> Iterator[Change]:
    """The changes of ``act`` (``undo`` False, ``mode`` given) or ``restore`` (``undo`` True,
    ``mode`` None: every recorded action), page by page; ``tally`` counts the rest."""
    for page in decided_pages(engine, job_id, decision):
        if not undo:  # once per object, not once per service of it (restore: every record)
            page = first_of_each_object(engine, job_id, decision, page)
        recorded = object_actions_for(engine, [i.item_id for i in page], None if undo else mode)
        for item in page:
            modes = [mode] if mode else list(MODES)
            outcomes: list[Change | str] = []
            for each in modes:
                existing = recorded.get((item.item_id, each))
                if undo:
                    outcomes.append(plan_restore(item, existing))
                else:
                    outcomes.append(plan_act(item, existing, each, prefix))
            for outcome in outcomes:
                if isinstance(outcome, Change):
                    tally.changes += 1
                    yield outcome
            if not any(isinstance(o, Change) for o in outcomes):
                if "not oss" in outcomes:
                    tally.not_oss += 1
                else:
                    tally.unchanged += 1


class Pacer:
    """At most ``rate`` requests a second from this process: each :meth:`wait` takes a slot
    (thread-safe: the slot is taken under a lock, the wait for it is outside)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate
        self.clock, self.sleep = clock, sleep
        self.next_at = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            slot = max(now, self.next_at)
            self.next_at = slot + self.interval
        if slot > now:
            self.sleep(slot - now)


@dataclass
class Runner:
    """Makes changes on OSS and records them: one client per region, paced requests."""

    engine: Engine
    settings: Settings
    credentials: Credentials
    actor: str
    pacer: Pacer
    clients: dict[str, oss.Client] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, region: str) -> oss.Client:
        with self._lock:
            if region not in self.clients:
                self.clients[region] = make_client(self.settings, self.credentials, region)
            return self.clients[region]

    def run(self, change: Change) -> str | None:
        """Make one change and record it; the error's one line when it failed (recorded too)."""
        client = self.client(change.item.region or self.settings.region)
        try:
            before, after = self._apply(client, change)
        except ObjectActionError as exc:
            record_event(self.engine, self._event(change, None, None, str(exc)))
            return str(exc)
        state = "restored" if change.undo else "applied"
        event = self._event(change, before, after, None)
        finish_object_action(
            self.engine, change.item.item_id, change.mode, state, change.target, event
        )
        return None

    def _apply(self, client: oss.Client, change: Change) -> tuple[dict[str, str], dict[str, str]]:
        bucket, item = change.bucket, change.item
        if change.mode == "freeze":
            acl_before = change.acl_before
            if not change.undo:
                if acl_before is None:
                    self.pacer.wait()
                    acl_before = oss_actions.get_acl(client, bucket, change.key)
                begin_object_action(self.engine, item, "freeze", "applying", change.key, acl_before)
            acl = (acl_before or "default") if change.undo else FROZEN_ACL
            self.pacer.wait()
            oss_actions.set_acl(client, bucket, change.key, acl)
            was = FROZEN_ACL if change.undo else (acl_before or "default")
            return {"acl": was, "key": change.key}, {"acl": acl, "key": change.key}
        if not change.undo:
            begin_object_action(self.engine, item, "move", "applying", change.target, None)
        self._move(client, bucket, change.key, change.target)
        return {"key": change.key}, {"key": change.target}

    def _move(self, client: oss.Client, bucket: str, key: str, target: str) -> None:
        """Copy, then delete: the object is never in neither place. A rerun after the delete
        finds the source gone and the copy in place, and carries on."""
        self.pacer.wait()
        try:
            oss_actions.copy(client, bucket, key, target)
        except oss_actions.ObjectGone:
            self.pacer.wait()
            if not oss_actions.exists(client, bucket, target):
                raise
            return
        self.pacer.wait()
        oss_actions.delete(client, bucket, key)

    def _event(
        self,
        change: Change,
        before: dict[str, str] | None,
        after: dict[str, str] | None,
        error: str | None,
    ) -> NewEvent:
        item = change.item
        what = ("unfreeze" if change.undo else "freeze") if change.mode == "freeze" else (
            "move back" if change.undo else "move"
        )  # fmt: skip
        return NewEvent(
            kind="restore" if change.undo else "action",
            what=what,
            actor=self.actor,
            job_id=item.job_id,
            item_id=item.item_id,
            why=f"latest decision {item.decision} (decision #{item.decision_id})",
            policy_name=item.policy_name,
            policy_version=item.policy_version,
            before=before,
            after=after,
            detail={
                "bucket": change.bucket,
                "original_key": item.key or "",
                "outcome": "failed" if error else ("restored" if change.undo else "applied"),
                **({"error": error} if error else {}),
            },
        )


def run_changes(
    runner: Runner,
    changes: Iterator[Change],
    tally: Tally,
    on_error: Callable[[str], None],
    threads: int = THREADS,
) -> Tally:
    """Make every change, ``threads`` at a time (the plan is read as they finish: memory
    flat); a failure is one line through ``on_error`` and the rest goes on. Anything else (the
    database away) stops the run and is raised; a rerun continues."""
    lock = threading.Lock()

    def one(change: Change) -> None:
        error = runner.run(change)
        if error is not None:
            with lock:
                tally.failed += 1
                tally.errors.append(error)
                on_error(error)

    running: set[Future[None]] = set()
    with ThreadPoolExecutor(threads, thread_name_prefix="imgmod-act") as pool:
        for change in changes:
            if len(running) >= threads * 2:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
            running.add(pool.submit(one, change))
        for future in running:
            future.result()
    return tally
