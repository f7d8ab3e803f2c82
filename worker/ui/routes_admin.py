"""Admin only: quarantine a job's OSS objects by decision from the page (``imgmod act``'s work,
:mod:`worker.actions`), behind a confirmation that names the count.

The page shows the plan first (how many objects would change, from the store alone, no OSS
request); the admin types that number to confirm; the POST recomputes the plan and refuses when
the number no longer matches (someone decided since), so what runs is what was confirmed. The
run goes on in a background thread of the server, paced like the command; its tally is shown
on the page, its events carry the admin's name.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from worker import store
from worker.actions import Pacer, Runner, Tally, plan, run_changes
from worker.store.schema import DECISIONS
from worker.ui.web import UiState, blocking, needs, refuse, render, state

log = logging.getLogger("imgmod.ui")
MODES = ("freeze", "move")
PREFIX = "quarantine/"


@dataclass
class ActRun:
    """One run started from the page: what, by whom, and its tally so far."""

    job: str
    decision: str
    mode: str
    actor: str
    planned: int
    tally: Tally = field(default_factory=Tally)
    done: bool = False
    error: str | None = None


RUNS: dict[str, ActRun] = {}  # by job name: the latest run started from this server
_RUNS_LOCK = threading.Lock()


def _choice(value: Any, allowed: tuple[str, ...], default: str) -> str:
    return value if isinstance(value, str) and value in allowed else default


def _count(ui: UiState, job_id: int, decision: str, mode: str) -> Tally:
    tally = Tally()
    for _ in plan(ui.engine, job_id, decision, mode=mode, prefix=PREFIX, undo=False, tally=tally):
        pass
    return tally


def _page(ui: UiState, job: str | None, decision: str, mode: str) -> dict[str, Any]:
    found = store.get_job(ui.engine, job) if job else None
    context: dict[str, Any] = {
        "jobs": [j.name for j in store.list_jobs(ui.engine)],
        "job": found.name if found else None,
        "decision": decision,
        "mode": mode,
        "decisions": DECISIONS,
        "modes": MODES,
        "credentials": ui.credentials is not None,
    }
    if found is not None:
        context["tally"] = _count(ui, found.id, decision, mode)
        context["run"] = RUNS.get(found.name)
    return context


@needs("admin")
async def act_page(request: Request) -> Response:
    ui, params = state(request), request.query_params
    decision = _choice(params.get("decision"), DECISIONS, "block")
    mode = _choice(params.get("mode"), MODES, "freeze")
    context = await blocking(_page, ui, params.get("job"), decision, mode)
    return render(request, "act.html", context)


def _run(ui: UiState, run: ActRun, job_id: int) -> None:
    assert ui.credentials is not None
    runner = Runner(ui.engine, ui.settings, ui.credentials, run.actor, Pacer(ui.settings.act.qps))
    changes = plan(  # counts into the run's tally as it goes: the page shows the progress
        ui.engine, job_id, run.decision, mode=run.mode, prefix=PREFIX, undo=False, tally=run.tally
    )
    try:
        run_changes(runner, changes, run.tally, lambda line: log.warning("act: %s", line))
    except Exception as exc:  # the database away: the page says so; a rerun continues
        run.error = f"stopped: {type(exc).__name__}; start it again to continue"
    finally:
        run.done = True


@needs("admin", post=True)
async def act_start(request: Request) -> Response:
    ui, user = state(request), request.state.user
    form = await request.form()
    decision = _choice(form.get("decision"), DECISIONS, "")
    mode = _choice(form.get("mode"), MODES, "")
    job = store.get_job(ui.engine, str(form.get("job") or ""))
    if job is None or not decision or not mode:
        return refuse(request, 400, "the form named no job, decision or mode; nothing was done")
    if ui.credentials is None:
        return refuse(request, 503, "no OSS credentials in this server's environment")
    tally = await blocking(_count, ui, job.id, decision, mode)
    confirm = str(form.get("confirm") or "").strip().replace(",", "")
    if confirm != str(tally.changes):
        return refuse(
            request,
            409,
            f"not started: {tally.changes:,} objects would {mode} now; type exactly that number "
            "to confirm (the plan may have changed since the page was shown)",
        )
    with _RUNS_LOCK:
        running = RUNS.get(job.name)
        if running is not None and not running.done:
            return refuse(request, 409, f"a run on {job.name} is still going; wait for it")
        run = RUNS[job.name] = ActRun(job.name, decision, mode, user.name, tally.changes)
    threading.Thread(target=_run, args=(ui, run, job.id), name="imgmod-ui-act", daemon=True).start()
    query = urlencode({"job": job.name, "decision": decision, "mode": mode})
    return RedirectResponse(f"/act?{query}", status_code=303)


ROUTES = [
    Route("/act", act_page, methods=["GET"]),
    Route("/act", act_start, methods=["POST"]),
]
