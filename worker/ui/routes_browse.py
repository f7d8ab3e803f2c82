"""Browse and search (filters in the URL), export of the current view as CSV or JSON Lines,
the images themselves, and the live dashboard of one job's report figures."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from worker import store
from worker.report_data import chart_json, report_data
from worker.reports import spreadsheet_safe, write_jsonl
from worker.store.browse import BrowseRow, browse_all, browse_page
from worker.ui.filters import View, parse_view, with_job
from worker.ui.images import Picture, local_image, src_for
from worker.ui.web import UiState, blocking, needs, refuse, render, state

PAGE = 50
EXPORT_FIELDS = (
    "job", "item_id", "image_url", "oss_bucket", "oss_object", "data_id", "source", "line",
    "status", "risk_level", "labels", "ext", "request_id", "moderated_at", "decision", "priority",
)  # fmt: skip


def _view(request: Request, ui: UiState) -> View:
    view = parse_view({name: request.query_params.getlist(name) for name in request.query_params})
    if view.job is None:
        return view
    job = store.get_job(ui.engine, view.job)
    if job is None:  # no rows rather than every job's
        problems = (*view.problems, f"no job named {view.job!r}")
        return with_job(replace(view, problems=problems), -1)
    return with_job(view, job.id)


def _picture(row: BrowseRow) -> Picture:
    return Picture(
        row.item_id, row.kind, row.image_url, row.oss_bucket, row.oss_object, row.oss_region, None
    )


def _browse(ui: UiState, request: Request) -> dict[str, Any]:
    view = _view(request, ui)
    rows = browse_page(ui.engine, view.flt, after=view.after, limit=PAGE)
    return {
        "view": view,
        "rows": [(row, src_for(_picture(row))) for row in rows],
        "next": view.link(after=rows[-1].item_id) if len(rows) == PAGE else None,
        "jobs": [job.name for job in store.list_jobs(ui.engine)],
    }


@needs("viewer")
async def browse(request: Request) -> Response:
    context = await blocking(_browse, state(request), request)
    return render(request, "browse.html", context)


def _record(row: BrowseRow) -> dict[str, Any]:
    return {
        "job": row.job,
        "item_id": row.item_id,
        "image_url": row.image_url,
        "oss_bucket": row.oss_bucket,
        "oss_object": row.oss_object,
        "data_id": row.data_id,
        "source": row.source,
        "line": row.line,
        "status": row.state,
        "risk_level": row.risk_level,
        "labels": [{"label": label, "confidence": conf} for label, conf in row.labels],
        "ext": row.ext,
        "request_id": row.request_id,
        "moderated_at": row.moderated_at.isoformat() if row.moderated_at else None,
        "decision": row.decision,
        "priority": row.priority,
    }


def _jsonl(ui: UiState, view: View) -> Iterator[str]:
    buffer = io.StringIO()
    for row in browse_all(ui.engine, view.flt):
        write_jsonl([_record(row)], buffer)
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    return "" if value is None else spreadsheet_safe(value) if isinstance(value, str) else value


def _csv(ui: UiState, view: View) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for row in browse_all(ui.engine, view.flt):
        record = _record(row)
        record["labels"] = ";".join(
            label if conf is None else f"{label}:{conf:g}" for label, conf in row.labels
        )
        record["ext"] = "" if row.ext is None else json.dumps(row.ext, ensure_ascii=False)
        writer.writerow({k: _csv_cell(v) for k, v in record.items()})
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@needs("viewer")
async def export(request: Request) -> Response:
    ui = state(request)
    fmt = request.path_params["fmt"]
    if fmt not in ("csv", "jsonl"):
        return refuse(request, 404, f"no export as {fmt!r}: use /export.csv or /export.jsonl")
    view = await blocking(_view, request, ui)
    if view.problems:
        return refuse(request, 400, "; ".join(view.problems))
    body = _csv(ui, view) if fmt == "csv" else _jsonl(ui, view)
    kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"imgmod-{view.job or 'all'}.{fmt}")  # a header
    return StreamingResponse(
        body,
        media_type=f"{kind}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _picture_of(ui: UiState, item_id: int) -> Picture | None:
    history = store.item_history(ui.engine, item_id)
    if history is None:
        return None
    from worker.ui.present import picture

    return picture(history.item)


@needs("viewer")
async def image(request: Request) -> Response:
    """The picture of an OSS object (a redirect to a short-lived signed URL) or a local file."""
    ui = state(request)
    pic = await blocking(_picture_of, ui, request.path_params["item_id"])
    if pic is None:
        return refuse(request, 404, "no such image")
    if pic.kind == "url" and pic.image_url:
        return RedirectResponse(pic.image_url, status_code=303)
    path = local_image(pic)
    if path is not None:
        return FileResponse(path, headers={"Cache-Control": "private, max-age=300"})
    if pic.kind == "oss":
        if not ui.signer.available:
            return refuse(request, 503, "no OSS credentials in this server's environment")
        url = await blocking(ui.signer.url, pic)
        if url:
            return RedirectResponse(
                url, status_code=303, headers={"Cache-Control": "private, max-age=120"}
            )
    return refuse(request, 404, "this image cannot be shown (no URL, object or readable file)")


@needs("viewer")
async def dashboard(request: Request) -> Response:
    ui = state(request)
    jobs = await blocking(store.list_jobs, ui.engine)
    name = request.query_params.get("job") or (jobs[-1].name if jobs else None)
    return render(request, "dashboard.html", {"job": name, "jobs": [job.name for job in jobs]})


def _figures(ui: UiState, name: str) -> dict[str, Any] | None:
    job = store.get_job(ui.engine, name)
    if job is None:
        return None
    return chart_json(report_data(ui.engine, job, prices=ui.settings.billing.prices))


@needs("viewer")
async def dashboard_data(request: Request) -> Response:
    name = request.query_params.get("job") or ""
    figures = await blocking(_figures, state(request), name)
    if figures is None:
        return JSONResponse({"error": f"no job named {name!r}"}, status_code=404)
    return JSONResponse(figures, headers={"Cache-Control": "no-store"})


ROUTES = [
    Route("/browse", browse, methods=["GET"]),
    Route("/export.{fmt:str}", export, methods=["GET"]),
    Route("/image/{item_id:int}", image, methods=["GET"]),
    Route("/dashboard", dashboard, methods=["GET"]),
    Route("/dashboard/data", dashboard_data, methods=["GET"]),
]
