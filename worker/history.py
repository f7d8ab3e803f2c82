"""``imgmod history REF``: one image's story, from SQL, in time order.

What the store keeps about an item (:func:`worker.store.item_history`) becomes a list of
:class:`Step` (when, what, who, details): enqueued (source and line), queued, the call's answer
(RequestId, RiskLevel, labels) or the last failure, then every event of the append-only log
(policy decisions, reviews, undos, actions on the object, restores, webhook deliveries).
:func:`steps` is pure; :func:`image_history` reads; :func:`render_history` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.engine import Engine

from worker import store

MAX_JOBS = 20


class UnknownReference(LookupError):
    """No item of the database (or of ``--job``) has this reference."""


@dataclass(frozen=True)
class Step:
    at: datetime | None
    what: str
    actor: str | None
    detail: str


@dataclass(frozen=True)
class ImageStory:
    job: str
    item: dict[str, Any]
    steps: list[Step]
    job_services: str = ""  # the job's services, comma separated: several name the row's


def _ref(item: dict[str, Any]) -> str:
    if item.get("oss_bucket"):
        return f"oss://{item['oss_bucket']}/{item['oss_object']}"
    return str(item.get("image_url") or item.get("local_path") or item.get("ref_key"))


def _labels(labels: tuple[tuple[str, float | None], ...]) -> str:
    return ", ".join(label if c is None else f"{label} {c:g}" for label, c in labels) or "-"


def _event_detail(event: store.Event) -> str:
    parts: list[str] = []
    before = (event.before or {}).get("decision")
    after = (event.after or {}).get("decision")
    if event.kind in ("decision", "review", "undo") and after:
        parts.append(f"{before or 'none'} → {after}")
    elif event.before or event.after:
        parts.append(f"{event.before or '-'} → {event.after or '-'}")
    if event.policy_name:
        parts.append(f"policy {event.policy_name} v{event.policy_version}")
    if event.why:
        parts.append(event.why)
    return "; ".join(parts)


def steps(history: store.ItemHistory) -> list[Step]:
    """The item's steps in time order (events keep their log order among equal times)."""
    item = history.item
    found = [Step(item["created_at"], "enqueued", None, f"{item['source']} line {item['line']}")]
    if item.get("queued_at"):
        found.append(Step(item["queued_at"], "queued", None, f"attempts {item['attempts']}"))
    answer = history.answer
    if answer is not None:
        reused = " (reused an earlier answer: no call)" if item.get("reused_from") else ""
        found.append(
            Step(
                answer.moderated_at,
                "answered",
                None,
                f"code {answer.code}, RequestId {answer.request_id}, risk "
                f"{answer.risk_level or '-'}; labels {_labels(answer.labels)}{reused}",
            )
        )
    elif item["state"] in ("failed", "rejected"):
        reason = item.get("last_error") or item.get("last_message") or ""
        code = f"code {item['last_code']}: " if item.get("last_code") else ""
        found.append(
            Step(
                item.get("finished_at") or item["updated_at"],
                item["state"],
                None,
                f"{code}{reason}".strip() or "-",
            )
        )
    else:
        found.append(Step(item["updated_at"], item["state"], None, "no answer yet"))
    for event in history.events:
        found.append(
            Step(event.at, f"{event.kind}: {event.what}", event.actor, _event_detail(event))
        )
    floor = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(found, key=lambda step: step.at or floor)


def image_history(engine: Engine, ref: str, job: store.Job | None = None) -> list[ImageStory]:
    """The stories of the items ``ref`` names (one per job holding it, newest first)."""
    found = store.find_items(engine, ref, job_id=job.id if job else None, limit=MAX_JOBS)
    if not found:
        where = f"job {job.name!r}" if job else "any job"
        raise UnknownReference(
            f"no reference {ref!r} in {where}; give the image URL, oss://bucket/key, local path "
            "or dataId exactly as enqueued"
        )
    jobs = {j.id: j for j in store.list_jobs(engine)}
    stories = []
    for item_id, job_id in found:
        history = store.item_history(engine, item_id)
        if history is not None:
            job = jobs.get(job_id)
            name, services = (job.name, job.service) if job else (str(job_id), "")
            stories.append(ImageStory(name, history.item, steps(history), services))
    return stories


def _when(at: datetime | None) -> str:
    if at is None:
        return "-"
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def render_history(stories: list[ImageStory]) -> str:
    lines: list[str] = []
    for story in stories:
        item = story.item
        service = f"{item['service']}, " if "," in story.job_services else ""
        lines.append(
            f"{_ref(item)} in job {story.job} ({service}item {item['id']}, now {item['state']})"
        )
        for step in story.steps:
            who = f" by {step.actor}" if step.actor else ""
            lines.append(f"  {_when(step.at)}  {step.what}{who}: {step.detail}")
    return "\n".join(lines)


def history_json(stories: list[ImageStory]) -> list[dict[str, Any]]:
    return [
        {
            "job": story.job,
            "item": story.item["id"],
            "reference": _ref(story.item),
            "state": story.item["state"],
            "steps": [
                {"at": _when(s.at), "what": s.what, "actor": s.actor, "detail": s.detail}
                for s in story.steps
            ],
        }
        for story in stories
    ]
