"""The HTTP API end to end: real calls placed with the Five9 simulator, then read back."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

from web_harness import TOKEN, Served

from byeline.five9.simulator import Press, Wait


async def _two_calls(served: Served) -> tuple[str, str]:
    """One call routed by DTMF (BYE delivered) and one where the caller hangs up first."""
    routed = await served.call("300000000101", actions=[Wait(0.2), Press("1")])
    assert routed.from_iva.get("X-RouteValue") == "Billing"
    hung_up = await served.call("300000000102", hangup_after=0.3)
    assert hung_up.hung_up_by == "caller"
    await served.app.store.aflush()
    return "300000000101", "300000000102"


async def test_calls_list_show_and_handoff(served: Served) -> None:
    routed_id, hung_up_id = await _two_calls(served)

    status, page = await served.get("/calls")
    assert status == 200 and page["total"] == 2 and page["next"] is None
    newest, oldest = page["calls"]
    assert newest["five9_call_id"] == hung_up_id and oldest["five9_call_id"] == routed_id
    assert oldest["delivery"] == "delivered" and oldest["delivery_code"] == 200
    assert newest["ended_by"] == "caller" and newest["delivery"] == "not_sent"

    # Filters, each narrowing to the expected call.
    for query, expected in [
        ("delivery=delivered", [routed_id]),
        ("outcome=caller", [hung_up_id]),
        ("route=Billing", [routed_id]),
        ("route=five9.route_type%3Dskill_transfer", [routed_id]),
        ("route=five9.route_type%3Dagent_transfer", []),
        (f"five9_call_id={hung_up_id}", [hung_up_id]),
        ("status=ended", [hung_up_id, routed_id]),
        (f"since={time.time() + 60}", []),
        ("until=2000-01-01T00:00:00Z", []),
    ]:
        status, page = await served.get("/calls?" + query)
        assert status == 200, (query, page)
        assert [c["five9_call_id"] for c in page["calls"]] == expected, query

    # Pagination: one per page, a next link that works.
    status, first = await served.get("/calls?limit=1")
    assert first["total"] == 2 and len(first["calls"]) == 1
    assert first["next"] == "/calls?limit=1&offset=1"
    status, second = await served.get(first["next"])
    assert second["calls"][0]["five9_call_id"] == routed_id and second["next"] is None

    # One call in full: attributes, headers sent, delivery, SIP trace with the BYE.
    call_id = oldest["call_id"]
    served.app.store.transcript(call_id, "agent", "Say billing or press 1.", at=time.time())
    served.app.store.transcript(call_id, "caller", "billing", at=time.time() + 1)
    await served.app.store.aflush()
    status, call = await served.get(f"/calls/{call_id}")
    assert status == 200
    assert call["attributes"]["sip.h.x-callid"] == routed_id
    assert call["attributes"]["five9.route_value"] == "Billing"
    sent = dict(call["bye_headers"])
    assert sent["X-RouteType"] == "skill_transfer" and sent["X-RouteValue"] == "Billing"
    methods = [m["first_line"].split(" ")[0] for m in call["trace"]]
    assert methods[0] == "INVITE" and "BYE" in methods and "ACK" in methods
    bye = next(m for m in call["trace"] if m["first_line"].startswith("BYE "))
    assert bye["direction"] == "out" and "X-RouteValue: Billing" in bye["raw"]
    assert [(t["role"], t["text"]) for t in call["transcript"]] == [
        ("agent", "Say billing or press 1."),
        ("caller", "billing"),
    ]
    assert call["handoff"]["delivered"] is True
    assert call["webhooks"] == []

    # The routing result by Five9 call id, as an IVR query would read it.
    status, handoff = await served.get(f"/handoff/{routed_id}")
    assert status == 200 and handoff["delivered"] is True
    assert handoff["headers"]["X-RouteValue"] == "Billing"
    assert handoff["headers"]["X-RouteReason"] == "caller asked for billing"
    status, text = await served.get(f"/handoff/{routed_id}?format=text")
    assert status == 200 and "X-RouteType=skill_transfer\n" in text
    status, handoff = await served.get(f"/handoff/{hung_up_id}")
    assert status == 200 and handoff["delivered"] is False
    assert handoff["delivery"] == "not_sent" and handoff["headers_sent"] == []


async def test_metrics_after_calls(served: Served) -> None:
    await _two_calls(served)
    status, text = await served.get("/metrics")
    assert status == 200
    assert "byeline_active_calls 0.0" in text
    assert 'byeline_calls_ended_total{outcome="agent"} 1.0' in text
    assert 'byeline_calls_ended_total{outcome="caller"} 1.0' in text
    assert 'byeline_call_deliveries_total{delivery="delivered"} 1.0' in text
    assert 'byeline_call_deliveries_total{delivery="not_sent"} 1.0' in text
    assert 'byeline_bye_responses_total{code="200"} 1.0' in text
    assert "byeline_answer_latency_seconds_count 2.0" in text
    assert "byeline_handback_latency_seconds_count 1.0" in text
    assert re.search(r'byeline_sip_events_total\{event="invites"\} [1-9]', text)
    assert "byeline_store_database_up 1.0" in text
    wait = re.search(r"^byeline_sip_queue_wait_seconds (\S+)$", text, re.M)
    assert wait is not None and 0 <= float(wait.group(1)) < 0.25  # an idle server's queue


async def test_auth_and_errors(served: Served) -> None:
    status, health = await served.get("/healthz", token=None)
    assert status == 200 and health["status"] == "ok" and health["database"] == "up"

    for path in ["/calls", "/calls/x", "/handoff/x", "/metrics", "/live", "/openapi.json"]:
        status, body = await served.get(path, token=None)
        assert status == 401 and body == {"error": "missing or wrong bearer token"}, path
        status, body = await served.get(path, token=TOKEN + "x")
        assert status == 401, path
    async with served.client.get(served.base + "/calls") as response:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    for query, needle in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("since=yesterday", "since"),
        ("since=nan", "since"),
        ("since=10&until=5", "since"),
        ("outcome=won", "outcome"),
        ("delivery=maybe", "delivery"),
        ("colour=red", "unknown parameter"),
        ("limit=1&limit=2", "more than once"),
    ]:
        status, body = await served.get("/calls?" + query)
        assert status == 400, query
        assert needle in body["error"], (query, body)

    status, body = await served.get("/calls/SCL_nope")
    assert status == 404 and "SCL_nope" in body["error"]
    status, body = await served.get("/handoff/none")
    assert status == 404 and "error" in body
    status, body = await served.get("/handoff/x?format=xml")
    assert status == 400
    status, body = await served.get("/nothing-here")
    assert status == 404 and "error" in body

    status, document = await served.get("/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    documented = {"/calls", "/calls/{call_id}", "/handoff/{five9_call_id}", "/healthz", "/metrics"}
    assert documented <= set(document["paths"])


async def test_live_shows_a_call_in_progress(served: Served) -> None:
    import asyncio

    call = asyncio.ensure_future(served.call("300000000201", actions=[Wait(1.0), Press("2")]))
    try:
        for _ in range(100):
            status, live = await served.get("/live")
            if live["calls"]:
                break
            await asyncio.sleep(0.05)
        assert status == 200 and len(live["calls"]) == 1
        assert live["calls"][0]["five9_call_id"] == "300000000201"
        assert live["calls"][0]["started_at"] is not None
    finally:
        outcome = await call
    assert outcome.from_iva.get("X-RouteValue") == "Sales"
    status, live = await served.get("/live")
    assert live["calls"] == []


async def test_dashboard_login_and_redirects(served: Served) -> None:
    async with served.client.get(served.base + "/ui/calls/SCL_x", allow_redirects=False) as r:
        location = urlsplit(r.headers["Location"])
        assert r.status == 302 and location.path == "/ui/login"
        assert parse_qs(location.query) == {"next": ["/ui/calls/SCL_x"]}
    async with served.client.get(served.base + "/ui/static/dashboard.js") as r:
        assert r.status == 200  # code, not data: served without a token
    login = served.base + "/ui/login?next=//evil.example/"
    async with served.client.post(login, data={"token": "nope"}, allow_redirects=False) as r:
        assert r.status == 302 and "failed=1" in r.headers["Location"]
    async with served.client.post(login, data={"token": TOKEN}, allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/ui/"  # never off-site
        cookie = r.cookies["byeline_session"]
        assert cookie.value != TOKEN and cookie["httponly"] and cookie["samesite"] == "Strict"
    session = {"Cookie": f"byeline_session={cookie.value}"}
    async with served.client.get(served.base + "/calls", headers=session) as r:
        assert r.status == 200  # the cookie opens the API too
    async with served.client.get(served.base + "/ui/", headers=session) as r:
        assert r.status == 200 and "default-src 'self'" in r.headers["Content-Security-Policy"]
