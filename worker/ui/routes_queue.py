"""The review queue: the reviewer's current image under a lease, decide (``b``/``p``), skip
(``s``), undo (``u``), and one image's history. Thin: the work is :mod:`worker.store.review`'s.

Every POST answers with a redirect back to the queue (the next image, its picture preloaded
by the page before) or with one line saying why nothing was changed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from worker import store
from worker.store import review
from worker.ui.images import src_for
from worker.ui.present import ext_facts, picture
from worker.ui.web import UiState, blocking, needs, refuse, render, state

MAX_REASON = 1000


def _job_id(ui: UiState, name: str | None) -> tuple[int | None, str | None]:
    """(job id, problem) for ``?job=NAME``; (None, None) for every job."""
    if not name:
        return None, None
    job = store.get_job(ui.engine, name)
    if job is None:
        return None, f"no job named {name!r}; showing every job's queue"
    return job.id, None


def _item_view(ui: UiState, item_id: int) -> dict[str, Any] | None:
    history = store.item_history(ui.engine, item_id)
    if history is None:
        return None
    pic = picture(history.item)
    answer = history.answer
    return {
        "item": history.item,
        "answer": answer,
        "facts": ext_facts(answer.ext if answer else None),
        "events": history.events,
        "src": src_for(pic),
        "high_risk": bool(answer and answer.risk_level == "high"),
    }


def _queue_page(ui: UiState, user: str, job_name: str | None) -> dict[str, Any]:
    job_id, problem = _job_id(ui, job_name)
    skipped = list(ui.skips(user))
    lease, following = review.take_two(
        ui.engine,
        user,
        job_id=job_id,
        lease_seconds=ui.settings.ui.lease_seconds,
        exclude=skipped,
        marks=ui.marks,
    )
    context: dict[str, Any] = {
        "job": job_name if job_id is not None else None,
        "problem": problem,
        "lease": lease,
        "jobs": [job.name for job in store.list_jobs(ui.engine)],
    }
    if lease is not None:
        context.update(_item_view(ui, lease.item_id) or {})
    if following is not None:
        row = review.picture_row(ui.engine, following.item_id)
        context["preload"] = src_for(picture(row)) if row else None
    return context


@needs("viewer")
async def queue(request: Request) -> Response:
    ui, user = state(request), request.state.user
    job = request.query_params.get("job") or None
    if user.role == "viewer":
        return render(request, "queue.html", {"viewer": True, "job": job})
    context = await blocking(_queue_page, ui, user.name, job)
    context["last"] = request.session.get("last")
    return render(request, "queue.html", context)


def _back(form: Any) -> RedirectResponse:
    job = form.get("job")
    query = f"?{urlencode({'job': job})}" if isinstance(job, str) and job else ""
    return RedirectResponse("/queue" + query, status_code=303)


def _item_id(raw: Any) -> int | None:
    return int(raw) if isinstance(raw, str) and raw.isdigit() and len(raw) < 19 else None


@needs("reviewer", post=True)
async def decide(request: Request) -> Response:
    ui, user = state(request), request.state.user
    form = await request.form()
    item_id = _item_id(form.get("item"))
    decision = form.get("decision")
    reason = form.get("reason")
    if item_id is None:
        return refuse(
            request, 400, "the form named no image (item must be an id); nothing was recorded"
        )
    if not isinstance(decision, str):
        return refuse(request, 400, "the form named no decision (block or pass)")
    text = reason.strip() if isinstance(reason, str) else ""
    if len(text) > MAX_REASON:
        return refuse(
            request, 400, f"the reason is over {MAX_REASON} characters; nothing was recorded"
        )
    try:
        stored = await blocking(review.decide, ui.engine, item_id, user.name, decision, text)
    except review.ReviewRefused as exc:
        return refuse(request, 409, str(exc))
    request.session["last"] = stored.id
    return _back(form)


@needs("reviewer", post=True)
async def skip(request: Request) -> Response:
    ui, user = state(request), request.state.user
    form = await request.form()
    item_id = _item_id(form.get("item"))
    if item_id is None:
        return refuse(request, 400, "the form named no image (item must be an id)")
    ui.skips(user.name).append(item_id)
    await blocking(review.release, ui.engine, item_id, user.name)
    return _back(form)


@needs("reviewer", post=True)
async def undo(request: Request) -> Response:
    ui, user = state(request), request.state.user
    form = await request.form()
    decision_id = _item_id(form.get("decision_id"))
    if decision_id is None:
        return refuse(request, 409, "there is no decision of yours to undo in this session")
    try:
        await blocking(review.undo, ui.engine, decision_id, user.name, ui.settings.ui.lease_seconds)
    except review.ReviewRefused as exc:
        return refuse(request, 409, str(exc))
    request.session.pop("last", None)
    return _back(form)


@needs("viewer")
async def item(request: Request) -> Response:
    raw = request.path_params["item_id"]
    view = await blocking(_item_view, state(request), int(raw))
    if view is None:
        return refuse(request, 404, f"no image with id {raw}")
    return render(request, "item.html", view)


ROUTES = [
    Route("/queue", queue, methods=["GET"]),
    Route("/queue/decide", decide, methods=["POST"]),
    Route("/queue/skip", skip, methods=["POST"]),
    Route("/queue/undo", undo, methods=["POST"]),
    Route("/item/{item_id:int}", item, methods=["GET"]),
]
