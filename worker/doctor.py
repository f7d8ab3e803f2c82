"""``imgmod doctor``: is this machine ready to run a job? One check per dependency.

Each check is a function returning a :class:`Check` (name, ok, detail, fix, warnings) and never
raising, so one broken piece does not hide the state of the others. A warning does not fail a
check: it names a setting that works but is probably not what was meant.

The endpoint check proves the credentials with a request built to be free: an ImageModeration
request with no image at all, which the service answers with body Code 400 ("parameter empty")
*after* the gateway has verified the signature and the AccessKey. What doctor can say is that
code, not the bill: the vendor's page bills "requests that return an HTTP status code of 200",
and this Code-400 body arrives with HTTP 200; its code table is read as "only Code 200 is
billed". So the probe stays invalid (never an image), and the output says what is known.
A gateway error (``SignatureDoesNotMatch``, ``InvalidAccessKeyId.NotFound``...) fails the check.

The AccessKey secret is never printed; the key id is shown masked (``emul****key``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from worker.limits import QPS_MARGIN
from worker.settings import (
    OBSOLETE,
    ConfigError,
    Credentials,
    Settings,
    is_loopback_host,
    load_credentials,
    load_settings,
)
from worker.vendor import REGIONS

PROBE_DATA_ID = "imgmod-doctor"
PROBE_TIMEOUT = 5.0
_VENDOR_HOST = re.compile(r"green-cip(?:-vpc)?\.([a-z0-9-]+)\.aliyuncs\.com")


@dataclass(frozen=True)
class Check:
    """The outcome of one check; ``fix`` says what to do when ``ok`` is False; ``warnings``
    name what works but is probably not meant (they do not fail the check); ``notes`` say what
    no check can prove from here (always shown)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def mask_key_id(key_id: str) -> str:
    """Enough of an AccessKey id to recognise it, not enough to use it: ``emul****key``."""
    if len(key_id) <= 8:
        return "****"
    return f"{key_id[:4]}****{key_id[-3:]}"


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _hide(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# ---------------------------------------------------------------- configuration


def check_settings(env: Mapping[str, str] | None = None) -> tuple[Check, Settings | None]:
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        return Check("settings", False, str(exc), "correct the variable named above"), None
    detail = (
        f"endpoint {settings.endpoint}, service {', '.join(services_of(settings))}, "
        f"QPS {settings.qps:g}, "
        f"{settings.worker_concurrency} threads per worker"
    )
    return Check("settings", True, detail, warnings=settings_warnings(settings)), settings


def services_of(settings: Settings) -> tuple[str, ...]:
    """The services ``IMGMOD_SERVICE`` names (settings keep them comma-joined, validated)."""
    return tuple(settings.service.split(","))


def endpoint_region(settings: Settings) -> str | None:
    """The vendor region the endpoint belongs to; None for another host (the emulator, a
    gateway of one's own), where the vendor's table says nothing."""
    match = _VENDOR_HOST.fullmatch(urlsplit(settings.endpoint).hostname or "")
    return match.group(1) if match else None


def settings_warnings(settings: Settings) -> tuple[str, ...]:
    """What loads fine but is probably not meant: pure, from the settings alone."""
    warnings = []
    region = endpoint_region(settings)
    # Only Singapore and Virginia list services; the other rows "reuse the console
    # configurations" of one of them and list none (worker.vendor.Region).
    listing = REGIONS[region].services if region is not None and region in REGIONS else ()
    for service in services_of(settings) if region is not None else ():
        if service in listing:
            continue
        listed = ", ".join(r.id for r in REGIONS.values() if service in r.services)
        warnings.append(
            f"the vendor's region table lists no {service} for {region}; it lists it "
            f"for {listed} only: if calls fail (InvalidAction, 408), set IMGMOD_REGION to one "
            "of those"
        )
    parts = urlsplit(settings.endpoint)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
        warnings.append(
            "the endpoint is plain http:// off this machine (IMGMOD_ALLOW_HTTP=1): the signed "
            "request and any STS token cross the network in clear text; use https:// unless "
            "this is a private test network"
        )
    for name in settings.obsolete:
        warnings.append(f"{name} is set but no longer read: {OBSOLETE[name]}; unset it")
    if settings.call_deadline > settings.lease_seconds / 2:
        warnings.append(
            f"IMGMOD_CALL_DEADLINE ({settings.call_deadline:g} s) is not well under "
            f"IMGMOD_LEASE_SECONDS ({settings.lease_seconds:g} s): a call running to its deadline "
            "can outlive its row's lease, and another worker then bills the image again; keep "
            "the deadline at most half the lease"
        )
    return tuple(warnings)


def check_credentials(env: Mapping[str, str] | None = None) -> tuple[Check, Credentials | None]:
    try:
        creds = load_credentials(env)
    except ConfigError as exc:
        return Check("credentials", False, str(exc), "export the variables named above"), None
    detail = f"AccessKey {mask_key_id(creds.access_key_id)}" + (
        " with an STS token" if creds.security_token else ""
    )
    return Check("credentials", True, detail), creds


# ---------------------------------------------------------------- services


def check_database(settings: Settings) -> Check:
    """Reachable, and at exactly this imgmod's schema revision (nothing is migrated here)."""
    import sqlalchemy as sa

    from worker import store

    url = sa.engine.make_url(settings.database_url)
    where = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        from pathlib import Path

        if not Path(url.database).exists():
            return Check(
                "database",
                False,
                f"{where}: the file does not exist",
                "run `imgmod db upgrade` (or check IMGMOD_DATABASE_URL)",
            )
    engine = store.make_engine(settings.database_url)
    try:
        try:
            revision = store.current_revision(engine)
            store.check_schema(engine)
        except store.SchemaError as exc:
            return Check("database", False, str(exc), "run `imgmod db upgrade`")
        except sa.exc.SQLAlchemyError as exc:
            reason = _hide(_short(getattr(exc, "orig", None) or exc), url.password)
            return Check(
                "database",
                False,
                f"{where}: cannot connect: {reason}",
                "start the database or correct IMGMOD_DATABASE_URL",
            )
    finally:
        engine.dispose()
    return Check("database", True, f"{where} at schema revision {revision}")


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def _ping_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


def check_broker(settings: Settings) -> Check:
    from kombu.utils.url import maybe_sanitize_url

    where = str(maybe_sanitize_url(settings.broker_url))
    fix = "start the broker or correct IMGMOD_BROKER_URL"
    try:
        if _is_redis(settings.broker_url):
            _ping_redis(settings.broker_url)
        else:
            from kombu.connection import Connection

            connection = Connection(settings.broker_url, connect_timeout=PROBE_TIMEOUT)  # type: ignore[no-untyped-call]
            with connection as conn:
                conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return Check("broker", False, f"{where}: {type(exc).__name__}: {_short(exc)}", fix)
    return Check("broker", True, f"{where} answers")


def _limiter(settings: Settings) -> Any:
    from worker.limits_local import limiter_for

    return limiter_for(settings)


def check_limiter(settings: Settings) -> Check:
    """The global limiter's Redis answers and runs its script; reports the rate in force."""
    if settings.limiter_url is None:
        return Check(
            "limiter",
            True,
            "no Redis limiter: each worker process keeps IMGMOD_QPS on its own "
            "(right for one worker process only; set IMGMOD_LIMITER_URL for more)",
        )
    from kombu.utils.url import maybe_sanitize_url

    where = str(maybe_sanitize_url(settings.limiter_url))
    try:
        limiter = _limiter(settings)
        rate = limiter.current_rate()
        limiter.client.close()
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return Check(
            "limiter",
            False,
            f"{where}: {type(exc).__name__}: {_short(exc)}",
            "start Redis or correct IMGMOD_LIMITER_URL (default: the broker URL)",
        )
    cut = (
        "" if rate >= settings.qps * QPS_MARGIN * 0.99 else " (cut after 403s; recovers by itself)"
    )
    return Check("limiter", True, f"{where}: {rate:.1f} permits/s in force{cut}")


def probe_fields(service: str) -> dict[str, str]:
    """An ImageModeration request without any image, which the service answers with Code 400.

    It must stay invalid: the vendor bills Code-200 answers, and without an image there is
    nothing a Code 200 could be about."""
    return {"Service": service, "ServiceParameters": json.dumps({"dataId": PROBE_DATA_ID})}


def _take_permit(settings: Settings) -> None:
    """Take one permit of the global limiter, so a running job is not pushed over the cap."""
    if settings.limiter_url is None:
        return
    try:
        limiter = _limiter(settings)
        limiter.acquire(timeout=PROBE_TIMEOUT)
        limiter.client.close()
    except Exception:  # noqa: BLE001,S110 - the limiter check reports this; probe anyway
        pass


def check_endpoint(settings: Settings, creds: Credentials, service: str | None = None) -> Check:
    """The endpoint answers and its gateway accepts our signature, with a request no service
    can answer with Code 200 (see the module docstring), asked of ``service`` (default: the
    first configured). With several services configured each is probed: an account can have
    one activated and not another (Code 408), which only that service's answer shows."""
    from worker.client import ModerationClient
    from worker.errors import (
        AuthError,
        BadRequest,
        ModerationError,
        NoPermission,
        Throttled,
        TransportError,
        error_for,
    )

    service = service or services_of(settings)[0]
    name = "endpoint" if len(services_of(settings)) == 1 else f"endpoint ({service})"
    try:
        client = ModerationClient(
            settings.endpoint,
            creds,
            connect_timeout=min(settings.connect_timeout, PROBE_TIMEOUT),
            read_timeout=min(settings.read_timeout, 2 * PROBE_TIMEOUT),
            deadline=min(settings.call_deadline, 3 * PROBE_TIMEOUT),
            pool_size=1,
            allow_http=settings.allow_http,
        )
    except ValueError as exc:  # refused before sending: nothing went out
        return Check(name, False, f"not probed: {exc}", "correct the setting named above")
    _take_permit(settings)
    try:
        answer = client.send(probe_fields(service)).response
    except ModerationError as exc:
        if not isinstance(exc, TransportError):
            return Check(
                name, False, f"{settings.endpoint}: {exc.summary}: {exc.message}", exc.what_to_do()
            )
        return Check(
            name,
            False,
            f"{settings.endpoint}: no answer: {exc.message}",
            "check IMGMOD_ENDPOINT or IMGMOD_REGION (and IMGMOD_VPC), the network path and "
            "any proxy; the endpoint must be reachable from every worker host",
        )
    finally:
        client.close()
    rid = f", RequestId {answer.request_id}" if answer.request_id else ""
    if str(answer.code) == "200":  # impossible without an image; say so loudly if it happens
        return Check(
            name, False, f"unexpected Code 200 for a request without an image{rid}", "report this"
        )
    err: ModerationError = error_for(answer.code, answer.msg, answer.request_id, answer.http_status)
    secret = creds.access_key_secret
    message = (answer.msg or "").strip().rstrip(".")
    said = _hide(f"{answer.code}: {message}", secret, creds.security_token)
    if isinstance(err, BadRequest) and str(answer.code) == "400":
        return Check(
            name,
            True,
            f"{settings.endpoint} accepted the signature (the imageless probe answers Code "
            f"{said}, as expected; the vendor bills Code-200 answers{rid})",
        )
    if isinstance(err, Throttled):
        return Check(
            name,
            True,
            f"{settings.endpoint} accepted the signature; the account is at its QPS cap now "
            f"(Code {said}{rid})",
        )
    if isinstance(err, AuthError | NoPermission):
        return Check(
            name, False, f"{settings.endpoint} refused the request: {said}{rid}", err.what_to_do()
        )
    return Check(
        name,
        False,
        f"{settings.endpoint} answered Code {said} (HTTP {answer.http_status}){rid}",
        err.what_to_do(),
    )


# ---------------------------------------------------------------- all of them


def run_checks(env: Mapping[str, str] | None = None) -> list[Check]:
    """Every check, in the order a job needs them; checks needing settings skip without them."""
    settings_check, settings = check_settings(env)
    creds_check, creds = check_credentials(env)
    checks = [settings_check, creds_check]
    if settings is None:
        return checks
    checks += [check_database(settings), check_broker(settings), check_limiter(settings)]
    if creds is not None:
        checks += [check_endpoint(settings, creds, service) for service in services_of(settings)]
    return checks


def render(checks: list[Check], unicode: bool = True) -> str:
    """One line per check (✓/✗, name, detail), the fix under each failure, then its warnings
    and notes."""
    good, bad = ("✓", "✗") if unicode else ("ok  ", "FAIL")
    lines = []
    for check in checks:
        lines.append(f"{good if check.ok else bad} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"    fix: {check.fix}")
        lines += [f"    warning: {warning}" for warning in check.warnings]
        lines += [f"    note: {note}" for note in check.notes]
    return "\n".join(lines)


def all_ok(checks: list[Check]) -> bool:
    return all(check.ok for check in checks)
