"""The JSON bodies the emulator sends: service answers and gateway errors, shaped as the vendor's.

A service answer is HTTP 200 ``{"RequestId", "Code", "Msg", "Data"}`` with ``Data`` only for
Code 200; a gateway error is HTTP 4xx ``{"RequestId", "HostId", "Code", "Message",
"Recommend"}`` with a string ``Code``. Bodies are compact, as the vendor sends them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

from worker.emulator.auth import GatewayError


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


def service_body(code: int, msg: str, data: dict[str, Any] | None, request_id: str) -> bytes:
    payload: dict[str, Any] = {"RequestId": request_id, "Code": code, "Msg": msg}
    if code == 200 and data is not None:
        payload["Data"] = data
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def gateway_body(error: GatewayError, host: str, request_id: str) -> bytes:
    recommend = (
        "https://api.aliyun.com/troubleshoot?q="
        f"{quote(error.code)}&product=Green&requestId={request_id}"
    )
    payload = {
        "RequestId": request_id,
        "HostId": host,
        "Code": error.code,
        "Message": error.message,
        "Recommend": recommend,
    }
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def truncated_answer_body(request_id: str) -> bytes:
    """A Code 200 answer cut off mid-way, as a dropped proxy buffer would leave it."""
    whole = service_body(
        200,
        "OK",
        {"DataId": "", "Result": [{"Label": "nonLabel", "Description": "No risk detected"}]},
        request_id,
    )
    return whole[: len(whole) // 2]


def gateway_html(status: int, reason: str) -> bytes:
    """The HTML page a load balancer sends instead of the API's JSON when a backend is down."""
    title = f"{status} {reason}"
    return (
        f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
        "<hr><center>Tengine</center></body></html>"
    ).encode()
