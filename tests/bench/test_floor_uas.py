"""The bench's floor UAS completes the signalling scenario's calls, as SIPp checks them.

The floor is a baseline of ``make bench``'s signalling figures; if its answers were wrong SIPp would
count failed calls and the floor's rate would mean nothing. Real SIPp, real UDP on loopback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench_scripts import load
from e2e_harness import _free_media_port  # an even port with the next three free

from byeline.sip.message import Response, parse_message

run = load("run")


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[Any]:
    port = _free_media_port("127.0.0.1")
    server = run.start_server("floor", port, tmp_path)
    try:
        yield server
    finally:
        server.stop(5.0)


def test_floor_answers_invite_and_bye_with_200(floor: Any) -> None:
    invite = (
        f"INVITE sip:+18005550100@127.0.0.1:{floor.port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1;rport\r\n"
        "From: <sip:five9@127.0.0.1:5999>;tag=a1\r\n"
        f"To: <sip:+18005550100@127.0.0.1:{floor.port}>\r\n"
        "Call-ID: floor-1@test\r\nCSeq: 1 INVITE\r\nContact: <sip:five9@127.0.0.1:5999>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5.0)
        sock.sendto(invite.encode(), ("127.0.0.1", floor.port))
        ok = parse_message(sock.recv(65535))
        assert isinstance(ok, Response) and ok.status == 200
        assert ok.call_id == "floor-1@test" and ok.cseq == (1, "INVITE")
        assert ok.to_tag
        assert ok.body.startswith(b"v=0\r\n")
        bye = (
            f"BYE sip:floor@127.0.0.1:{floor.port} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-2;rport\r\n"
            "From: <sip:five9@127.0.0.1:5999>;tag=a1\r\n"
            f"To: <sip:+18005550100@127.0.0.1:{floor.port}>;tag={ok.to_tag}\r\n"
            "Call-ID: floor-1@test\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(bye.encode(), ("127.0.0.1", floor.port))
        done = parse_message(sock.recv(65535))
        assert isinstance(done, Response) and done.status == 200
        assert done.cseq == (2, "BYE") and done.to_tag == ok.to_tag


@pytest.mark.skipif(
    shutil.which("sipp") is None, reason="SIPp not installed (make test installs it)"
)
def test_floor_completes_the_bench_scenario_under_sipp(floor: Any, tmp_path: Path) -> None:
    scen = run.scenario(tmp_path, 0)
    media = _free_media_port("127.0.0.1")
    argv = run.sipp_uac(floor.port, scen, 50, 25, media, 20)
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=60)
    stats = next(tmp_path.glob("*_.csv"), None) or next(tmp_path.glob("*.csv"), None)
    assert done.returncode == 0, (done.returncode, done.stderr[-800:], stats)
