"""Twirp as LiveKit's server speaks it, on aiohttp.

``POST /twirp/livekit.<Service>/<Method>`` with a ``Content-Type`` of ``application/protobuf``
(what LiveKit's server SDKs and ``lk`` send) or ``application/json`` (protojson, what ``curl``
users send; unknown fields are ignored as Twirp's Go server ignores them). The answer has the
request's content type; JSON answers use the proto field names, as Twirp v8 does by default.

Errors are Twirp's JSON error object, whatever the request's content type:
``{"code": "not_found", "msg": "..."}`` with the HTTP status of the code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

__all__ = ["PREFIX", "Method", "TwirpError", "twirp_error_response", "twirp_handler"]

log = logging.getLogger("byeline.livekit")

PREFIX: Final = "/twirp/"

#: Twirp error codes and their HTTP status (twitchtv/twirp ``ServerHTTPStatusFromErrorCode``).
ERROR_STATUS: Final[Mapping[str, int]] = {
    "canceled": 408,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
    "unknown": 500,
}

JSON: Final = "application/json"
PROTOBUF: Final = "application/protobuf"


class TwirpError(Exception):
    """A Twirp error: ``code`` is one of :data:`ERROR_STATUS`, ``msg`` says why."""

    def __init__(self, code: str, msg: str, meta: Mapping[str, str] | None = None) -> None:
        if code not in ERROR_STATUS:
            raise ValueError(f"not a Twirp error code: {code!r}")
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.meta = dict(meta or {})

    @property
    def status(self) -> int:
        """The HTTP status Twirp gives this code."""
        return ERROR_STATUS[self.code]


def twirp_error_response(error: TwirpError) -> web.Response:
    """The error as Twirp writes it: JSON, the code's HTTP status."""
    body: dict[str, Any] = {"code": error.code, "msg": error.msg}
    if error.meta:
        body["meta"] = error.meta
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=error.status,
        content_type=JSON,
    )


#: A method handler: the decoded request and the request's Authorization header.
Handler = Callable[[Any, str | None], Awaitable[Message]]


@dataclass(frozen=True)
class Method:
    """One Twirp method: its request message type and its handler."""

    request: type[Message]
    handler: Handler


def _decode(body: bytes, content_type: str, message: Message) -> Message:
    try:
        if content_type == PROTOBUF:
            message.ParseFromString(body)
        else:
            json_format.Parse(body.decode("utf-8") or "{}", message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        raise TwirpError("malformed", f"the request body could not be decoded: {exc}") from None
    return message


def _encode(message: Message, content_type: str) -> web.Response:
    if content_type == PROTOBUF:
        return web.Response(body=message.SerializeToString(), content_type=PROTOBUF)
    text = json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)
    return web.Response(text=text, content_type=JSON)


def twirp_handler(
    services: Mapping[str, Mapping[str, Method]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler for ``/twirp/{service}/{method}`` over ``services``.

    ``services`` maps a full service name (``livekit.RoomService``) to its methods by name.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            if request.method != "POST":
                raise TwirpError(
                    "bad_route", f"unsupported method {request.method} (only POST is allowed)"
                )
            service_name = request.match_info.get("service", "")
            method_name = request.match_info.get("method", "")
            method = services.get(service_name, {}).get(method_name)
            if method is None:
                raise TwirpError("bad_route", f"no handler for path {request.path!r} in byeline")
            content_type = request.content_type
            if content_type not in (JSON, PROTOBUF):
                raise TwirpError(
                    "bad_route",
                    f"unexpected Content-Type: {content_type!r} (use {PROTOBUF} or {JSON})",
                )
            body = await request.read()
            message = _decode(body, content_type, method.request())
            reply = await method.handler(message, request.headers.get("Authorization"))
            return _encode(reply, content_type)
        except TwirpError as exc:
            if exc.status >= 500:
                log.warning("twirp %s: %s", request.path, exc)
            return twirp_error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return twirp_error_response(TwirpError("malformed", "request body too large"))

    return handle
