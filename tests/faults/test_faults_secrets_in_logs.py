"""Secrets never reach the logs: the trunk's digest password, the API token and the webhook
secret, through a run that uses all three (debug logging, good and bad credentials)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import TRUNK_AUTH, free_port
from relayed_call import SERVICE, pinned_rtp_port

from byeline.five9.simulator import CallFailed, CallPlan, place_call
from byeline.five9.variables import default_call_variables

PASSWORD = "s3cret-Five9"  # in tests/data/e2e/trunk-auth.json
TOKEN = "api-token-Zq81vK3xLr"
SECRET = "whsec-N4b7Tt0pQa"


def _get(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def _call(port: int, password: str) -> Any:
    rtp = pinned_rtp_port()
    plan = CallPlan(
        target=f"127.0.0.1:{port}",
        call_variables=default_call_variables(ani="+15555550123", dnis=SERVICE),
        auth=("five9", password),
        hangup_after=0.3,
        timeout=10,
        rtp_ports=(rtp, rtp + 1),
    )
    return await place_call(plan)


async def test_no_secret_in_the_logs(
    serve: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BYELINE_API_TOKEN", TOKEN)
    monkeypatch.setenv("BYELINE_WEBHOOK_SECRET", SECRET)
    http = free_port(socket.SOCK_STREAM)
    nowhere = free_port(socket.SOCK_STREAM)  # webhook deliveries fail and are logged
    server = await serve(
        "--agent",
        "dtmf",
        "--log-level",
        "debug",
        "--http",
        f"127.0.0.1:{http}",
        "--webhook",
        f"http://127.0.0.1:{nowhere}/hook",
        trunks=(TRUNK_AUTH,),
    )
    outcome = await _call(server.port, PASSWORD)
    assert outcome.answered
    with pytest.raises(CallFailed):
        await _call(server.port, "wrong-" + PASSWORD)
    base = f"http://127.0.0.1:{http}"
    assert await asyncio.to_thread(_get, f"{base}/calls", TOKEN) == 200
    assert await asyncio.to_thread(_get, f"{base}/calls", TOKEN[:-1]) == 401
    await asyncio.sleep(1.0)  # a webhook delivery attempt
    assert await server.stop() == 0
    text = server.log
    assert "auth for" in text  # the refused attempt was logged...
    realm = "byeline"
    ha1 = hashlib.md5(f"five9:{realm}:{PASSWORD}".encode()).hexdigest()
    for secret in (PASSWORD, TOKEN, SECRET, TOKEN[:-1], ha1):
        assert secret not in text, f"{secret!r} appears in the log"
