"""Every setting of imgmod, read from the environment in one place.

Nothing else reads ``os.environ``: call :func:`load_settings` (or :func:`load_credentials`) at
the edge and pass the typed values down. Imports only the pure vendor and prices tables."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from worker.prices import Billing, billing_from
from worker.settings_act import ActSettings, load_act_settings
from worker.settings_batch import BatchSettings, load_batch_settings
from worker.settings_ui import UiSettings, load_ui_settings
from worker.vendor import REGIONS, InvalidParameter, validate_info_type, validate_services
from worker.vendor import (
    parse_per_code as parse_per_code,  # moved to vendor; still importable from here
)

DEFAULTS: dict[str, str] = {
    "IMGMOD_DATABASE_URL": "sqlite:///imgmod.db",
    "IMGMOD_BROKER_URL": "redis://127.0.0.1:6379/0",
    "IMGMOD_LIMITER_URL": "",  # empty: the broker URL when it is redis://, else none
    "IMGMOD_REGION": "ap-southeast-1",
    "IMGMOD_VPC": "0",
    "IMGMOD_ENDPOINT": "",
    "IMGMOD_OSS_ENDPOINT": "",  # empty: OSS's public (or, with IMGMOD_VPC=1, internal) endpoint
    # 1: accept a plain http:// IMGMOD_ENDPOINT off loopback (the signed request and any STS
    # token then cross the network in clear text; e.g. the emulator on a compose network).
    "IMGMOD_ALLOW_HTTP": "0",
    "IMGMOD_SERVICE": "baselineCheck_global",
    # Ext data (custom image library hits, text in image) is half of what a job keeps: ask for
    # it unless told otherwise. publicFigure/logoData need the advanced service: opt-in.
    "IMGMOD_INFO_TYPE": "customImage,textInImage",
    "IMGMOD_QPS": "100",
    "IMGMOD_CONNECT_TIMEOUT": "3.05",
    "IMGMOD_READ_TIMEOUT": "10",
    # Wall-clock cap on one API call, answer included: the read timeout is per socket read, so
    # a trickling server could hold a call past the lease and another worker would bill again.
    # Above connect + read timeouts (13 s), half the 30 s lease.
    "IMGMOD_CALL_DEADLINE": "15",
    "IMGMOD_MAX_ATTEMPTS": "8",
    "IMGMOD_RETRY_PER_CODE": "",
    "IMGMOD_BACKOFF_BASE": "0.5",
    "IMGMOD_BACKOFF_CAP": "60",
    # A claimed row's lease, renewed by its live worker every third of it (worker.heartbeat):
    # a killed worker's rows go back to the queue about this long after the kill.
    "IMGMOD_LEASE_SECONDS": "30",
    "IMGMOD_VISIBILITY_TIMEOUT": "600",
    "IMGMOD_WORKER_CONCURRENCY": "192",
    "IMGMOD_WORKER_PROCESSES": "auto",  # one `imgmod worker`'s processes: auto = one per core
    "IMGMOD_LOG_LEVEL": "INFO",
    "IMGMOD_LOG_FORMAT": "text",
    "IMGMOD_METRICS_PORT": "0",
    "IMGMOD_METRICS_HOST": "127.0.0.1",
    # Messages waiting in the broker at most (~1 KB each in Redis): 20,000 is ~20 MB, and at
    # the refill mark (half) still 100 s of work at 100 QPS, so workers never starve.
    "IMGMOD_QUEUE_WINDOW": "20000",
    # Seconds a broker connect or command may take before it counts as unreachable.
    "IMGMOD_BROKER_TIMEOUT": "5",
    # Local files uploaded at once per worker process (each held in memory, up to 20 MB).
    "IMGMOD_UPLOAD_CONCURRENCY": "16",
}


# A password given as a query parameter (``?password=...``, as some drivers accept).
_PASSWORD_PARAM = re.compile(r"(?i)((?:^|[?&;])password=)[^&;#]*")


# Variables an earlier imgmod read and this one ignores, with what replaced them: doctor names
# them when they are still set, so an operator's tuning does not vanish silently.
OBSOLETE: dict[str, str] = {
    "IMGMOD_POOL_SIZE": "the HTTP pool now follows the worker's threads (-c / "
    "IMGMOD_WORKER_CONCURRENCY)",
}


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable and the fix."""


