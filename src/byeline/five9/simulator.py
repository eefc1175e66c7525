"""The Five9 simulator: place one call as Five9's IVR would and read back FromIVA.

It is an RFC 3261 user agent client built on byeline's own sans-I/O cores
(client transactions, dialogs, SDP, digest, RTP) and works against any SIP
endpoint: byeline, a LiveKit SIP URI, another agent platform.  Nothing on the
wire is byeline-specific.

One call: INVITE with the call variables as ``X-`` headers and an SDP offer
(PCMU, PCMA, telephone-event) → answer a 401/407 with digest if asked → ACK →
the caller's script (keys over RFC 4733, audio, waits, hang up) while the
agent's audio is recorded → the agent's BYE, whose ``X-`` headers are what
Five9 would put in FromIVA.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import ssl
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..net.ports import RtpPortAllocator
from ..net.rtp import RtpEndpoint
from ..net.sip_transport import Address, Flow, ListenSpec, SipTransports, format_address
from ..rtp.stream import MediaStream
from ..sip import sdp
from ..sip.dialog import Dialog, make_response, new_branch, new_tag
from ..sip.digest import answer_challenge
from ..sip.message import Headers, Request, Response, SipParseError, parse_message, parse_uri
from ..sip.transaction import (
    ClientInviteTransaction,
    ClientTransaction,
    Deliver,
    Output,
    Terminated,
    TimedOut,
    TimerConfig,
    Transmit,
)
from .variables import FromIVA

log = logging.getLogger("byeline.five9")

FRAME_BYTES = 320  # 20 ms of 8 kHz 16-bit PCM


class CallFailed(Exception):
    """The call could not be placed or did not end with a BYE in time (exit status 2)."""


# -- what the caller does -----------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    """Speak ``text`` (synthesized offline)."""

    text: str


@dataclass(frozen=True)
class Play:
    """Play a WAV file."""

    path: Path


@dataclass(frozen=True)
class Press:
    """Press keys (RFC 4733)."""

    digits: str


@dataclass(frozen=True)
class Wait:
    """Do nothing for ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class HangUp:
    """Hang up (the caller's BYE)."""


Action = Say | Play | Press | Wait | HangUp


@dataclass
class CallPlan:
    """Everything about one simulated Five9 call."""

    target: str
    call_variables: dict[str, str]
    caller: str = "+15555550100"
    dnis: str = "+18005550100"
    transport: str = "udp"
    auth: tuple[str, str] | None = None
    actions: list[Action] = field(default_factory=list)
    hangup_after: float | None = None
    record: Path | None = None
    timeout: float = 60.0
    rtp_ports: tuple[int, int] = (40000, 49999)
    voice: str | None = None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    tls_ca: Path | None = None  # trust this CA (or self-signed certificate) for TLS
    tls_verify: bool = True  # False: accept any certificate (a test bench only)
    srtp: bool = False  # offer RTP/SAVP with SDES keys (RFC 4568)
    advertise: str | None = None
    """``host:port`` to put in Via, From and Contact instead of our own socket's address: a relay
    (or NAT) that forwards to us, so the agent's BYE crosses it as every other message does."""
    media_relay: str | None = None
    """``host:port`` of a media relay: put in the SDP offer, and our RTP is sent to it rather
    than to the answer's address (the relay forwards both ways)."""
    sip_t1: float | None = None
    """RFC 3261 T1 of our transactions (default 0.5 s); lower it with the agent's to test fast."""
    linger: float | None = None
    """UDP: after the agent's BYE, keep answering its retransmissions until none has come for
    this many seconds (our 200 OK may have been lost; RFC 3261 Timer J).  Default: 16*T1, at
    most 2 s."""
    tcp_listener: bool = False
    """TCP/TLS: also listen for connections and put that port in Contact, so the agent can open
    a new connection for its BYE when ours has gone (RFC 3261 §18.2.2)."""


