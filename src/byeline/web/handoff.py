"""The routing result of a call, as Five9 would have read it from the BYE.

When the caller hangs up first, or a header was refused (too long, bad characters), the BYE did
not carry everything to Five9's IVR. The IVR (a web-service query), the webhooks and the
dashboard then read the same thing from here: the ``X-`` headers the call's final attributes map
to through the trunk's ``attributes_to_headers``, whether they were sent, and why not.
"""

from __future__ import annotations

from typing import Any

from byeline.edge.attributes import headers_from_attributes, merge_headers
from byeline.edge.trunk import TrunkSet
from byeline.store.records import CallRecord


def routing_result(record: CallRecord, trunks: TrunkSet | None = None) -> dict[str, Any]:
    """The handoff document of one call (see ``docs/API.md``, ``GET /handoff/{five9_call_id}``).

    ``headers`` maps each routing header to its full value: computed from the final attributes
    with the call's trunk when it is known, else the headers actually sent. ``headers_sent`` is
    exactly what went on the BYE; ``delivered`` says whether Five9 acknowledged it with a 2xx.
    """
    trunk = trunks.by_id(record.trunk_id) if trunks is not None and record.trunk_id else None
    if trunk is not None:
        mapped = headers_from_attributes(trunk, record.attributes, stage="bye")
    else:
        mapped = [(name, value) for name, value in record.bye_headers]
    # The same guard as the BYE: a value the BYE refused (CR, LF, over 1024 bytes...) is not
    # offered here either, so ``format=text`` lines cannot be forged through an attribute.
    mapped, _ = merge_headers(mapped, [])
    return {
        "five9_call_id": record.five9_call_id,
        "five9_session_id": record.five9_session_id,
        "call_id": record.call_id,
        "status": record.status,
        "ended_at": record.ended_at,
        "ended_by": record.ended_by,
        "delivery": record.delivery,
        "delivery_code": record.delivery_code,
        "delivered": record.delivery == "delivered",
        "route": record.route,
        "headers": dict(mapped),
        "headers_sent": [[name, value] for name, value in record.bye_headers],
        "header_refusals": record.header_refusals,
    }


def webhook_payload(record: CallRecord, trunks: TrunkSet | None = None) -> dict[str, Any]:
    """The body POSTed to webhook receivers when a call ends."""
    return {
        "event": "call.ended",
        "call": record.to_json(trace=False),
        "handoff": routing_result(record, trunks),
    }