@dataclass(frozen=True)
class Credentials:
    """An AccessKey pair (and STS token). The secret never shows in repr or str."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"Credentials(access_key_id={self.access_key_id!r}, secret=***)"


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    limiter_url: str | None
    region: str
    vpc: bool
    endpoint: str
    service: str
    info_type: str
    qps: float
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    retry_per_code: str
    backoff_base: float
    backoff_cap: float
    lease_seconds: float
    visibility_timeout: int
    worker_concurrency: int
    log_level: str
    log_format: str = "text"
    worker_processes: int = 0  # processes of `imgmod worker`; 0: one per usable core
    metrics_port: int = 0  # 0: no metrics endpoint
    metrics_host: str = "127.0.0.1"
    queue_window: int = 20_000  # messages in the Redis broker at most, see worker.window
    broker_timeout: float = 5.0  # seconds per broker connect / command
    call_deadline: float = 15.0  # wall-clock seconds one API call may take, answer included
    allow_http: bool = False  # a plain http:// endpoint off loopback was explicitly accepted
    oss_endpoint: str = ""  # IMGMOD_OSS_ENDPOINT, checked by worker.oss when a client is built
    upload_concurrency: int = 16  # local files uploaded at once per worker process
    act: ActSettings = ActSettings()  # imgmod act/restore (worker.settings_act)
    obsolete: tuple[str, ...] = ()  # variables still set that imgmod no longer reads (doctor)
    billing: Billing = Billing()  # daily call budget and prices (worker.prices)
    ui: UiSettings = UiSettings()  # the review page, imgmod ui (worker.settings_ui)
    batch: BatchSettings = BatchSettings()  # item ids per message (worker.settings_batch)

    def __repr__(self) -> str:
        """Every field, with the passwords of the database, broker and limiter URLs masked:
        ``print(load_settings())`` ends up in tickets and CI logs."""
        shown = {
            name: mask_url(value) if name.endswith("_url") and isinstance(value, str) else value
            for name, value in self.__dict__.items()
        }
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def _float(env: Mapping[str, str], name: str, minimum: float = 0.0) -> float:
    raw = env.get(name, DEFAULTS[name])
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= minimum:
        raise ConfigError(f"{name}={raw!r} must be greater than {minimum:g}")
    return value


def _int(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, DEFAULTS[name])
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1")
    return value


def _port(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, DEFAULTS[name])
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise ConfigError(f"{name}={raw!r} must be between 0 (off) and 65535")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, DEFAULTS[name]).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: use 1 or 0")


def _per_code(env: Mapping[str, str]) -> str:
    raw = env.get("IMGMOD_RETRY_PER_CODE", "")
    try:
        parse_per_code(raw)
    except ValueError as exc:
        raise ConfigError(f"IMGMOD_RETRY_PER_CODE={raw!r}: {exc}") from None
    return raw


def normalize_database_url(url: str) -> str:
    """Plain ``postgresql://`` URLs name the driver we ship (psycopg2) explicitly."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    return url


