"""The JSON API: call records, the routing result by Five9 call id, live calls, health, metrics.

Handlers read the store in a thread (its reads block) and never write. Every error is JSON
``{"error": "..."}`` with the right status: 400 for a bad parameter (the parameter is named),
401 without a valid token, 404 for an unknown id, 503 while the database is unreachable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlencode

import sqlalchemy as sa
from aiohttp import web

from byeline.store import CALL_STATUSES, DELIVERIES, ENDED_BY, CallStore
from byeline.web.handoff import routing_result
from byeline.web.metrics import CONTENT_TYPE
from byeline.web.openapi import openapi_document

if TYPE_CHECKING:
    from byeline.web.server import HttpContext

T = TypeVar("T")

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500

#: Query parameters of ``GET /calls``.
LIST_PARAMETERS: Final = frozenset(
    {"since", "until", "outcome", "delivery", "status", "route", "five9_call_id", "limit", "offset"}
)


class BadParameter(ValueError):
    """A query parameter that cannot be used; the message names it."""


def json_response(data: Any, *, status: int = 200) -> web.Response:
    """A JSON response (UTF-8, no NaN)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json")


def json_error(status: int, message: str) -> web.Response:
    """``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status=status)


def parse_time(name: str, text: str) -> float:
    """Epoch seconds (``1733140800.5``) or ISO 8601 (``2025-12-02T12:00:00Z``; UTC if no zone)."""
    try:
        value = float(text)
    except ValueError:
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise BadParameter(
                f"{name}: {text!r} is neither epoch seconds nor an ISO 8601 time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    if not math.isfinite(value):
        raise BadParameter(f"{name}: {text!r} is not a finite number")
    return value


def _int(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(f"{name}: {text!r} is not an integer") from None
    if not low <= value <= high:
        raise BadParameter(f"{name}: {value} is out of range {low}..{high}")
    return value


def _choice(name: str, text: str, allowed: frozenset[str]) -> str:
    if text not in allowed:
        raise BadParameter(f"{name}: {text!r} is not one of {', '.join(sorted(allowed))}")
    return text


def parse_list_query(query: Mapping[str, str]) -> dict[str, Any]:
    """Check the query of ``GET /calls``; return keyword arguments for ``CallStore.list_calls``."""
    unknown = sorted(set(query) - LIST_PARAMETERS)
    if unknown:
        raise BadParameter(
            f"unknown parameter(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(LIST_PARAMETERS))})"
        )
    if hasattr(query, "getall"):
        repeated = [name for name in query if len(query.getall(name)) > 1]
        if repeated:
            raise BadParameter(f"{repeated[0]}: given more than once")
    out: dict[str, Any] = {
        "limit": _int("limit", query["limit"], 1, MAX_LIMIT) if "limit" in query else DEFAULT_LIMIT,
        "offset": _int("offset", query["offset"], 0, 10**9) if "offset" in query else 0,
    }
    for name in ("since", "until"):
        if name in query:
            out[name] = parse_time(name, query[name])
    if "since" in out and "until" in out and out["since"] > out["until"]:
        raise BadParameter("since: after until")
    if "outcome" in query:
        out["ended_by"] = _choice("outcome", query["outcome"], ENDED_BY)
    if "delivery" in query:
        out["delivery"] = _choice("delivery", query["delivery"], DELIVERIES)
    if "status" in query:
        out["status"] = _choice("status", query["status"], CALL_STATUSES)
    for name in ("route", "five9_call_id"):
        if name in query:
            value = query[name]
            if not value or len(value) > 1024:
                raise BadParameter(f"{name}: must be 1 to 1024 characters")
            out[name] = value
    return out


_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _summary(record: Any) -> dict[str, Any]:
    data: dict[str, Any] = record.to_json(trace=False)
    data.pop("attributes", None)  # the list stays small; GET /calls/{id} has them
    return data


class Api:
    """The API's handlers, bound to one store, edge and metrics (see ``HttpContext``)."""

    def __init__(self, context: HttpContext) -> None:
        self.context = context

    @property
    def store(self) -> CallStore:
        return self.context.store

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_get("/calls", self.list_calls)
        app.router.add_get("/calls/{call_id}", self.get_call)
        app.router.add_get("/calls/{call_id}/recording", self.get_recording)
        app.router.add_get("/handoff/{five9_call_id}", self.handoff)
        app.router.add_get("/live", self.live)

    async def _read(self, read: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(read)
        except sa.exc.OperationalError as exc:
            raise DatabaseUnavailable(str(exc.orig or exc).splitlines()[0]) from None

    # -- handlers ---------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness and the store's state; no token needed. 200 even while spooling: calls go on."""
        stats = self.store.stats
        database = await asyncio.to_thread(self.store.ping)
        edge = self.context.edge
        return json_response(
            {
                "status": "ok" if database and stats.database_ok else "degraded",
                "database": "up" if database else "down",
                "spooled_rows": stats.spooled_rows,
                "lost_rows": stats.lost_rows,
                "active_calls": len(edge.calls) if edge is not None else None,
                "time": time.time(),
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self.context.metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(openapi_document())

    async def list_calls(self, request: web.Request) -> web.Response:
        try:
            arguments = parse_list_query(request.query)
        except BadParameter as exc:
            return json_error(400, str(exc))
        filters = {k: v for k, v in arguments.items() if k not in ("limit", "offset")}

        def read() -> tuple[list[Any], int]:
            records = self.store.list_calls(**arguments)
            return records, self.store.count_calls(**filters)

        records, total = await self._read(read)
        limit, offset = arguments["limit"], arguments["offset"]
        following = None
        if offset + len(records) < total:
            query = dict(request.query)
            query["offset"] = str(offset + limit)
            query["limit"] = str(limit)
            following = f"/calls?{urlencode(query)}"
        return json_response(
            {
                "calls": [self._with_recording(_summary(record)) for record in records],
                "total": total,
                "limit": limit,
                "offset": offset,
                "next": following,
            }
        )

    async def get_call(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        if request.query:
            return json_error(400, f"unknown parameter(s): {', '.join(sorted(request.query))}")
        record = await self._read(lambda: self.store.get_call(call_id))
        if record is None:
            return json_error(404, f"no call {call_id!r}")
        webhooks = await self._read(lambda: self.store.outbox.for_call(call_id))
        data = record.to_json()
        trunks = self.context.edge.trunks if self.context.edge is not None else None
        data["handoff"] = routing_result(record, trunks)
        data["webhooks"] = [entry.to_json() for entry in webhooks]
        data["recording"] = self._recording_url(call_id)
        return json_response(data)

    def _recording_url(self, call_id: str) -> str | None:
        """The download path of the call's recording, when there is one."""
        path = self._recording_path(call_id)
        return f"/calls/{call_id}/recording" if path is not None and path.exists() else None

    def _with_recording(self, data: dict[str, Any]) -> dict[str, Any]:
        data["recording"] = self._recording_url(str(data["call_id"]))
        return data

    def _recording_path(self, call_id: str) -> Path | None:
        edge = self.context.edge
        directory = edge.config.recordings if edge is not None else None
        if directory is None or not _CALL_ID.fullmatch(call_id):
            return None  # never a path built from an arbitrary string
        return Path(directory) / f"{call_id}.wav"

    async def get_recording(self, request: web.Request) -> web.StreamResponse:
        call_id = request.match_info["call_id"]
        path = self._recording_path(call_id)
        if path is None or not path.is_file():
            return json_error(404, f"no recording for call {call_id!r}")
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    async def handoff(self, request: web.Request) -> web.Response:
        five9_call_id = request.match_info["five9_call_id"]
        fmt = request.query.get("format", "json")
        if set(request.query) - {"format"} or fmt not in ("json", "text"):
            return json_error(400, "only format=json or format=text is accepted")
        record = await self._read(lambda: self.store.latest_for_five9_call(five9_call_id))
        if record is None:
            return json_error(404, f"no call with Five9 call id {five9_call_id!r}")
        trunks = self.context.edge.trunks if self.context.edge is not None else None
        result = routing_result(record, trunks)
        if fmt == "text":
            # One "Name=value" per line: easy to cut apart in a Five9 IVR Query module.
            lines = [f"{name}={value}" for name, value in result["headers"].items()]
            return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
        return json_response(result)

    async def live(self, request: web.Request) -> web.Response:
        edge = self.context.edge
        calls: list[dict[str, Any]] = []
        for call in edge.calls if edge is not None else []:
            attributes = call.attributes
            calls.append(
                {
                    "call_id": call.call_id,
                    "state": call.state.value,
                    "caller": call.caller,
                    "callee": call.callee,
                    "started_at": self.context.metrics.started_at(call.call_id),
                    "five9_call_id": attributes.get("sip.h.x-callid")
                    or attributes.get("sip.h.x-five9callid"),
                    "route": {k: v for k, v in attributes.items() if k.startswith("five9.")},
                }
            )
        calls.sort(key=lambda c: float(c["started_at"] or 0.0), reverse=True)
        return json_response({"calls": calls})


class DatabaseUnavailable(Exception):
    """The store's database could not be read (→ 503)."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
