"""A minimal UAS on sippy (the PyPI package ``sippy``), the Python baseline of the signalling bench.

It does what byeline does for a call in the benchmark, and nothing more: answer an INVITE at once
with 200 OK carrying a G.711 SDP answer (no 180, as byeline answering at once), then accept the
caller's BYE (sippy's UA answers it with 200 OK). No media, no records. Run as
``python bench/sippy_uas.py HOST PORT``; it prints ``ready`` on stdout once listening and runs
until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from sippy.CCEvents import CCEventConnect, CCEventTry  # type: ignore[import-untyped]
from sippy.Core.EventDispatcher import ED2  # type: ignore[import-untyped]
from sippy.MsgBody import MsgBody  # type: ignore[import-untyped]
from sippy.SipConf import SipConf  # type: ignore[import-untyped]
from sippy.SipLogger import SipLogger  # type: ignore[import-untyped]
from sippy.SipTransactionManager import SipTransactionManager  # type: ignore[import-untyped]
from sippy.UA import UA  # type: ignore[import-untyped]
from sippy.Udp_server import Udp_server_opts  # type: ignore[import-untyped]

ANSWER_SDP = (
    "v=0\r\n"
    "o=sippy 1 1 IN IP4 {ip}\r\n"
    "s=-\r\n"
    "c=IN IP4 {ip}\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)


class Answerer:
    """Answers every INVITE; counts what it did (printed at exit)."""

    def __init__(self, config: dict[str, Any], ip: str) -> None:
        self.config = config
        self.sdp = ANSWER_SDP.format(ip=ip)
        self.answered = 0
        self.ended = 0

    def recv_request(self, req: Any, sip_t: Any) -> Any:
        if req.getHFBody("to").getTag() is not None:
            return (req.genResponse(481, "Call Leg/Transaction Does Not Exist"), None, None)
        if req.getMethod() == "INVITE":
            ua = UA(self.config, self.on_event, disc_cbs=(self.on_disconnect,))
            return ua.recvRequest(req, sip_t)
        return (req.genResponse(501, "Not Implemented"), None, None)

    def on_event(self, event: Any, ua: Any) -> None:
        if isinstance(event, CCEventTry):
            ua.recvEvent(CCEventConnect((200, "OK", MsgBody(self.sdp))))
            self.answered += 1

    def on_disconnect(self, ua: Any, rtime: Any, origin: Any, result: Any = 0) -> None:
        self.ended += 1


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    SipConf.my_uaname = "sippy-bench-uas"
    config: dict[str, Any] = {"_sip_address": host, "_sip_port": port}
    # No SIP message log: sippy's default writes every message to /var/log/sip.log; without it
    # sippy does less work per call than byeline (which records every message), so the ratio
    # byeline/sippy is, if anything, in sippy's favour.
    os.environ["SIPLOG_BEND"] = "none"
    # One sender/receiver thread instead of sippy's default three: the process is pinned to one
    # core anyway, and with three sender threads the 100 Trying can be overtaken by the
    # 200 OK (seen here: SIPp then aborts the call on the late 100).
    Udp_server_opts.nworkers = 1
    config["_sip_logger"] = SipLogger("sippy-bench-uas")
    answerer = Answerer(config, host)
    config["_sip_tm"] = SipTransactionManager(config, answerer.recv_request)

    def stop(signum: int, frame: Any) -> None:
        ED2.breakLoop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    ED2.loop()
    print(f"answered {answerer.answered} ended {answerer.ended}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