def mask_url(url: str) -> str:
    """``url`` with the password of its userinfo, and any ``password=`` query value, as ``***``.

    ``postgresql://imgmod:hunter2@db/imgmod`` -> ``postgresql://imgmod:***@db/imgmod``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    tail = _PASSWORD_PARAM.sub(r"\1***", tail)
    return f"{scheme}{sep}{authority}{tail}"


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ``::1`` (brackets allowed): traffic that stays on this host."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _custom_endpoint(endpoint: str, allow_http: bool) -> str:
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            f"IMGMOD_ENDPOINT={mask_url(endpoint)!r} needs a scheme, e.g. https://host or "
            "http://127.0.0.1:8080"
        )
    parts = urlsplit(endpoint)
    if "@" in parts.netloc:
        raise ConfigError(
            f"IMGMOD_ENDPOINT={mask_url(endpoint)!r} carries user@ or user:password@; remove it "
            "(the API is authenticated by ALIBABA_CLOUD_ACCESS_KEY_ID and _SECRET)"
        )
    if parts.scheme == "http" and not allow_http and not is_loopback_host(parts.hostname or ""):
        raise ConfigError(
            f"IMGMOD_ENDPOINT={endpoint!r} is plain http:// to a host off this machine: the signed "
            "request and any STS token would cross the network readable by anyone on the path; "
            "use https://, or set IMGMOD_ALLOW_HTTP=1 to accept that (e.g. the emulator on a "
            "private compose network)"
        )
    return endpoint.rstrip("/")


def resolve_endpoint(region: str, vpc: bool, endpoint: str, allow_http: bool = False) -> str:
    """The base URL (scheme, host, optional port) the client posts to.

    A custom ``endpoint`` may be plain http:// only on loopback (the emulator) or with
    ``allow_http``: over a network, http:// hands the signed body and the STS token to anyone
    on the path, and a redirect-free https:// endpoint is what the vendor serves.
    """
    if endpoint:
        return _custom_endpoint(endpoint, allow_http)
    if region not in REGIONS:
        raise ConfigError(
            f"IMGMOD_REGION={region!r} is not a region of Image Moderation 2.0; "
            f"use one of {', '.join(REGIONS)}"
        )
    row = REGIONS[region]
    if vpc:
        if row.vpc_endpoint is None:
            with_vpc = ", ".join(r.id for r in REGIONS.values() if r.vpc_endpoint)
            raise ConfigError(
                f"IMGMOD_VPC=1 but region {region} has no VPC endpoint; "
                f"unset IMGMOD_VPC or use one of {with_vpc}"
            )
        return f"https://{row.vpc_endpoint}"
    return f"https://{row.public_endpoint}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    region = env.get("IMGMOD_REGION", DEFAULTS["IMGMOD_REGION"])
    vpc = _bool(env, "IMGMOD_VPC")
    allow_http = _bool(env, "IMGMOD_ALLOW_HTTP")
    endpoint = resolve_endpoint(region, vpc, env.get("IMGMOD_ENDPOINT", ""), allow_http)
    try:
        service = ",".join(validate_services(env.get("IMGMOD_SERVICE", DEFAULTS["IMGMOD_SERVICE"])))
        # Unset: the default; set to empty: no infoType at all (no Ext data).
        info_type = validate_info_type(env.get("IMGMOD_INFO_TYPE", DEFAULTS["IMGMOD_INFO_TYPE"]))
    except InvalidParameter as exc:
        variable = {"Service": "IMGMOD_SERVICE", "infoType": "IMGMOD_INFO_TYPE"}[exc.field]
        raise ConfigError(f"{variable}: {exc.reason}") from None
    broker_url = env.get("IMGMOD_BROKER_URL", DEFAULTS["IMGMOD_BROKER_URL"])
    limiter_url = env.get("IMGMOD_LIMITER_URL", "") or (
        broker_url if broker_url.startswith(("redis://", "rediss://", "unix://")) else None
    )
    level = env.get("IMGMOD_LOG_LEVEL", DEFAULTS["IMGMOD_LOG_LEVEL"]).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"IMGMOD_LOG_LEVEL={level!r}: use DEBUG, INFO, WARNING or ERROR")
    log_format = env.get("IMGMOD_LOG_FORMAT", DEFAULTS["IMGMOD_LOG_FORMAT"]).strip().lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"IMGMOD_LOG_FORMAT={log_format!r}: use text or json")
    return Settings(
        obsolete=tuple(name for name in OBSOLETE if name in env),
        database_url=normalize_database_url(
            env.get("IMGMOD_DATABASE_URL", DEFAULTS["IMGMOD_DATABASE_URL"])
        ),
        broker_url=broker_url,
        limiter_url=limiter_url,
        region=region,
        vpc=vpc,
        endpoint=endpoint,
        service=service,
        info_type=info_type,
        qps=_float(env, "IMGMOD_QPS"),
        connect_timeout=_float(env, "IMGMOD_CONNECT_TIMEOUT"),
        read_timeout=_float(env, "IMGMOD_READ_TIMEOUT"),
        call_deadline=_float(env, "IMGMOD_CALL_DEADLINE"),
        allow_http=allow_http,
        max_attempts=_int(env, "IMGMOD_MAX_ATTEMPTS"),
        retry_per_code=_per_code(env),
        backoff_base=_float(env, "IMGMOD_BACKOFF_BASE"),
        backoff_cap=_float(env, "IMGMOD_BACKOFF_CAP"),
        lease_seconds=_float(env, "IMGMOD_LEASE_SECONDS"),
        visibility_timeout=_int(env, "IMGMOD_VISIBILITY_TIMEOUT"),
        worker_concurrency=_int(env, "IMGMOD_WORKER_CONCURRENCY"),
        worker_processes=0  # auto: one per usable core (worker.supervise)
        if env.get("IMGMOD_WORKER_PROCESSES", "auto").strip().lower() == "auto"
        else _int(env, "IMGMOD_WORKER_PROCESSES"),
        log_level=level,
        log_format=log_format,
        metrics_port=_port(env, "IMGMOD_METRICS_PORT"),
        metrics_host=env.get("IMGMOD_METRICS_HOST", DEFAULTS["IMGMOD_METRICS_HOST"]).strip()
        or DEFAULTS["IMGMOD_METRICS_HOST"],
        queue_window=_int(env, "IMGMOD_QUEUE_WINDOW"),
        broker_timeout=_float(env, "IMGMOD_BROKER_TIMEOUT"),
        oss_endpoint=env.get("IMGMOD_OSS_ENDPOINT", "").strip().rstrip("/"),
        upload_concurrency=_int(env, "IMGMOD_UPLOAD_CONCURRENCY"),
        billing=billing_from(env, ConfigError),
        ui=load_ui_settings(env, ConfigError),
        act=load_act_settings(env, ConfigError),
        batch=load_batch_settings(env, ConfigError),
    )


def load_credentials(env: Mapping[str, str] | None = None) -> Credentials:
    env = os.environ if env is None else env
    key_id = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "").strip()
    secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "").strip()
    if not key_id or not secret:
        missing = [
            name
            for name, value in (
                ("ALIBABA_CLOUD_ACCESS_KEY_ID", key_id),
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret),
            )
            if not value
        ]
        raise ConfigError(
            f"missing credentials: set {' and '.join(missing)} "
            "(and ALIBABA_CLOUD_SECURITY_TOKEN when using STS)"
        )
    token = env.get("ALIBABA_CLOUD_SECURITY_TOKEN", "").strip() or None
    for name, value in (
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", key_id),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", token),
    ):
        problem = header_unsafe(value or "")
        if problem:
            raise ConfigError(
                f"{name} contains {problem}, which cannot be sent in an HTTP header; export the "
                "value exactly as issued, on one line (the value itself is not shown)"
            )
    return Credentials(key_id, secret, token)


def header_unsafe(value: str) -> str:
    """What in ``value`` cannot travel in an HTTP header as a credential ("" when nothing).

    Keys, secrets and STS tokens are printable ASCII without spaces. A line break would be
    refused by the HTTP library with the value quoted in its error (past the log redaction, which
    matches the value as given) and then retried as a network fault; so it is refused here, once,
    naming only the position.
    """
    for position, char in enumerate(value):
        if "!" <= char <= "~":
            continue
        if char in "\r\n":
            kind = "a line break"
        elif char.isspace():
            kind = "a space"
        elif char.isascii():
            kind = f"a control character (U+{ord(char):04X})"
        else:
            kind = f"a non-ASCII character (U+{ord(char):04X})"
        return f"{kind} at position {position}"
    return ""