@dataclass
class CallOutcome:
    """What Five9 would see of the call."""

    answered: bool = False
    final_code: int | None = None
    final_reason: str = ""
    from_iva: FromIVA = field(default_factory=FromIVA)
    hung_up_by: str | None = None  # agent, caller, timeout
    bye_code: int | None = None  # the answer to OUR BYE when the caller hung up
    ringing_ms: float | None = None
    answer_ms: float | None = None
    first_agent_audio_ms: float | None = None
    bye_ms: float | None = None
    last_input_ms: float | None = None  # when the caller's last key or speech ended
    last_key_sent_ms: float | None = None  # when the last key's first RFC 4733 packet left
    response_ms: float | None = None  # from then to the agent's first speech
    srtp: bool = False  # the media was SRTP
    sip_call_id: str = ""
    rtp_received: int = 0
    rtp_lost: int = 0
    rtp_jitter_ms: float = 0.0
    error: str | None = None

    @property
    def handback_ms(self) -> float | None:
        """From the caller's last input to the agent's BYE."""
        if self.hung_up_by != "agent" or self.bye_ms is None or self.last_input_ms is None:
            return None
        return self.bye_ms - self.last_input_ms

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "answered": self.answered,
            "final_code": self.final_code,
            "final_reason": self.final_reason,
            "from_iva": [[k, v] for k, v in self.from_iva.pairs],
            "from_iva_string": self.from_iva.tostring(),
            "hung_up_by": self.hung_up_by,
            "bye_code": self.bye_code,
            "timings_ms": {
                "ringing": _r(self.ringing_ms),
                "answer": _r(self.answer_ms),
                "first_agent_audio": _r(self.first_agent_audio_ms),
                "bye": _r(self.bye_ms),
                "last_input": _r(self.last_input_ms),
                "last_key_sent": _r(self.last_key_sent_ms),
                "response": _r(self.response_ms),
                "handback": _r(self.handback_ms),
            },
            "rtp": {
                "received": self.rtp_received,
                "lost": self.rtp_lost,
                "jitter_ms": round(self.rtp_jitter_ms, 2),
            },
            "srtp": self.srtp,
            "sip_call_id": self.sip_call_id,
            "error": self.error,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# -- target ------------------------------------------------------------------------------


def parse_target(target: str, transport: str) -> tuple[str, Address]:
    """A SIP URI or ``host:port`` → (Request-URI host part, address to send to)."""
    text = target.strip()
    default_port = 5061 if transport == "tls" else 5060
    if text.lower().startswith(("sip:", "sips:")):
        try:
            uri = parse_uri(text)
        except ValueError:
            raise ValueError(f"target {target!r}: not a valid SIP URI") from None
        host, port = uri.host, uri.port or default_port
    else:
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port_text = rest.lstrip(":")
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:
            host, port_text = text, ""
        if port_text and not port_text.isdigit():
            raise ValueError(f"target {target!r}: expected HOST:PORT or a SIP URI")
        port = int(port_text) if port_text else default_port
    bare = host.strip("[]")
    try:
        ip = str(ipaddress.ip_address(bare))
    except ValueError:
        try:
            infos = socket.getaddrinfo(bare, port, type=socket.SOCK_DGRAM)
        except socket.gaierror:
            raise ValueError(f"target {target!r}: cannot resolve {bare!r}") from None
        ip = str(infos[0][4][0])
    hostpart = f"[{bare}]" if ":" in bare else bare
    return hostpart, (ip, port)


# -- the user agent ----------------------------------------------------------------------


