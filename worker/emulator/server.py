"""The emulator's HTTP server: one ImageModeration endpoint plus test introspection routes.

A call goes through the same stages as at the vendor: gateway (action, version, signature, time,
nonce; HTTP 4xx) -> account (408 not activated) -> QPS cap (403) -> fault injection ->
parameters (400/401/402) -> pinned rules -> image download (404/405/406) -> format and size
(407/406) -> the deterministic answer (200, billed). Configured latency is added before the
answer is written. Introspection lives under ``/__emulator__/``, which no vendor path uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from worker.emulator.aigc import SERVICE as AIGC_SERVICE
from worker.emulator.aigc import aigc_answer_for_digest
from worker.emulator.answers import answer_for_digest
from worker.emulator.auth import (
    AccessKey,
    GatewayError,
    NonceLedger,
    authenticate,
    lower_headers,
    nonce_replayed_error,
)
from worker.emulator.download import Downloaded, Downloader, read_oss_object
from worker.emulator.faults import Fault, Knobs, choose_fault, updated_knobs
from worker.emulator.formats import exceeds_size_limits, read_image_info
from worker.emulator.oss import OSS_KNOB_NAMES, OssKnobs, OssServer, updated_oss_knobs
from worker.emulator.oss_auth import TokenRegistry
from worker.emulator.oss_store import ObjectStore
from worker.emulator.params import BodyError, ModerationRequest, validate_request
from worker.emulator.replies import (
    gateway_body,
    gateway_html,
    new_request_id,
    service_body,
    truncated_answer_body,
)
from worker.emulator.rules import Rule, pinned_data, rule_for_sha256, rule_for_url
from worker.emulator.serving import abort_connection, serve
from worker.emulator.stats import Stats
from worker.emulator.throttle import SlidingWindow
from worker.signing import ACTION

INTROSPECTION_PREFIX = "/__emulator__"
UPLOAD_TOKEN_ACTION = "DescribeUploadToken"  # noqa: S105 - an API action, not a secret
_ACTIONS = frozenset({ACTION, UPLOAD_TOKEN_ACTION})
_JSON = "application/json;charset=utf-8"


@dataclass(frozen=True)
class EmulatorOptions:
    """Everything fixed at start-up; :class:`Knobs` holds what may change at runtime."""

    keys: tuple[AccessKey, ...]
    host: str = "127.0.0.1"
    port: int = 8080
    knobs: Knobs = field(default_factory=Knobs)
    download_timeout: float = 3.0
    oss_root: Path | None = None
    rules: tuple[Rule, ...] = ()
    seed: int | None = None
    oss_port: int = 0
    oss_region: str = "ap-southeast-1"
    oss_synthetic: tuple[tuple[str, int], ...] = ()
    oss_knobs: OssKnobs = field(default_factory=OssKnobs)
    upload_token_ttl: float = 3600.0
    upload_bucket: str = "emulator-uploads"


@dataclass(frozen=True)
class Answer:
    code: int
    msg: str
    data: dict[str, Any] | None = None


class Emulator:
    """The state of one emulator process and its request handlers."""

    def __init__(self, options: EmulatorOptions) -> None:
        self.options = options
        self.keys: Mapping[str, AccessKey] = {key.key_id: key for key in options.keys}
        self.knobs = options.knobs
        self.stats = Stats()
        self.nonces = NonceLedger()
        self.window = SlidingWindow(options.knobs.qps)
        self.rng = random.Random(options.seed)
        self.downloader = Downloader(options.download_timeout)
        self.tokens = TokenRegistry(options.upload_token_ttl)
        oss_root = options.oss_root or Path(tempfile.mkdtemp(prefix="imgmod-oss-"))
        self.oss = OssServer(
            ObjectStore(oss_root, options.oss_region, dict(options.oss_synthetic)),
            {key.key_id: key.secret for key in options.keys},
            self.tokens,
            options.oss_knobs,
        )

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/", self.moderate)
        app.router.add_get(f"{INTROSPECTION_PREFIX}/health", self.health)
        app.router.add_get(f"{INTROSPECTION_PREFIX}/stats", self.get_stats)
        app.router.add_post(f"{INTROSPECTION_PREFIX}/reset", self.reset_stats)
        app.router.add_get(f"{INTROSPECTION_PREFIX}/config", self.get_config)
        app.router.add_post(f"{INTROSPECTION_PREFIX}/config", self.set_config)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        await self.downloader.start()
        await self.oss.start(self.options.host, self.options.oss_port)

    async def _stop(self, app: web.Application) -> None:
        await self.oss.stop()
        await self.downloader.close()

    # -- the vendor endpoint -------------------------------------------------------------

    async def moderate(self, request: web.Request) -> web.StreamResponse:
        self.stats.enter()
        try:
            return await self._moderate(request)
        finally:
            self.stats.leave()

    async def _moderate(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = lower_headers(list(request.headers.items()))
        request_id = new_request_id()
        now = time.time()
        checked = authenticate(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=headers,
            body=body,
            keys=self.keys,
            now=now,
            actions=_ACTIONS,
        )
        if isinstance(checked, AccessKey) and not self.nonces.claim(
            headers["x-acs-signature-nonce"], now
        ):
            checked = nonce_replayed_error()
        if isinstance(checked, GatewayError):
            await self._pause()
            self.stats.record(checked.code)
            return web.Response(
                status=checked.status,
                body=gateway_body(checked, headers.get("host", ""), request_id),
                content_type="application/json",
                charset="utf-8",
            )
        key = checked
        if not key.activated:
            return await self._reply(
                Answer(408, "The account has no permission: the service is not activated."),
                request_id,
            )
        if headers.get("x-acs-action") == UPLOAD_TOKEN_ACTION:
            return await self._upload_token(request_id, now)
        if not self.window.admit(key.key_id, time.monotonic()):
            return await self._reply(
                Answer(403, f"Request exceeds the QPS limit of {self.knobs.qps:g}."), request_id
            )

        fault = choose_fault(self.knobs, self.rng.random())
        if fault is Fault.RESET:
            self.stats.record("reset")
            return abort_connection(request)
        if fault is Fault.GATEWAY_5XX:
            await self._pause()
            return self._gateway_5xx()
        if fault is Fault.MALFORMED:
            await self._pause()
            return self._malformed(request_id)
        if fault is Fault.CODE_500:
            return await self._reply(Answer(500, "A system exception occurred."), request_id)
        if fault is Fault.CODE_405:
            return await self._reply(Answer(405, "Downloading the image timed out."), request_id)

        extra_ms = self.knobs.slow_ms if fault is Fault.SLOW else 0.0
        fields = self._form_fields(request, body)
        checked_request = (
            validate_request(fields) if fields is not None else BodyError(401, "Body is not UTF-8.")
        )
        if isinstance(checked_request, BodyError):
            answer = Answer(checked_request.code, checked_request.message)
            return await self._reply(answer, request_id, extra_ms=extra_ms)
        answer = await self._answer(checked_request)
        return await self._reply(
            answer,
            request_id,
            image_key=checked_request.image_key,
            extra_ms=extra_ms,
            service=checked_request.service,
        )

    @staticmethod
    def _form_fields(request: web.Request, body: bytes) -> dict[str, str] | None:
        """RPC parameters: query string first, then the form body, which wins on a clash."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        merged = dict(request.query)
        merged.update(parse_qsl(text, keep_blank_values=True))
        return merged

    async def _answer(self, req: ModerationRequest) -> Answer:
        rules = self.options.rules
        rule = rule_for_url(rules, req.image_key) if rules else None
        if rule is not None:
            return self._pinned(rule, req)
        fetched: Downloaded | BodyError
        synthetic = self.oss.store.synthetic
        if req.oss is not None and req.oss.bucket in synthetic:
            body = self.oss.store.body(req.oss.bucket, req.oss.name)
            fetched = Downloaded(body) if body is not None else read_oss_object(None, req.oss)
        elif req.oss is not None:
            fetched = await asyncio.to_thread(read_oss_object, self.options.oss_root, req.oss)
        else:
            assert req.image_url is not None
            fetched = await self.downloader.fetch(req.image_url, req.referer)
        if isinstance(fetched, BodyError):
            return Answer(fetched.code, fetched.message)
        digest = hashlib.sha256(fetched.body).digest()
        rule = rule_for_sha256(rules, digest.hex()) if rules else None
        if rule is not None:
            return self._pinned(rule, req)
        info = read_image_info(fetched.body)
        if info is None:
            return Answer(407, "The image format is not supported.")
        if exceeds_size_limits(info):
            return Answer(
                406,
                f"The image is too large: {info.width} x {info.height} px exceeds 16384 px "
                "per edge or 167 million pixels.",
            )
        if req.service == AIGC_SERVICE:  # its own label set (worker.emulator.aigc)
            return Answer(200, "OK", aigc_answer_for_digest(digest, req.data_id))
        return Answer(200, "OK", answer_for_digest(digest, req.data_id, req.info_types))

    @staticmethod
    def _pinned(rule: Rule, req: ModerationRequest) -> Answer:
        if rule.code != 200:
            return Answer(rule.code, rule.msg or f"Pinned answer: code {rule.code}.")
        return Answer(200, rule.msg or "OK", pinned_data(rule, req.data_id))

    async def _pause(self, extra_ms: float = 0.0) -> None:
        """The configured latency (plus jitter and any slow-fault delay) before answering."""
        knobs = self.knobs
        delay_ms = knobs.latency_ms + extra_ms
        if knobs.jitter_ms > 0:
            delay_ms += self.rng.uniform(0.0, knobs.jitter_ms)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000.0)

    async def _reply(
        self,
        answer: Answer,
        request_id: str,
        image_key: str | None = None,
        extra_ms: float = 0.0,
        service: str | None = None,
    ) -> web.Response:
        await self._pause(extra_ms)
        self.stats.record(answer.code, image_key, service)
        return web.Response(
            body=service_body(answer.code, answer.msg, answer.data, request_id),
            content_type="application/json",
            charset="utf-8",
        )

    async def _upload_token(self, request_id: str, now: float) -> web.Response:
        """DescribeUploadToken: temporary keys for the upload bucket (not billed, no QPS)."""
        bucket = self.options.upload_bucket
        prefix = f"upload/{uuid.uuid4().hex}/"
        sts = self.tokens.issue(bucket, prefix, now)
        self.oss.counts["upload_tokens"] = self.oss.counts.get("upload_tokens", 0) + 1
        data = {
            "AccessKeyId": sts.key_id,
            "AccessKeySecret": sts.secret,
            "SecurityToken": sts.token,
            "BucketName": bucket,
            "FileNamePrefix": prefix,
            "OssInternetEndPoint": self.oss.url,
            "OssInternalEndPoint": self.oss.url,
            "Expiration": int(sts.expires),
        }
        return web.Response(
            body=service_body(200, "OK", data, request_id),
            content_type="application/json",
            charset="utf-8",
        )

    # -- injected faults -------------------------------------------------------------------

    def _gateway_5xx(self) -> web.Response:
        self.stats.record("gateway_5xx")
        status, reason = self.rng.choice(((502, "Bad Gateway"), (503, "Service Unavailable")))
        if self.rng.random() < 0.5:
            return web.Response(status=status, body=b"")
        return web.Response(
            status=status, body=gateway_html(status, reason), content_type="text/html"
        )

    def _malformed(self, request_id: str) -> web.Response:
        self.stats.record("malformed")
        if self.rng.random() < 0.5:
            body = b"upstream sent an invalid response"
        else:
            body = truncated_answer_body(request_id)
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    # -- introspection ---------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.stats.snapshot(), oss=dict(self.oss.counts)))

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.stats.reset()
        return web.json_response(self.stats.snapshot())

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self._config())

    def _config(self) -> dict[str, Any]:
        return {**self.knobs.as_dict(), **self.oss.knobs.as_dict(), "oss_url": self.oss.url}

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            changes = json.loads(await request.read() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the config body must be a JSON object")
            oss = {k: v for k, v in changes.items() if k in OSS_KNOB_NAMES}
            knobs = updated_knobs(self.knobs, {k: v for k, v in changes.items() if k not in oss})
            self.oss.knobs = updated_oss_knobs(self.oss.knobs, oss)
            self.knobs = knobs
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.window.cap = self.knobs.qps
        return web.json_response(self._config())


def run_emulator(options: EmulatorOptions) -> None:
    """Serve the API and the OSS port; without ``--oss-root``, uploads go to a temporary dir."""
    with tempfile.TemporaryDirectory(prefix="imgmod-oss-") as scratch:
        if options.oss_root is None:
            options = replace(options, oss_root=Path(scratch))
        assert options.oss_root is not None
        (options.oss_root / options.oss_region / options.upload_bucket).mkdir(
            parents=True, exist_ok=True
        )
        emulator = Emulator(options)
        banner = "emulator listening on"
        app = emulator.build_app()
        asyncio.run(serve(app, options.host, options.port, banner, emulator.oss.banner))
