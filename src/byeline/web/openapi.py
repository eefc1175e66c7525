"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``."""

from __future__ import annotations

import copy
from typing import Any, Final

from byeline.store.schema import CALL_STATUSES, DELIVERIES, ENDED_BY

_ERROR: Final = {"$ref": "#/components/responses/Error"}


def _param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_TIME = {"oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]}

_CALL_SUMMARY: Final = {
    "type": "object",
    "properties": {
        "call_id": {"type": "string"},
        "sip_call_id": {"type": ["string", "null"]},
        "trunk_id": {"type": ["string", "null"]},
        "rule_id": {"type": ["string", "null"]},
        "caller": {"type": ["string", "null"]},
        "callee": {"type": ["string", "null"]},
        "five9_call_id": {"type": ["string", "null"]},
        "five9_session_id": {"type": ["string", "null"]},
        "transport": {"type": ["string", "null"]},
        "remote": {"type": ["string", "null"]},
        "started_at": {"type": "number", "description": "epoch seconds"},
        "answered_at": {"type": ["number", "null"]},
        "ended_at": {"type": ["number", "null"]},
        "status": {"enum": sorted(CALL_STATUSES)},
        "ended_by": {"enum": [*sorted(ENDED_BY), None]},
        "final_code": {"type": ["integer", "null"]},
        "route": {"type": "object", "additionalProperties": {"type": "string"}},
        "bye_headers": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        },
        "header_refusals": {"type": "array", "items": {"type": "object"}},
        "delivery": {"enum": [*sorted(DELIVERIES), None]},
        "delivery_code": {"type": ["integer", "null"]},
        "updated_at": {"type": "number"},
    },
    "required": ["call_id", "started_at", "status"],
}

_HANDOFF: Final = {
    "type": "object",
    "properties": {
        "five9_call_id": {"type": ["string", "null"]},
        "five9_session_id": {"type": ["string", "null"]},
        "call_id": {"type": "string"},
        "status": {"type": "string"},
        "ended_at": {"type": ["number", "null"]},
        "ended_by": {"type": ["string", "null"]},
        "delivery": {"type": ["string", "null"]},
        "delivery_code": {"type": ["integer", "null"]},
        "delivered": {"type": "boolean", "description": "Five9 answered the BYE with a 2xx"},
        "route": {"type": "object", "additionalProperties": {"type": "string"}},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "the routing headers as FromIVA would hold them (full values)",
        },
        "headers_sent": {"type": "array", "items": {"type": "array"}},
        "header_refusals": {"type": "array", "items": {"type": "object"}},
    },
}

_DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "byeline",
        "version": "1",
        "description": "Call records, routing results and metrics of a byeline SIP edge. "
        "Every path but /healthz needs `Authorization: Bearer <token>`.",
    },
    "security": [{"bearer": []}],
    "paths": {
        "/calls": {
            "get": {
                "summary": "Calls, newest first, filtered and paginated",
                "parameters": [
                    _param("since", "started at or after (epoch seconds or ISO 8601)", _TIME),
                    _param("until", "started before (epoch seconds or ISO 8601)", _TIME),
                    _param("outcome", "who or what ended the call", {"enum": sorted(ENDED_BY)}),
                    _param("delivery", "fate of the BYE headers", {"enum": sorted(DELIVERIES)}),
                    _param("status", "call status", {"enum": sorted(CALL_STATUSES)}),
                    _param(
                        "route",
                        "a route attribute value (`Billing`) or `name=value` "
                        "(`five9.route_type=skill_transfer`)",
                        {"type": "string"},
                    ),
                    _param("five9_call_id", "Five9's call id", {"type": "string"}),
                    _param(
                        "limit",
                        "page size",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    ),
                    _param("offset", "calls to skip", {"type": "integer", "minimum": 0}),
                ],
                "responses": {
                    "200": {
                        "description": "a page of calls",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "calls": {"type": "array", "items": _CALL_SUMMARY},
                                        "total": {"type": "integer"},
                                        "limit": {"type": "integer"},
                                        "offset": {"type": "integer"},
                                        "next": {
                                            "type": ["string", "null"],
                                            "description": "the next page's path and query",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "503": _ERROR,
                },
            }
        },
        "/calls/{call_id}": {
            "get": {
                "summary": "One call: attributes, BYE headers and delivery, SIP trace, "
                "transcript, webhook deliveries",
                "parameters": [
                    {
                        "name": "call_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the call",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "allOf": [
                                        _CALL_SUMMARY,
                                        {
                                            "type": "object",
                                            "properties": {
                                                "attributes": {"type": "object"},
                                                "trace": {"type": "array"},
                                                "transcript": {"type": "array"},
                                                "handoff": _HANDOFF,
                                                "webhooks": {"type": "array"},
                                            },
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "401": _ERROR,
                    "404": _ERROR,
                    "503": _ERROR,
                },
            }
        },
        "/handoff/{five9_call_id}": {
            "get": {
                "summary": "The routing result of the latest call with this Five9 call id "
                "(for an IVR web-service query when the BYE headers were lost or too large)",
                "parameters": [
                    {
                        "name": "five9_call_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _param(
                        "format",
                        "json, or text: one `Header=value` per line",
                        {"enum": ["json", "text"], "default": "json"},
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "the routing result",
                        "content": {
                            "application/json": {"schema": _HANDOFF},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                    "503": _ERROR,
                },
            }
        },
        "/live": {
            "get": {
                "summary": "Calls in progress on this edge",
                "responses": {"200": {"description": "live calls"}, "401": _ERROR},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness and the store's state (no token needed)",
                "security": [],
                "responses": {"200": {"description": "status ok or degraded (spooling)"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "responses": {"200": {"description": "metrics"}, "401": _ERROR},
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "Error": {
                "description": "an error",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"error": {"type": "string"}},
                            "required": ["error"],
                        }
                    }
                },
            }
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document."""
    return copy.deepcopy(_DOCUMENT)