class Five9Call:
    """One call placed by the simulator (a ``MessageSink`` for the transports)."""

    def __init__(self, plan: CallPlan) -> None:
        self.plan = plan
        self.outcome = CallOutcome()
        self.transports = SipTransports(self)
        self._loop = asyncio.get_event_loop()
        self._flow: Flow | None = None
        self._invite: Request | None = None
        self._offer: bytes = b""
        self._invite_txn: ClientInviteTransaction | None = None
        self._bye_txn: ClientTransaction | None = None
        self._handles: dict[int, asyncio.TimerHandle] = {}
        self._closed = False
        self._dialog: Dialog | None = None
        self._answered = asyncio.Event()
        self._final = asyncio.Event()
        self._ended = asyncio.Event()
        self._bye_answered = asyncio.Event()
        self._media: RtpEndpoint | None = None
        self._recorded: list[bytes] = []
        self._t0 = 0.0
        self._auth_tried = False
        self._cseq = 1
        self._local_tag = new_tag()
        self._call_id = f"{secrets.token_hex(8)}@five9-sim"
        self._allocator = _port_allocator(plan.rtp_ports)
        self._rtp_port = 0
        self._answer_sdp = b""
        self._timers = TimerConfig(t1=plan.sip_t1) if plan.sip_t1 else TimerConfig()
        self._advertised: Address | None = (
            parse_target(plan.advertise, plan.transport.lower())[1] if plan.advertise else None
        )
        self._media_relay: Address | None = (
            parse_target(plan.media_relay, "udp")[1] if plan.media_relay else None
        )
        self._contact_address: Address | None = None  # our TCP listener (tcp_listener)
        self._last_bye_at = 0.0  # when the agent's BYE (or a retransmission of it) came

    def _ms(self) -> float:
        return (time.monotonic() - self._t0) * 1000

    # -- sending ------------------------------------------------------------------------

    def _drive(self, txn: Any, outputs: list[Output]) -> None:
        assert self._flow is not None
        for out in outputs:
            if isinstance(out, Transmit):
                self._flow.send(out.data)
            elif isinstance(out, Deliver):
                self._on_response(txn, out.response)
            elif isinstance(out, TimedOut):
                self._on_timeout(txn)
            elif isinstance(out, Terminated):
                pass
        handle = self._handles.pop(id(txn), None)
        if handle is not None:
            handle.cancel()
        if not txn.terminated and txn.deadline is not None:
            self._handles[id(txn)] = self._loop.call_at(
                self._loop.time() + max(0.0, txn.deadline - time.monotonic()),
                lambda: self._drive(txn, txn.on_timer(time.monotonic())),
            )

    def _local(self) -> Address:
        """The address we say is ours: the advertised one, our listener, or our socket."""
        assert self._flow is not None
        return self._advertised or self._contact_address or self._flow.local

    def _via(self) -> str:
        assert self._flow is not None
        return (
            f"SIP/2.0/{self._flow.transport} {format_address(self._local())}"
            f";branch={new_branch()};rport"
        )

    def _contact(self) -> str:
        assert self._flow is not None
        t = "" if self._flow.transport == "UDP" else f";transport={self._flow.transport.lower()}"
        return f"<sip:five9@{format_address(self._local())}{t}>"

    def _build_invite(self, hostpart: str, authorization: str | None = None) -> Request:
        plan = self.plan
        assert self._flow is not None
        h = Headers()
        h.add("Via", self._via())
        h.add("Max-Forwards", "70")
        h.add(
            "From",
            f'"Five9" <sip:{plan.caller}@{format_address(self._local())}>;tag={self._local_tag}',
        )
        h.add("To", f"<sip:{plan.dnis}@{hostpart}>")
        h.add("Call-ID", self._call_id)
        h.add("CSeq", f"{self._cseq} INVITE")
        h.add("Contact", self._contact())
        h.add("User-Agent", "byeline-five9-simulator")
        h.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO")
        if authorization:
            h.add("Authorization", authorization)
        for name, value in plan.call_variables.items():
            h.add(name, value)
        for name, value in plan.extra_headers:
            h.add(name, value)
        h.add("Content-Type", "application/sdp")
        return Request(
            method="INVITE", uri=f"sip:{plan.dnis}@{hostpart}", headers=h, body=self._offer
        )

    # -- receiving ------------------------------------------------------------------------

    def receive(self, data: bytes, flow: Flow) -> None:
        """Every message from the target."""
        if not data.strip(b"\r\n"):
            return
        try:
            message = parse_message(data, stream=flow.reliable)
        except SipParseError as exc:
            log.warning("malformed message from %s: %s", flow.peer, exc.reason)
            return
        if isinstance(message, Response):
            for txn in (self._invite_txn, self._bye_txn):
                if txn is not None and message.branch == txn.request.branch:
                    self._drive(txn, txn.receive_response(message, time.monotonic()))
                    return
            return
        self._on_request(message, flow)

    def _on_request(self, request: Request, flow: Flow) -> None:
        dialog = self._dialog
        if request.method == "ACK":
            return
        if dialog is None or request.call_id != self._call_id:
            flow.send(make_response(request, 481).serialize(), flow.remote)
            return
        if request.method == "BYE":
            self._last_bye_at = time.monotonic()
            flow.send(
                make_response(request, 200).serialize(), flow.remote if not flow.reliable else None
            )
            if not self._ended.is_set():
                self.outcome.hung_up_by = "agent"
                self.outcome.bye_ms = self._ms()
                self.outcome.from_iva = FromIVA(
                    (name, value)
                    for name, value in request.headers
                    if name.lower().startswith("x-")
                )
                self._ended.set()
            return
        # re-INVITE, UPDATE, INFO, OPTIONS: accept (the simulator keeps its media as it is).
        body = b""
        headers: list[tuple[str, str]] = [("Contact", self._contact())]
        if request.method in ("INVITE", "UPDATE") and request.body:
            try:
                neg = sdp.answer_offer(
                    sdp.SessionDescription.parse(request.body),
                    media_ip=self._flow.local[0] if self._flow else "127.0.0.1",
                    media_port=self._rtp_port,
                    session_id=1,
                    session_version=2,
                )
                body = neg.sdp
                headers.append(("Content-Type", "application/sdp"))
            except ValueError:
                flow.send(make_response(request, 488).serialize(), flow.remote)
                return
        flow.send(make_response(request, 200, headers=headers, body=body).serialize(), flow.remote)

    def _on_response(self, txn: Any, response: Response) -> None:
        if txn is self._bye_txn:
            if response.status >= 200:
                self.outcome.bye_code = response.status
                self._bye_answered.set()
            return
        status = response.status
        if status < 200:
            if status in (180, 183) and self.outcome.ringing_ms is None:
                self.outcome.ringing_ms = self._ms()
            return
        if 200 <= status < 300:
            if self._dialog is None:
                assert self._invite is not None
                self.outcome.answered = True
                self.outcome.final_code = status
                self.outcome.final_reason = response.reason
                self.outcome.answer_ms = self._ms()
                self._dialog = Dialog.from_response(self._invite, response)
                self._answer_sdp = response.body
                self._answered.set()
                self._final.set()
            self._send_ack()
            return
        if status in (401, 407) and self.plan.auth and not self._auth_tried:
            self._auth_tried = True
            self._retry_with_auth(response)
            return
        self.outcome.final_code = status
        self.outcome.final_reason = response.reason
        self._final.set()

    def _on_timeout(self, txn: Any) -> None:
        if txn is self._invite_txn and not self._final.is_set():
            self.outcome.error = "no response to the INVITE (Timer B)"
            self._final.set()
        elif txn is self._bye_txn:
            self._bye_answered.set()

    def _send_ack(self) -> None:
        assert self._dialog is not None and self._flow is not None and self._invite is not None
        ack = self._dialog.create_request(
            "ACK", via=self._via(), cseq=self._invite.cseq[0], contact=self._contact()
        )
        self._flow.send(ack.serialize())

    def _retry_with_auth(self, response: Response) -> None:
        assert self._invite is not None and self.plan.auth is not None
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        challenges = response.headers.getall(header)
        user, password = self.plan.auth
        try:
            from ..sip.digest import select_challenge

            chosen = select_challenge(challenges)
            value = answer_challenge(chosen.serialize(), "INVITE", self._invite.uri, user, password)
        except ValueError as exc:
            self.outcome.final_code = response.status
            self.outcome.error = f"cannot answer the {response.status} challenge: {exc}"
            self._final.set()
            return
        self._cseq += 1
        hostpart = self._invite.uri.split("@", 1)[1]
        auth_name = "Authorization" if response.status == 401 else "Proxy-Authorization"
        invite = self._build_invite(hostpart)
        invite.headers.add(auth_name, value)
        self._start_invite(invite)

    def _start_invite(self, invite: Request) -> None:
        assert self._flow is not None
        self._invite = invite
        txn = ClientInviteTransaction(invite, reliable=self._flow.reliable, config=self._timers)
        self._invite_txn = txn
        self._drive(txn, txn.start(time.monotonic()))

    # -- the call -----------------------------------------------------------------------

    async def run(self) -> CallOutcome:
        """Place the call, run the caller's script, wait for the end; never raises CallFailed
        for a call that was answered (its outcome says what happened)."""
        plan = self.plan
        transport = plan.transport.lower()
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"--transport {plan.transport!r}: expected udp, tcp or tls")
        hostpart, remote = parse_target(plan.target, transport)
        local_ip = "::1" if ":" in remote[0] else "0.0.0.0"
        if remote[0] in ("127.0.0.1", "::1") or remote[0].startswith("127."):
            local_ip = "::1" if ":" in remote[0] else "127.0.0.1"
        try:
            if transport == "udp":
                await self.transports.listen(ListenSpec("UDP", local_ip, 0))
                flow = self.transports.udp_flow(remote)
                assert flow is not None
                # Our listener bound to a wildcard must say a routable address in Via/Contact.
                self._flow = _with_local_ip(flow, remote)
            else:
                if transport == "tls":
                    self.transports.client_tls_context = _client_tls(plan)
                if plan.tcp_listener:
                    bound = await self.transports.listen(ListenSpec(transport.upper(), local_ip, 0))
                    self._contact_address = (bound.host, bound.port)
                self._flow = await asyncio.wait_for(
                    self.transports.connect(transport.upper(), remote), 10
                )
        except (OSError, TimeoutError) as exc:
            await self.transports.close()
            raise CallFailed(f"cannot reach {plan.target}: {exc}") from None
        media_ip = self._flow.local[0]
        self._rtp_port = self._allocator.allocate(media_ip)
        try:
            offer_ip, offer_port = self._media_relay or (media_ip, self._rtp_port)
            self._offer = sdp.create_offer(
                offer_ip,
                offer_port,
                session_id=secrets.randbelow(10**9),
                session_version=1,
                srtp=self.plan.srtp,
            )
            self._t0 = time.monotonic()
            self.outcome.sip_call_id = self._call_id
            self._start_invite(self._build_invite(hostpart))
            try:
                await asyncio.wait_for(self._final.wait(), plan.timeout)
            except TimeoutError:
                self.outcome.error = f"no final response within {plan.timeout:.0f} s"
            if not self.outcome.answered:
                await self._close()
                reason = self.outcome.error or (
                    f"{self.outcome.final_code} {self.outcome.final_reason}".strip()
                )
                raise CallFailed(f"call not answered: {reason}")
            await self._start_media()
            script = asyncio.ensure_future(self._run_script())
            remaining = max(0.0, plan.timeout - (time.monotonic() - self._t0))
            try:
                await asyncio.wait_for(self._ended.wait(), remaining)
            except TimeoutError:
                self.outcome.hung_up_by = "timeout"
                self.outcome.error = f"no BYE within the {plan.timeout:.0f} s timeout"
                await self._send_bye()
            script.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await script
            self._collect_rtp_stats()
            if self._media is not None:
                self._media.close()
            if self.outcome.hung_up_by == "agent" and not self._flow.reliable:
                await self._linger()
            await self._close()
            if plan.record is not None:
                _write_wav(plan.record, b"".join(self._recorded))
            return self.outcome
        finally:
            # Cancelled or failed part-way too: the port goes back to the allocator every call of
            # this process shares, and the sockets are closed (a no-op after a normal end).
            await self._close()

    async def _linger(self) -> None:
        """Answer retransmitted BYEs until they stop (bounded by 64*T1): a lost 200 OK of ours
        would otherwise make the agent record its routing headers as undelivered."""
        t1 = self._timers.t1
        quiet = self.plan.linger if self.plan.linger is not None else min(16 * t1, 2.0)
        give_up = time.monotonic() + 64 * t1
        while True:
            now = time.monotonic()
            wait = min(self._last_bye_at + quiet, give_up) - now
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def _start_media(self) -> None:
        neg: sdp.Negotiated | None = None
        try:
            neg = sdp.accept_answer(
                sdp.SessionDescription.parse(self._offer),
                sdp.SessionDescription.parse(self._answer_sdp),
            )
        except ValueError as exc:
            log.warning("unusable SDP answer: %s", exc)
            return
        stream = MediaStream(
            payload_type=neg.payload_type,
            telephone_event_pt=neg.telephone_event_pt or 101,
            remote_address=self._media_relay or neg.remote_rtp,
            timeout=3600,
            srtp=neg.srtp.context() if neg.srtp is not None else None,
        )
        # The key's first packet on the wire, for key-sent -> BYE timing: ``send_dtmf`` only
        # queues a key, it leaves on a later 20 ms tick.
        stream.on_dtmf_start = self._key_sent
        self.outcome.srtp = neg.srtp is not None
        self._media = await RtpEndpoint.open(
            stream, self._allocator, port=self._rtp_port, on_audio=self._on_audio
        )

    def _key_sent(self) -> None:
        self.outcome.last_key_sent_ms = self._ms()

    def _on_audio(self, frame: bytes) -> None:
        self._recorded.append(frame)
        if self.outcome.response_ms is not None or not _is_speech(frame):
            return
        now = self._ms()
        if self.outcome.first_agent_audio_ms is None:
            self.outcome.first_agent_audio_ms = now
        # The agent's answer: its first speech after the caller's speech or keys ended.
        if self.outcome.last_input_ms is not None and now > self.outcome.last_input_ms:
            self.outcome.response_ms = now - self.outcome.last_input_ms

    async def _run_script(self) -> None:
        plan = self.plan
        actions = list(plan.actions)
        if plan.hangup_after is not None:
            actions = [Wait(plan.hangup_after), HangUp()]
        for action in actions:
            if isinstance(action, Wait):
                await asyncio.sleep(action.seconds)
            elif isinstance(action, Press):
                for i, digit in enumerate(action.digits):
                    if self._media is not None:
                        self._media.send_dtmf(digit, 100)
                    self.outcome.last_input_ms = self._ms()
                    if i < len(action.digits) - 1:
                        await asyncio.sleep(0.25)
            elif isinstance(action, Play):
                await self._play(load_wav_8k(action.path))
                self.outcome.last_input_ms = self._ms()
            elif isinstance(action, Say):
                from .voice import synthesize

                await self._play(await asyncio.to_thread(synthesize, action.text, plan.voice))
                self.outcome.last_input_ms = self._ms()
            elif isinstance(action, HangUp):
                self.outcome.hung_up_by = "caller"
                self.outcome.bye_ms = self._ms()
                await self._send_bye()
                self._ended.set()
                return

    async def _play(self, pcm: bytes) -> None:
        if self._media is not None and pcm:
            await self._media.play(pcm)

    async def _send_bye(self) -> None:
        if self._dialog is None or self._flow is None:
            return
        bye = self._dialog.create_request("BYE", via=self._via())
        self._bye_txn = ClientTransaction(bye, reliable=self._flow.reliable, config=self._timers)
        self._drive(self._bye_txn, self._bye_txn.start(time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bye_answered.wait(), 40)

    def _collect_rtp_stats(self) -> None:
        if self._media is None:
            return
        stats = self._media.stream.statistics
        self.outcome.rtp_received = stats.packets_received
        self.outcome.rtp_lost = max(0, stats.packets_lost)
        self.outcome.rtp_jitter_ms = stats.jitter_ms

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        if self._media is not None:
            self._media.close()
        else:
            self._allocator.release(self._rtp_port)
        await self.transports.close()


_ALLOCATORS: dict[tuple[int, int], RtpPortAllocator] = {}


def _port_allocator(ports: tuple[int, int]) -> RtpPortAllocator:
    """The RTP port allocator of a port range, shared by every call this process places.

    Shared, so that ports are taken round-robin across calls: a call must not take the port
    another call closed a moment ago. The agent may still be sending to it (until it has the
    200 OK to its BYE, or has read the caller's BYE), and the kernel queues those packets on
    the new call's socket as soon as it is bound, before the INVITE. Symmetric RTP then
    latched the stale source: the new call's keys went to the old call's closed port, and the
    agent's real packets were dropped as foreign. At 100 concurrent calls of ``five9 load``
    that lost about one key in 40 to 640, depending on the call rate.
    """
    low, high = ports
    allocator = _ALLOCATORS.get((low, high))
    if allocator is None:
        allocator = _ALLOCATORS[(low, high)] = RtpPortAllocator(low, high)
    return allocator


def _client_tls(plan: CallPlan) -> ssl.SSLContext:
    """The TLS context for a call: system CAs, or the given CA, or no checks at all."""
    ctx = ssl.create_default_context(cafile=str(plan.tls_ca) if plan.tls_ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not plan.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _with_local_ip(flow: Flow, remote: Address) -> Flow:
    """A UDP flow whose ``local`` is the address the kernel would use towards ``remote``."""
    if flow.local[0] not in ("0.0.0.0", "::"):
        return flow
    family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(remote)
        ip = probe.getsockname()[0]
    return Flow(flow.transport, (ip, flow.local[1]), flow.remote, flow._send, flow._closed)


def _is_speech(frame: bytes) -> bool:
    samples = np.frombuffer(frame, dtype="<i2")
    return bool(samples.size and np.abs(samples.astype(np.int32)).mean() > 200)


def load_wav_8k(path: Path) -> bytes:
    """A WAV file as 8 kHz mono 16-bit PCM (downmixed and resampled when needed)."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from None
    if width != 2:
        raise ValueError(f"{path}: only 16-bit PCM WAV is supported (got {8 * width}-bit)")
    samples = np.frombuffer(data, dtype="<i2").astype(np.float64)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != 8000:
        n_out = int(len(samples) * 8000 / rate)
        samples = np.interp(np.arange(n_out) * rate / 8000, np.arange(len(samples)), samples)
    return bytes(np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes())


def _write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(pcm)


async def place_call(plan: CallPlan) -> CallOutcome:
    """Place one simulated Five9 call (raises CallFailed when it is not answered)."""
    return await Five9Call(plan).run()
