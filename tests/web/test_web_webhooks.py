"""Webhooks: signed POSTs of each call's result, retried from the durable outbox."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from web_harness import SECRET, Receiver, start_served, stop_served

from byeline.five9.simulator import Press, Wait
from byeline.web.webhooks import sign, verify

FAST = {"first_backoff": 0.05, "max_backoff": 0.2, "poll_interval": 0.05}


async def test_delivery_is_signed_and_retried(tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses = [500, 503]  # two failures, then 200
    served = await start_served(tmp_path, webhooks=[receiver.url], webhook_options=FAST)
    try:
        await served.call("300000000301", actions=[Wait(0.2), Press("1")])
        await receiver.wait_for(1)
        assert len(receiver.requests) == 3
        bodies = {body for _headers, body in receiver.requests}
        assert len(bodies) == 1  # every retry sends the same bytes
        deliveries = {headers["X-Byeline-Delivery"] for headers, _body in receiver.requests}
        assert len(deliveries) == 1  # ...under the same delivery id
        headers, body = receiver.requests[-1]
        timestamp = headers["X-Byeline-Timestamp"]
        assert headers["X-Byeline-Signature"] == sign(SECRET, timestamp, body)
        assert verify(SECRET, timestamp, body, headers["X-Byeline-Signature"])
        assert not verify("other", timestamp, body, headers["X-Byeline-Signature"])
        assert not verify(SECRET, str(int(time.time()) - 3600), body, sign(SECRET, "0", body))
        assert headers["X-Byeline-Event"] == "call.ended"
        assert headers["Content-Type"] == "application/json"
        payload = json.loads(body)
        assert payload["event"] == "call.ended"
        assert payload["call"]["five9_call_id"] == "300000000301"
        assert payload["handoff"]["headers"]["X-RouteValue"] == "Billing"
        assert payload["handoff"]["delivered"] is True

        call_id = payload["call"]["call_id"]
        for _ in range(50):  # the outbox row is updated right after the 200
            _status, call = await served.get(f"/calls/{call_id}")
            if call["webhooks"][0]["state"] == "delivered":
                break
            await asyncio.sleep(0.05)
        [entry] = call["webhooks"]
        assert entry["state"] == "delivered" and entry["attempts"] == 3
        assert entry["last_status"] == 200 and entry["url"] == receiver.url
        _status, metrics = await served.get("/metrics")
        assert 'byeline_webhook_attempts_total{result="retry"} 2.0' in metrics
        assert 'byeline_webhook_attempts_total{result="delivered"} 1.0' in metrics
    finally:
        await stop_served(served)


async def test_caller_hangup_result_goes_out_by_webhook(tmp_path: Path, receiver: Receiver) -> None:
    served = await start_served(tmp_path, webhooks=[receiver.url], webhook_options=FAST)
    try:
        await served.call("300000000302", hangup_after=0.3)
        await receiver.wait_for(1)
        payload = json.loads(receiver.requests[0][1])
        assert payload["call"]["ended_by"] == "caller"
        assert payload["handoff"]["delivery"] == "not_sent"
    finally:
        await stop_served(served)


async def test_restart_loses_no_webhook(tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses = [500] * 1000  # the receiver is down for the whole first run
    first = await start_served(tmp_path, webhooks=[receiver.url], webhook_options=FAST)
    try:
        await first.call("300000000303", actions=[Wait(0.2), Press("2")])
        for _ in range(200):
            if len(receiver.requests) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(receiver.requests) >= 2 and not receiver.delivered()
    finally:
        await stop_served(first)

    receiver.statuses.clear()  # the receiver comes back; byeline restarts on the same database
    second = await start_served(tmp_path, webhooks=[receiver.url], webhook_options=FAST)
    try:
        await receiver.wait_for(1)
        [(_headers, body)] = receiver.delivered()
        assert json.loads(body)["call"]["five9_call_id"] == "300000000303"
    finally:
        await stop_served(second)
