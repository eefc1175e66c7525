"""The SIP edge: where a Five9 INVITE enters and where the handback BYE leaves.

``SipEdge.receive`` takes every message from every transport.  It drives the
sans-I/O transactions and dialogs of :mod:`byeline.sip`, admits calls (trunk
match, digest auth, limits, SDP), creates the :class:`~byeline.edge.call.Call`
the agent sees, and ends calls with a BYE whose headers come from the call's
current attributes.  Timers are the cores' deadlines scheduled on the loop.

Refusals are logged one line each; no input can raise out of ``receive``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import string
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from sipmessage import URI

from ..net.ports import PortRangeExhausted, RtpPortAllocator
from ..net.rtp import RtpEndpoint
from ..net.sip_transport import Address, Flow, ListenSpec, SipTransports, format_address
from ..rtp.dtmf import parse_dtmf_relay
from ..rtp.recording import CallRecording
from ..rtp.stream import MediaStream
from ..sip import sdp
from ..sip.dialog import (
    AckTimedOut,
    AnswerRetransmitter,
    Dialog,
    make_response,
    name_addr_uri,
    new_branch,
    new_tag,
)
from ..sip.digest import DigestChallenger, DigestCredentials, Verdict
from ..sip.message import (
    Request,
    Response,
    SipParseError,
    parse_address,
    parse_message,
    parse_uri,
    via_is_valid,
)
from ..sip.transaction import (
    ClientTransaction,
    Deliver,
    Output,
    ServerInviteTransaction,
    ServerTransaction,
    State,
    Terminated,
    TimedOut,
    TimerConfig,
    Transaction,
    Transmit,
)
from . import attributes as attrs
from .call import Call, CallResult, CallState, Delivery, EndedBy, HeaderRefusal, new_call_id
from .overload import OverloadGate, probe_interval
from .timers import Timers
from .trunk import DispatchRule, DispatchRuleSet, Trunk, TrunkMatchResult, TrunkSet

log = logging.getLogger("byeline.edge")

ALLOW: Final = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
# Methods we know but do not take: 405 with Allow.  Anything else: 501.
KNOWN_METHODS: Final = {"REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PRACK", "PUBLISH"}

AgentFactory = Callable[[Call], Awaitable[None]]

#: User agents of SIP scanners and war-dialers (the product name of the User-Agent header).
#: Requests from them are dropped unanswered: no Five9 trunk sends these names, and an answer
#: only confirms to the scanner that a SIP server listens here.
SCANNER_USER_AGENTS: Final[tuple[str, ...]] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sundayddr",
    "sip-scan",
    "iwar",
    "sivus",
    "pplsip",
)

# Cheap looks at a datagram before it is parsed (flood paths must not pay for a full parse).
_TO_TAG: Final = re.compile(rb"\r\n(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=", re.IGNORECASE)
_UA_COMMENT: Final = re.compile(r"\([^)]*\)")
_SWEEP_GRANULARITY: Final = 0.1  # seconds: how late an ended leg may be dropped, at most
#: The context of a server transaction handed to the sweep (``SipEdge._wait_out``).
_WAITING: Final = object()


def user_agent_value(data: bytes, head_end: int) -> bytes | None:
    """The value of the first ``User-Agent`` header line in ``data[:head_end]``, unparsed.

    What ``\\r\\nuser-agent[ \\t]*:[ \\t]*([^\\r\\n]*)`` (case-insensitive) finds, without the
    regular expression: a case-insensitive pattern can't use the fast literal search, and it ran
    over every request's head (~5,000 instructions a message). Only the lines that begin with a
    ``u`` or a ``U`` are looked at (two literal searches), so the head is not copied lowered.
    """
    length = min(head_end, len(data))
    lower = data.find(b"\r\nu", 0, length)
    upper = data.find(b"\r\nU", 0, length)
    while lower >= 0 or upper >= 0:
        if upper < 0 or 0 <= lower < upper:
            at = lower
            lower = data.find(b"\r\nu", at + 2, length)
        else:
            at = upper
            upper = data.find(b"\r\nU", at + 2, length)
        if at + 12 > length or data[at + 2 : at + 12].lower() != b"user-agent":
            continue
        i = at + 12
        while i < length and (data[i] == 32 or data[i] == 9):
            i += 1
        if i < length and data[i] == 58:  # ":"
            i += 1
            while i < length and (data[i] == 32 or data[i] == 9):
                i += 1
            end = i
            while end < length and data[end] != 13 and data[end] != 10:
                end += 1
            return data[i:end]
    return None


@dataclass
class EdgeConfig:
    """What ``byeline serve`` configures on the edge."""

    listen: list[ListenSpec] = field(default_factory=lambda: [ListenSpec("UDP", "127.0.0.1", 5060)])
    media_ip: str = "127.0.0.1"
    rtp_ports: tuple[int, int] = (10000, 20000)
    max_calls: int = 200
    user_agent: str = "byeline/0.1"
    timers: TimerConfig = field(default_factory=TimerConfig)
    media_timeout: float = 30.0
    shutdown_grace: float = 10.0
    ringing: bool = True
    """180 Ringing before a delayed answer (``answer_delay`` > 0). An answer at once goes out
    alone, as Asterisk's and FreeSWITCH's ``answer`` do: a 180 in the same instant as the 200
    tells the caller nothing, and costs a message and a trace row per call."""
    hostname: str = ""
    answer_delay: float = 0.0
    """Seconds between 180 Ringing and 200 OK (a Five9-like ring; CANCEL can arrive in it)."""
    digest_algorithms: tuple[str, ...] = ("MD5", "SHA-256")
    """The 401 challenges, in order.  MD5 first: Five9 trunks, SIPp and many phones read only
    the first ``WWW-Authenticate`` and give up on a SHA-256 one instead of taking the next."""
    invite_rate: float = 50.0
    """Per source IP: INVITEs per second that may be refused or challenged (a token bucket).
    Past the limit, new INVITEs from that address are dropped unanswered until tokens come
    back; admitted calls take no token; addresses a trunk allows are never dropped.  0 turns
    the limit off."""
    invite_burst: int = 100
    """Per source IP: the bucket's size (refused or challenged INVITEs in a burst)."""
    drop_user_agents: tuple[str, ...] = SCANNER_USER_AGENTS
    """Requests whose User-Agent names one of these products are dropped unanswered."""
    recordings: str | None = None
    """A directory: each call is recorded there as ``<call id>.wav`` (caller left, agent right)."""
    record_trunks: tuple[str, ...] = ()
    """Record only calls on these trunks (names or ids); empty: every call."""
    recording_announcement: bytes | None = None
    """8 kHz 16-bit PCM played first on recorded calls ("this call may be recorded")."""
    rtp_port_rest: float | None = 2.0
    """Seconds an ended call's RTP port stays parked (bound, dropping late packets) before a
    new call may take it with its open socket; None closes each call's port at once."""
    overload_delay: float = 0.25
    """Seconds a SIP message may wait unread on a UDP listener (measured by a probe) before
    new INVITEs get 503 with Retry-After (``overload.OverloadGate``); 0 turns the gate off.
    Half of T1: the callers' retransmissions never join the backlog."""
    overload_records: int = 50_000
    """Call-record writes that may wait for the store's writer before new INVITEs get 503 with
    Retry-After (a call makes about nine); 0: no limit."""


def _no_writes() -> int:
    """The record writes waiting where the edge has no store: none."""
    return 0


class SourceRateLimiter:
    """Token buckets per source IP for INVITEs that do not become calls (sans-I/O: ``now`` in).

    ``allows`` is asked before an INVITE is even parsed; ``charge`` takes a token when an INVITE
    is refused or challenged.  At most ``max_sources`` buckets are kept (least recently charged
    go first: a forgotten source starts again with a full bucket).
    """

    def __init__(self, rate: float, burst: int, *, max_sources: int = 10000) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # ip: tokens, at

    def _level(self, ip: str, now: float) -> float:
        entry = self._buckets.get(ip)
        if entry is None:
            return self.burst
        tokens, at = entry
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def allows(self, ip: str, now: float) -> bool:
        """Whether a new INVITE from ``ip`` may be looked at."""
        return self.rate <= 0 or self._level(ip, now) >= 1.0

    def charge(self, ip: str, now: float) -> None:
        """An INVITE from ``ip`` was refused or challenged."""
        if self.rate <= 0:
            return
        self._buckets[ip] = (max(0.0, self._level(ip, now) - 1.0), now)
        self._buckets.move_to_end(ip)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def user_agent_product(value: bytes | str) -> list[str]:
    """The product names of a User-Agent value, lower-cased (``sipcli/v1.8`` -> ``sipcli``)."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = _UA_COMMENT.sub(" ", text)  # comments are not products
    return [token.split("/", 1)[0].lower() for token in text.split()]


@dataclass(eq=False)
class CallLeg:
    """The SIP side of one call: the INVITE, its transaction, dialog and media."""

    call: Call
    invite: Request
    flow: Flow
    txn: ServerInviteTransaction
    trunk: Trunk
    rule: DispatchRule | None
    local_tag: str
    started_at: float
    dialog: Dialog | None = None
    retransmitter: AnswerRetransmitter | None = None
    media_session: sdp.MediaSession | None = None
    negotiated: sdp.Negotiated | None = None
    late_offer: bool = False
    rtp_port: int | None = None
    media_starting: bool = False
    recording: CallRecording | None = None
    confirmed: bool = False  # the ACK for the initial 2xx has arrived
    reinvite_offer: bool = False  # our 2xx to a re-INVITE carried the offer
    agent_task: asyncio.Task[None] | None = None
    bye_txn: ClientTransaction | None = None
    bye_future: asyncio.Future[Response | None] | None = None
    answer_timer: asyncio.TimerHandle | None = None
    first_rtp_timer: asyncio.TimerHandle | None = None
    recorded_attributes: dict[str, str] | None = None  # as last written to the call record

    # Written out so that mypyc compiles it (the one @dataclass generates runs interpreted).
    # The fields after ``rtp_port`` start at their defaults: they describe what happens later.
    def __init__(
        self,
        call: Call,
        invite: Request,
        flow: Flow,
        txn: ServerInviteTransaction,
        trunk: Trunk,
        rule: DispatchRule | None,
        local_tag: str,
        started_at: float,
        dialog: Dialog | None = None,
        retransmitter: AnswerRetransmitter | None = None,
        media_session: sdp.MediaSession | None = None,
        negotiated: sdp.Negotiated | None = None,
        late_offer: bool = False,
        rtp_port: int | None = None,
    ) -> None:
        self.call = call
        self.invite = invite
        self.flow = flow
        self.txn = txn
        self.trunk = trunk
        self.rule = rule
        self.local_tag = local_tag
        self.started_at = started_at
        self.dialog = dialog
        self.retransmitter = retransmitter
        self.media_session = media_session
        self.negotiated = negotiated
        self.late_offer = late_offer
        self.rtp_port = rtp_port
        self.media_starting = False
        self.recording = None
        self.confirmed = False
        self.reinvite_offer = False
        self.agent_task = None
        self.bye_txn = None
        self.bye_future = None
        self.answer_timer = None
        self.first_rtp_timer = None
        self.recorded_attributes = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.invite.call_id, self.local_tag)


class SipEdge:
    """The SIP edge server (the ``MessageSink`` of the transports)."""

    def __init__(
        self,
        config: EdgeConfig,
        trunks: TrunkSet,
        dispatch: DispatchRuleSet | None = None,
        *,
        store: Any = None,
        agent: AgentFactory | None = None,
        on_shutdown_route: Callable[[Call], Awaitable[None]] | None = None,
        result_attributes: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.trunks = trunks
        self.dispatch = dispatch
        self.store = store
        self.agent = agent
        self.on_shutdown_route = on_shutdown_route
        self.result_attributes = result_attributes
        self.transports = SipTransports(self)
        self.ports = RtpPortAllocator(
            *config.rtp_ports, host=config.media_ip, rest=config.rtp_port_rest
        )
        self._server_txns: dict[tuple[str, str, str], Any] = {}
        self._client_txns: dict[str, tuple[ClientTransaction, Flow, CallLeg]] = {}
        self._legs: dict[tuple[str, str], CallLeg] = {}  # dialog (Call-ID, our tag) -> live leg
        # Ended dialogs, kept 64*T1 for late requests: (Call-ID, our tag) -> our call id. Only
        # the id stays, not the leg: tens of thousands linger under load, and the collector
        # would walk every object a whole leg holds.
        self._ended: dict[tuple[str, str], str] = {}
        self._active: dict[str, CallLeg] = {}  # call_id -> leg, until the call ends
        self._invite_legs: dict[tuple[str, str, str], CallLeg] = {}
        # Transaction and 2xx-retransmission timers, on one loop timer.
        self.timers = Timers()
        # Made once: every server transaction's timer fires through this one bound method.
        self._fire_server_timer: Callable[[Transaction], None] = self._server_timer
        # Ended dialogs by how long they linger: (due, dialog key) in due order, dropped by one
        # sweep timer rather than a timer per call.
        self._lingering: dict[float, deque[tuple[float, tuple[str, str]]]] = {}
        # Server transactions waiting out Timer J or L (see _wait_out), by how long they wait:
        # (deadline, transaction key) in deadline order, ended by the same sweep timer.
        self._waiting: dict[float, deque[tuple[float, tuple[str, str, str]]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._challengers: dict[str, DigestChallenger] = {}
        self._secret = os.urandom(32)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.shutting_down = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stats: dict[str, int] = {
            "invites": 0,
            "answered": 0,
            "rejected": 0,
            "bad": 0,
            "rate_limited": 0,
            "dropped_user_agent": 0,
        }
        self.limiter = SourceRateLimiter(config.invite_rate, config.invite_burst)
        pending = getattr(store, "pending_writes", None)
        # Without a store's queue to read, the records limit is off and reads as 0.
        self._pending_writes: Callable[[], int] = pending or _no_writes
        self.overload = OverloadGate(
            config.overload_delay, config.overload_records if pending is not None else 0
        )
        self._overload_logged = (0.0, 0)  # (last log, refusals counted then)
        self._drop_agents = frozenset(a.lower() for a in config.drop_user_agents)
        self._agent_verdicts: dict[bytes, bool] = {}
        self._limit_logged: dict[str, tuple[float, int]] = {}  # ip: (last log, drops since)
        self._allowlist_cache: dict[tuple[int, str], bool] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> list[ListenSpec]:
        """Open the listeners; returns them with their real ports."""
        self._loop = asyncio.get_running_loop()
        self.timers.loop = self._loop
        bound = []
        for spec in self.config.listen:
            bound.append(await self.transports.listen(spec))
        if self.overload.enabled:
            self.transports.start_probes(probe_interval(self.overload.max_delay))
        for b in bound:
            log.info("listening on %s", b)
        return bound

    @property
    def calls(self) -> list[Call]:
        """The calls in progress."""
        return [leg.call for leg in self._active.values()]

    def queue_wait(self) -> float:
        """How long a SIP message waits unread on the UDP listeners now, seconds (the overload
        gate's measure; 0 with the gate off)."""
        return self.transports.queue_delay(self._now())

    @property
    def active_calls(self) -> int:
        """How many calls are in progress (admission reads it on every INVITE)."""
        return len(self._active)

    async def shutdown(self) -> None:
        """Refuse new calls, hand back every active call, wait (bounded) for the BYEs."""
        self.shutting_down = True
        legs = [leg for leg in self._legs.values() if not leg.call.ended]
        if legs:
            log.info("shutting down: handing back %d active calls", len(legs))

        async def end(leg: CallLeg) -> None:
            if leg.call.state is CallState.RINGING:
                self._reject_leg(leg, 503, [("Retry-After", "30")], EndedBy.SHUTDOWN)
                return
            if self.on_shutdown_route is not None:
                with contextlib.suppress(Exception):
                    await self.on_shutdown_route(leg.call)
            await leg.call.hangup(ended_by=EndedBy.SHUTDOWN)

        if legs:
            _, pending = await asyncio.wait(
                [self._spawn(end(leg)) for leg in legs],
                timeout=self.config.shutdown_grace,
            )
            if pending:
                self._end_at_grace()
                # The hangups just resolved record their calls on their next turn.
                await asyncio.wait(pending, timeout=1.0)
        for leg in list(self._legs.values()):
            if leg.agent_task is not None and not leg.agent_task.done():
                leg.agent_task.cancel()
        await self.transports.close()
        self.ports.close_parked()
        self.timers.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        log.info("SIP edge counters: %s", " ".join(f"{k}={v}" for k, v in self.stats.items()))

    def _end_at_grace(self) -> None:
        """The shutdown grace is over: end every call still in progress, on its record.

        A BYE still unanswered is given up (delivery ``timeout``: the route and the BYE's
        headers are on the record already); a call whose BYE has not left yet (the agent's
        shutdown route still running) ends ``not_sent``.  Without this the rows stay
        ``active`` until the next start marks them interrupted.
        """
        for leg in list(self._active.values()):
            future = leg.bye_future
            if future is not None and not future.done():
                log.warning("%s: BYE unanswered when the shutdown grace ended", leg.call.call_id)
                future.set_result(None)
            elif not leg.call.ended:
                log.warning("%s: no BYE sent before the shutdown grace ended", leg.call.call_id)
                self._end_leg(
                    leg, CallResult(ended_by=EndedBy.SHUTDOWN, delivery=Delivery.NOT_SENT)
                )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the edge keeps a reference to until it ends."""
        loop = self._loop
        # The loop's own create_task: asyncio.ensure_future is interpreted Python around it.
        task: asyncio.Task[Any] = (
            loop.create_task(coro) if loop is not None else asyncio.ensure_future(coro)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- timers ------------------------------------------------------------------------

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def _schedule(self, owner: Any, deadline: float | None, fire: Callable[[], None]) -> None:
        self.timers.schedule(owner, deadline, fire)

    # -- transmit and trace ------------------------------------------------------------

    def _send(
        self, flow: Flow, data: bytes, call_id: str | None, to: Address | None = None
    ) -> None:
        flow.send(data, to)
        if self.store is not None and call_id is not None:
            self.store.trace(
                call_id,
                at=time.time(),
                direction="out",
                transport=flow.transport,
                peer=format_address(to or flow.remote),
                data=_redacted(data),
            )

    def _trace_in(self, call_id: str | None, flow: Flow, data: bytes) -> None:
        if self.store is not None and call_id is not None:
            self.store.trace(
                call_id,
                at=time.time(),
                direction="in",
                transport=flow.transport,
                peer=flow.peer,
                data=_redacted(data),
            )

    def _response_target(self, request: Request, flow: Flow) -> Address | None:
        """Where a response goes over UDP (RFC 3261 §18.2.2 with RFC 3581 rport)."""
        if flow.reliable:
            return None
        return flow.remote if ";rport=" in request.top_via else _via_target(request, flow)

    def _run_server(
        self,
        txn: Transaction,
        flow: Flow,
        outputs: list[Output],
        call_id: str | None,
        to: Address | None,
    ) -> None:
        for out in outputs:
            if isinstance(out, Transmit):
                self._send(flow, out.data, call_id, to)
            elif isinstance(out, Terminated):
                self._server_txns.pop(cast(tuple[str, str, str], txn.key), None)
        if txn.terminated:
            self._schedule(txn, None, _nothing)
        elif txn.waiting:
            if txn.context is not _WAITING:
                self._wait_out(txn)
        else:
            # Where its retransmissions go, kept on the transaction: its timer then needs no
            # closure (an ended call's transactions linger 64*T1, and the GC walks what they hold).
            txn.context = (flow, call_id, to)
            self.timers.schedule_call(txn, txn.deadline, self._fire_server_timer)

    def _wait_out(self, txn: Transaction) -> None:
        """Hand a transaction that only waits out Timer J or L (64*T1) to the sweep.

        Every call leaves two behind (its INVITE's in Accepted, its BYE's in Completed), so at
        2,000 calls/s some 128,000 wait at once. On a timer of their own each held three
        tuples more (its route, its timer entry, its table entry) that every collection of the
        cyclic GC walked: at 2,000 calls/s a middle collection paused the loop for 360 ms, past
        the overload gate's 250 ms. Waiting, it holds no route (a retransmitted request brings
        its own) and its place in the sweep is a deadline and its key, which the GC does not
        track; the timer, which sends nothing, fires up to a sweep late.
        """
        self.timers.schedule_call(txn, None, self._fire_server_timer)
        txn.context = _WAITING
        deadline = txn.deadline
        if deadline is None:
            return
        self._to_sweep(self._waiting, txn.config.timeout, deadline, txn.key)

    def _server_timer(self, txn: Transaction) -> None:
        flow, call_id, to = cast(tuple[Flow, str | None, Address | None], txn.context)
        outputs = txn.on_timer(self._now())
        for out in outputs:
            if isinstance(out, TimedOut) and isinstance(txn, ServerInviteTransaction):
                log.info("no ACK for the final response to INVITE %s", call_id or txn.key)
        self._run_server(txn, flow, outputs, call_id, to)

    def respond(
        self,
        request: Request,
        flow: Flow,
        status: int,
        reason: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        to_tag: str | None = None,
        call_id: str | None = None,
    ) -> Response:
        """Answer ``request`` through its server transaction (created if needed)."""
        h = [("Server", self.config.user_agent), *(headers or [])]
        if body:
            h.append(("Content-Type", "application/sdp"))
        if to_tag is None and request.to_tag is None:
            to_tag = new_tag()  # a request inside a dialog keeps its own (§8.2.6.2)
        response = make_response(request, status, reason, to_tag=to_tag, headers=h, body=body)
        key = _txn_key(request)
        entry = self._server_txns.get(key)
        txn: Any
        if entry is None:
            txn = ServerTransaction(request, reliable=flow.reliable, config=self.config.timers)
            txn.key = key
            self._server_txns[key] = txn
        else:
            txn = entry
        to = self._response_target(request, flow)
        try:
            outputs = txn.respond(response, self._now())
        except RuntimeError:
            return response  # already answered: a late duplicate answer is dropped
        self._run_server(txn, flow, outputs, call_id, to)
        return response

    # -- receive -----------------------------------------------------------------------

    def receive(self, data: bytes, flow: Flow) -> None:
        """One message from a transport."""
        if not data.strip(b"\r\n"):
            if data == b"\r\n\r\n" and flow.reliable:
                flow.send(b"\r\n")  # RFC 5626 keepalive pong
            return
        if not data.startswith(b"SIP/") and self._drop_unparsed(data, flow):
            return
        try:
            message = parse_message(data, stream=flow.reliable)
        except SipParseError as exc:
            self.stats["bad"] += 1
            self._refuse_malformed(exc, flow)
            return
        if isinstance(message, Response):
            self._receive_response(message, flow, data)
        else:
            self._receive_request(message, flow, data)

    def _drop_unparsed(self, data: bytes, flow: Flow) -> bool:
        """Scanner user agents and over-the-limit INVITEs, dropped before any parsing.

        A dropped INVITE of a transaction we already have (a retransmission) loses nothing:
        the transaction and the 2xx retransmitter resend our answer on their own timers.
        """
        end = data.find(b"\r\n\r\n")
        head_end = end + 4 if end >= 0 else len(data)
        if self._drop_agents:
            agent = user_agent_value(data, head_end)
            if agent is not None and self._dropped_agent(agent):
                self.stats["dropped_user_agent"] += 1
                return True
        if (
            data.startswith(b"INVITE ")
            and not self.limiter.allows(flow.remote[0], self._now())
            and _TO_TAG.search(data, 0, head_end) is None
            and not self._allowlisted(flow.remote[0])
        ):
            self.stats["rate_limited"] += 1
            self._log_rate_limited(flow.remote[0])
            return True
        return False

    def _dropped_agent(self, value: bytes) -> bool:
        """Whether a User-Agent value names a product of ``drop_user_agents``; remembered per
        value (a trunk's peers send the same one on every request), at most 1,024 of them."""
        known = self._agent_verdicts.get(value)
        if known is None:
            known = not self._drop_agents.isdisjoint(user_agent_product(value))
            if len(self._agent_verdicts) >= 1024:
                self._agent_verdicts.clear()
            self._agent_verdicts[value] = known
        return known

    def _allowlisted(self, ip: str) -> bool:
        """Whether a trunk names ``ip`` in its allowed_addresses (IP or CIDR).

        Such a source (a Five9 data center) is never dropped by the INVITE limit: over UDP an
        attacker can forge its address, and would otherwise empty its bucket and have its real
        calls dropped.  Its refused INVITEs still cost a parse each; --max-calls bounds the rest.
        """
        key = (id(self.trunks), ip)
        known = self._allowlist_cache.get(key)
        if known is None:
            known = False
            try:
                address = ipaddress.ip_address(ip)
                for trunk in self.trunks:
                    for entry in trunk.allowed_addresses:
                        with contextlib.suppress(ValueError):
                            if address in ipaddress.ip_network(entry, strict=False):
                                known = True
            except ValueError:
                pass
            if len(self._allowlist_cache) >= 1024:
                self._allowlist_cache.clear()
            self._allowlist_cache[key] = known
        return known

    def _log_rate_limited(self, ip: str) -> None:
        now = self._now()
        last, count = self._limit_logged.get(ip, (-1e9, 0))
        count += 1
        if now - last >= 10.0:
            log.warning(
                "INVITE rate limit for %s: %d INVITE(s) dropped unanswered "
                "(more than %g/s refused or challenged)",
                ip,
                count,
                self.config.invite_rate,
            )
            last, count = now, 0
            if len(self._limit_logged) > 1000:
                self._limit_logged.clear()
        self._limit_logged[ip] = (last, count)

    def _refuse_malformed(self, exc: SipParseError, flow: Flow) -> None:
        partial = exc.partial
        if (
            partial is None
            or partial.method == "ACK"
            or any(partial.headers.get(h) is None for h in ("Via", "From", "To", "Call-ID", "CSeq"))
        ):
            log.warning("dropped malformed message from %s: %s", flow.peer, exc.reason)
            return
        log.warning("400 to %s: %s", flow.peer, exc.reason)
        try:
            response = make_response(partial, exc.status, _reason_for(exc), to_tag=new_tag())
            self._add_received(partial, flow)
            flow.send(response.serialize(), self._response_target(partial, flow))
        except Exception as inner:  # a header too broken to echo: drop
            log.warning("dropped malformed message from %s: %s (%s)", flow.peer, exc.reason, inner)

    def _add_received(self, request: Request, flow: Flow) -> None:
        """RFC 3261 §18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via.

        A ``received`` or ``rport`` value the peer wrote itself is removed first: the
        packet's source address is the only truth, or anyone could have our responses
        (and retransmitted 200s) reflected to a victim address.
        """
        vias = request.headers.getall("Via")
        if not vias:
            return
        top = request.top_via
        new_top = via_with_received(top, flow.remote[0], flow.remote[1])
        if new_top is not None:
            request.headers.replace_first("Via", vias[0].replace(top, new_top, 1))

    def _receive_request(self, request: Request, flow: Flow, data: bytes) -> None:
        # An INVITE's Via is checked as the peer wrote it, before we add received/rport to it.
        via_ok = request.method != "INVITE" or via_is_valid(request.top_via)
        method = request.method
        if method == "ACK":
            self._receive_ack(request, flow, data)  # never answered: no received/rport needed
            return
        try:
            self._add_received(request, flow)
        except Exception:
            log.warning("dropped request with unusable Via from %s", flow.peer)
            return
        key = _txn_key(request)
        txn = self._server_txns.get(key)
        if txn is not None:
            leg = self._invite_legs.get(key)
            call_id = leg.call.call_id if leg else None
            self._trace_in(call_id, flow, data)
            self._run_server(
                txn,
                flow,
                txn.receive_request(request, self._now()),
                call_id,
                self._response_target(request, flow),
            )
            if leg is not None and leg.retransmitter is not None:
                # §13.3.1.4: a retransmitted INVITE after our 2xx gets the 2xx again.
                out = leg.retransmitter.retransmit()
                if out is not None:
                    self._send(flow, out.data, call_id, self._response_target(request, flow))
            return

        mf = request.headers.get("Max-Forwards")
        mf_text = mf.strip() if mf is not None else None
        if mf_text is not None and (
            not mf_text.isascii()
            or not mf_text.isdigit()
            or len(mf_text) > 10
            or int(mf_text) > 255
        ):
            self.respond(request, flow, 400, "Bad Max-Forwards")
            return
        if (
            mf_text is not None
            and int(mf_text) == 0
            and method not in ("OPTIONS", "CANCEL", "BYE")
            and request.to_tag is None
        ):
            self.respond(request, flow, 483)
            return
        # We implement no extension that a peer may require (RFC 3261 §8.2.2.3).
        if request.headers.get("Require") and method != "CANCEL":
            unsupported = request.headers.get("Require") or ""
            self.respond(request, flow, 420, headers=[("Unsupported", unsupported)])
            return

        if request.to_tag is None and method != "CANCEL":
            # Outside a dialog the Request-URI must be one we can route (RFC 3261 §8.2.2.1).
            scheme = request.uri.split(":", 1)[0].lower() if ":" in request.uri else ""
            if scheme not in ("sip", "sips", "tel"):
                self.respond(request, flow, 416, headers=[("Accept", "sip, sips, tel")])
                return
            if scheme != "tel":
                try:
                    parse_uri(request.uri)
                except ValueError:
                    self.respond(request, flow, 400, "Bad Request-URI")
                    return
            accept = request.headers.get("Accept")
            if accept is not None and accept.strip() and not _accepts_sdp(accept):
                self.respond(
                    request,
                    flow,
                    406,
                    headers=[
                        ("Accept", "application/sdp"),
                        ("Warning", '399 byeline "only application/sdp bodies"'),
                    ],
                )
                return

        if method == "CANCEL":
            self._receive_cancel(request, flow, data)
        elif request.to_tag is not None:
            self._receive_in_dialog(request, flow, data)
        elif method == "INVITE":
            self._receive_invite(request, flow, data, via_ok=via_ok)
        elif method == "OPTIONS":
            self.respond(
                request,
                flow,
                200,
                headers=[("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", "")],
            )
        elif method == "BYE":
            self.respond(request, flow, 481)
        elif method in KNOWN_METHODS or method in ("INFO", "UPDATE"):
            status = 481 if method in ("INFO", "UPDATE", "PRACK") else 405
            self.respond(request, flow, status, headers=[("Allow", ALLOW)])
        else:
            self.respond(request, flow, 501, headers=[("Allow", ALLOW)])

    # -- INVITE --------------------------------------------------------------------------

    def _receive_invite(
        self, invite: Request, flow: Flow, data: bytes, *, via_ok: bool = True
    ) -> None:
        self.stats["invites"] += 1
        key = _txn_key(invite)
        txn = ServerInviteTransaction(invite, reliable=flow.reliable, config=self.config.timers)
        txn.key = key
        self._server_txns[key] = txn
        to = self._response_target(invite, flow)
        if self.config.answer_delay > 0 and not self.config.ringing:
            # §17.2.1: 100 Trying only when no other response goes out at once; otherwise the
            # 180, the 200 or the refusal below leaves before this INVITE's handling returns.
            trying = make_response(invite, 100, headers=[("Server", self.config.user_agent)])
            self._run_server(txn, flow, txn.respond(trying, self._now()), None, to)

        def refuse(
            status: int,
            why: str,
            headers: list[tuple[str, str]] | None = None,
            *,
            overload: bool = False,
        ) -> None:
            self.stats["rejected"] += 1
            self.stats[f"rejected_{status}"] = self.stats.get(f"rejected_{status}", 0) + 1
            # A token even when overloaded: a source no trunk allows that floods us is then
            # dropped unanswered, cheaper than a 503 (a trunk's own addresses never are).
            self.limiter.charge(flow.remote[0], self._now())
            if overload:
                # Logged once a second, not once an INVITE: a line per refusal would cost
                # the time the gate saves.
                self.stats["overloaded"] = self.stats.get("overloaded", 0) + 1
                self._log_overload()
            else:
                log.info("%d to INVITE %s from %s: %s", status, invite.call_id, flow.peer, why)
            response = make_response(
                invite,
                status,
                to_tag=new_tag(),
                headers=[("Server", self.config.user_agent), *(headers or [])],
            )
            self._run_server(txn, flow, txn.respond(response, self._now()), None, to)

        if self.shutting_down:
            refuse(503, "shutting down", [("Retry-After", "30")])
            return
        gate = self.overload
        if gate.active and not gate.admit(
            self.transports.queue_delay(self._now()) if gate.enabled else 0.0,
            self._pending_writes(),
        ):
            refuse(503, "overloaded", [("Retry-After", "1")], overload=True)
            return
        if len(self._active) >= self.config.max_calls:
            refuse(486, f"at --max-calls {self.config.max_calls}")
            return
        try:
            ruri = parse_uri(invite.uri)
        except ValueError:
            refuse(
                416
                if ":" in invite.uri and not invite.uri.lower().startswith(("sip:", "sips:"))
                else 400,
                f"bad Request-URI {invite.uri[:60]!r}",
            )
            return
        contact = invite.headers.get("Contact")
        try:
            if not via_ok:
                raise ValueError("bad Via")
            if not contact:
                raise ValueError("no Contact")
            parse_uri(name_addr_uri(contact))
        except ValueError:
            refuse(400, "INVITE with an unusable Via or Contact")
            return
        if ruri.scheme not in ("sip", "sips"):
            refuse(416, f"unsupported URI scheme {ruri.scheme}")
            return
        # LiveKit takes the called number from To and sip.hostname from the From host.
        called = _to_user(invite) or ruri.user or ""
        caller = _from_user(invite) or ""
        match = self.trunks.match(
            called_number=called, caller_number=caller, source_ip=flow.remote[0]
        )
        if match.result is not TrunkMatchResult.MATCHED or match.trunk is None:
            refuse(
                match.sip_status,
                f"{match.result.value}: {match.reason} "
                f"(source {flow.remote[0]}, caller {caller!r})",
            )
            return
        trunk = match.trunk
        if match.needs_auth:
            verdict = self._check_auth(invite, trunk)
            if verdict is not Verdict.OK:
                challenger = self._challenger(trunk)
                stale = verdict is Verdict.STALE
                challenge = challenger.challenge(
                    time.time(), stale=stale, algorithms=self.config.digest_algorithms
                )
                refuse(
                    401,
                    "digest " + ("stale nonce" if stale else "challenge"),
                    [("WWW-Authenticate", c) for c in challenge],
                )
                return

        # SDP offer/answer (RFC 3264); no body = late offer.
        ctype = (invite.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        offer: sdp.SessionDescription | None = None
        if invite.body:
            if ctype != "application/sdp":
                refuse(415, f"body of type {ctype or 'unknown'}", [("Accept", "application/sdp")])
                return
            try:
                offer = sdp.SessionDescription.parse(invite.body)
            except ValueError as exc:
                refuse(400, f"bad SDP: {exc}")
                return

        rule = (
            self.dispatch.select(trunk_id=trunk.id, called_number=called, caller_number=caller)
            if self.dispatch
            else None
        )
        try:
            rtp_port = self.ports.allocate()
        except PortRangeExhausted as exc:
            refuse(503, str(exc), [("Retry-After", "5")])
            return

        media_session = sdp.MediaSession(
            media_ip=self.config.media_ip,
            media_port=rtp_port,
            policy=sdp.MediaEncryption.from_livekit(trunk.info.media_encryption),
        )
        negotiated: sdp.Negotiated | None = None
        answer_body: bytes
        if offer is not None:
            try:
                negotiated = media_session.answer(offer)
            except sdp.NoCommonCodec as exc:
                self.ports.release(rtp_port)
                refuse(488, str(exc), [("Warning", '304 byeline "no common codec"')])
                return
            except ValueError as exc:
                self.ports.release(rtp_port)
                refuse(488, str(exc))
                return
            answer_body = negotiated.sdp
        else:
            answer_body = media_session.offer()

        local_tag = new_tag()
        call_id = new_call_id()
        attributes = attrs.invite_attributes(
            trunk,
            rule,
            headers=list(invite.headers),
            call_id=call_id,
            sip_call_id=invite.call_id,
            call_tag=invite.from_tag or "",
            caller_number=caller,
            called_number=called,
            hostname=_from_host(invite),
        )
        call = Call(
            call_id=call_id,
            identity=attrs.participant_identity(caller),
            attributes=attributes,
            controller=self,
            caller=caller,
            callee=called,
        )
        if rule is not None and rule.agents:
            call.agent_name = rule.agents[0]  # LiveKit's agent dispatch, by name
        leg = CallLeg(
            call=call,
            invite=invite,
            flow=flow,
            txn=txn,
            trunk=trunk,
            rule=rule,
            local_tag=local_tag,
            started_at=time.time(),
            media_session=media_session,
            negotiated=negotiated,
            late_offer=offer is None,
            rtp_port=rtp_port,
        )
        self._legs[leg.key] = leg
        self._active[call_id] = leg
        self._invite_legs[key] = leg
        self._record_start(leg, flow, data)

        if self.config.ringing and self.config.answer_delay > 0:
            ringing = make_response(
                invite, 180, to_tag=local_tag, headers=[("Server", self.config.user_agent)]
            )
            self._run_server(txn, flow, txn.respond(ringing, self._now()), call_id, to)
        if self.config.answer_delay > 0 and self._loop is not None:
            # Ring first; CANCEL, shutdown or a hangup in the meantime cancel this timer.
            leg.answer_timer = self._loop.call_later(
                self.config.answer_delay, self._answer_when_due, leg, answer_body
            )
        else:
            self._answer(leg, answer_body)

    def _answer_when_due(self, leg: CallLeg, body: bytes) -> None:
        leg.answer_timer = None
        if leg.call.state is not CallState.RINGING or self.shutting_down:
            return
        try:
            self._answer(leg, body)
        except Exception:
            log.exception("%s: internal error answering", leg.call.call_id)

    def _log_overload(self) -> None:
        """One warning a second while the overload gate refuses INVITEs."""
        now = self._now()
        last, counted = self._overload_logged
        if now - last < 1.0:
            return
        gate = self.overload
        refused = gate.refused
        log.warning(
            "overloaded: %d new INVITEs refused with 503 since the last warning "
            "(SIP messages wait %.0f ms unread, the limit is %.0f ms; "
            "%d call-record writes wait for the database, the limit is %d)",
            refused - counted,
            gate.delay * 1000,
            gate.max_delay * 1000,
            gate.records,
            gate.max_records,
        )
        self._overload_logged = (now, refused)

    def _check_auth(self, invite: Request, trunk: Trunk) -> Verdict:
        value = invite.headers.get("Authorization") or invite.headers.get("Proxy-Authorization")
        if not value:
            return Verdict.BAD
        try:
            creds = DigestCredentials.parse(value)
        except ValueError:
            return Verdict.BAD
        if creds.qop is None:
            # Our challenges carry qop=auth (RFC 2617 §3.2.2: the client must then use it); an
            # RFC 2069 response has no nonce-count, so a captured one could be replayed.
            log.info("auth for %s (user %r): refused: no qop", invite.call_id, creds.username)
            return Verdict.BAD
        verification = self._challenger(trunk).verify(
            invite.method, value, trunk.auth_username, trunk.auth_password, time.time()
        )
        if not verification.ok:
            log.info(
                "auth for %s (user %r): %s", invite.call_id, creds.username, verification.reason
            )
        return verification.verdict

    def _challenger(self, trunk: Trunk) -> DigestChallenger:
        realm = trunk.info.auth_realm or self.config.hostname or "byeline"
        challenger = self._challengers.get(realm)
        if challenger is None:
            challenger = DigestChallenger(realm, self._secret)
            self._challengers[realm] = challenger
        return challenger

    def _contact(self, flow: Flow) -> str:
        host, port = flow.local
        if host in ("0.0.0.0", "::"):
            host = self.config.media_ip
        hostport = format_address((host, port))
        transport = "" if flow.transport == "UDP" else f";transport={flow.transport.lower()}"
        scheme = "sips" if flow.transport == "TLS" else "sip"
        return f"<{scheme}:byeline@{hostport}{transport}>"

    def _answer(self, leg: CallLeg, body: bytes) -> None:
        call = leg.call
        mapped = attrs.headers_from_attributes(leg.trunk, call.attributes, stage="200")
        safe, refusals = attrs.merge_headers(mapped, [])
        for r in refusals:
            log.warning("%s: header %s not sent on 200 OK: %s", call.call_id, r.name, r.reason)
        headers = [
            ("Contact", self._contact(leg.flow)),
            ("Allow", ALLOW),
            ("Supported", "timer"),
            *safe,
        ]
        response = make_response(
            leg.invite,
            200,
            to_tag=leg.local_tag,
            headers=[("Server", self.config.user_agent), *headers],
            body=body,
        )
        response.headers.add("Content-Type", "application/sdp")
        to = self._response_target(leg.invite, leg.flow)
        now = self._now()
        outputs = leg.txn.respond(response, now)
        self._run_server(leg.txn, leg.flow, outputs, call.call_id, to)
        leg.dialog = Dialog.from_invite(leg.invite, leg.local_tag)
        sent = next(out.data for out in outputs if isinstance(out, Transmit))  # serialised once
        leg.retransmitter = AnswerRetransmitter(sent, now, self.config.timers)
        self._schedule(
            leg.retransmitter, leg.retransmitter.deadline, lambda: self._retransmit_answer(leg)
        )
        self._invite_legs.pop(_txn_key(leg.invite), None)
        self.stats["answered"] += 1
        call._set_status(CallState.ACTIVE)
        self._record(leg, {"status": "active", "answered_at": time.time(), "final_code": 200})
        if leg.negotiated is not None:
            self._start_media(leg)

    def _retransmit_answer(self, leg: CallLeg) -> None:
        r = leg.retransmitter
        if r is None:
            return
        for out in r.on_timer(self._now()):
            if isinstance(out, Transmit):
                self._send(
                    leg.flow,
                    out.data,
                    leg.call.call_id,
                    self._response_target(leg.invite, leg.flow),
                )
            elif isinstance(out, AckTimedOut):
                log.warning("%s: no ACK for 200 OK after 64*T1: ending with BYE", leg.call.call_id)
                self._spawn(leg.call.hangup(ended_by=EndedBy.TIMEOUT))
        self._schedule(r, r.deadline, lambda: self._retransmit_answer(leg))

    def _receive_ack(self, ack: Request, flow: Flow, data: bytes) -> None:
        key = _txn_key(ack)
        txn = self._server_txns.get(key)
        # An ACK that matches an INVITE transaction still in Accepted is the ACK for our
        # 2xx (RFC 2543 peers reuse the INVITE's key): it belongs to the dialog, below.
        if (
            txn is not None
            and isinstance(txn, ServerInviteTransaction)
            and txn.state is not State.ACCEPTED
        ):
            self._run_server(txn, flow, txn.receive_request(ack, self._now()), None, None)
            return
        dialog_key = (ack.call_id, ack.to_tag or "")
        leg = self._legs.get(dialog_key)
        if leg is None:
            ended = self._ended.get(dialog_key)
            if ended is not None:
                self._trace_in(ended, flow, data)  # a late ACK of an ended call
            return  # an ACK for nothing we know: absorbed (§17.2.3)
        self._trace_in(leg.call.call_id, flow, data)
        if leg.retransmitter is None or leg.retransmitter.acked:
            return  # a retransmitted ACK
        leg.retransmitter.ack()
        self._schedule(leg.retransmitter, None, _nothing)
        offered = leg.late_offer if not leg.confirmed else leg.reinvite_offer
        leg.reinvite_offer = False
        if offered and leg.media_session is not None:
            # We made the offer in our 2xx (late offer, or an offerless re-INVITE):
            # the ACK carries the answer (RFC 3264 with RFC 3261 §13.2.1).
            try:
                leg.negotiated = leg.media_session.accept_answer(
                    sdp.SessionDescription.parse(ack.body)
                )
            except ValueError as exc:
                log.warning("%s: unusable SDP answer in ACK: %s", leg.call.call_id, exc)
                self._spawn(leg.call.hangup(ended_by=EndedBy.ERROR))
                return
            if not leg.confirmed:
                self._start_media(leg)
            elif leg.call.media is not None:
                leg.call.media.update_remote(
                    leg.negotiated.remote_rtp, on_hold=leg.negotiated.on_hold
                )
        if not leg.confirmed:
            leg.confirmed = True
            self._confirmed(leg)

    def _confirmed(self, leg: CallLeg) -> None:
        call = leg.call
        call.emit("answered")
        if self.agent is not None and leg.agent_task is None and not call.ended:
            leg.agent_task = self._spawn(self._run_agent(leg))

    async def _run_agent(self, leg: CallLeg) -> None:
        assert self.agent is not None
        try:
            await self.agent(leg.call)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: agent failed", leg.call.call_id)
            if not leg.call.ended:
                await leg.call.hangup(ended_by=EndedBy.ERROR)

    # -- media -------------------------------------------------------------------------

    def _start_media(self, leg: CallLeg) -> None:
        neg = leg.negotiated
        if neg is None or leg.rtp_port is None or leg.media_starting:
            return
        leg.media_starting = True
        call = leg.call
        leg.recording = self._open_recording(leg)
        endpoint = RtpEndpoint(
            MediaStream(
                payload_type=neg.payload_type,
                telephone_event_pt=neg.telephone_event_pt,
                remote_address=neg.remote_rtp,
                timeout=self.config.media_timeout,
                srtp=neg.srtp.context() if neg.srtp is not None else None,
            ),
            on_dtmf=lambda d: call.emit("dtmf", d.digit),
            on_media_timeout=lambda: self._media_timeout(leg),
            recorder=leg.recording,
        )
        if self.ports.ready(leg.rtp_port):
            # A parked port: its socket is open, the endpoint starts now (no task, no await).
            endpoint.attach(self.ports, leg.rtp_port)
            self._media_opened(leg, neg, endpoint)
            return
        self._spawn(self._open_media(leg, neg, endpoint, leg.rtp_port))

    async def _open_media(
        self, leg: CallLeg, neg: sdp.Negotiated, endpoint: RtpEndpoint, port: int
    ) -> None:
        if leg.call.ended or leg.rtp_port != port:
            # The call ended before its task ran (a BYE right behind the ACK): the port went
            # back with the call, there is nothing to open.
            return
        try:
            await endpoint.start(self.ports, port=port)
        except OSError as exc:
            log.error("%s: cannot open RTP port %s: %s", leg.call.call_id, port, exc)
            await leg.call.hangup(ended_by=EndedBy.ERROR)
            return
        self._media_opened(leg, neg, endpoint)

    def _media_opened(self, leg: CallLeg, neg: sdp.Negotiated, endpoint: RtpEndpoint) -> None:
        call = leg.call
        if call.ended:
            endpoint.close()
            return
        if neg.on_hold:
            endpoint.update_remote(neg.remote_rtp, on_hold=True)
        if leg.recording is not None and self.config.recording_announcement:
            endpoint.play(self.config.recording_announcement)  # queued ahead of the agent
        call.media = endpoint
        self._expect_first_rtp(leg, endpoint)
        call.emit("media_ready")

    def _expect_first_rtp(self, leg: CallLeg, endpoint: RtpEndpoint) -> None:
        """A caller who never sends one RTP packet times out too.

        The stream's own media timeout counts from the last packet received, so it
        never starts for a peer that sends nothing at all; this timer covers that.
        """
        if self._loop is None:
            return

        def check() -> None:
            leg.first_rtp_timer = None
            if leg.call.ended or leg.call.media is not endpoint or endpoint.stream.media_started:
                return
            if endpoint.stream.on_hold:
                self._expect_first_rtp(leg, endpoint)  # no media is due while held
                return
            self._media_timeout(leg)

        leg.first_rtp_timer = self._loop.call_later(self.config.media_timeout, check)

    def _media_timeout(self, leg: CallLeg) -> None:
        if leg.call.ended:
            return
        log.warning(
            "%s: media timeout (no RTP for %.0f s)", leg.call.call_id, self.config.media_timeout
        )
        leg.call.emit("media_timeout")
        if not leg.call._listeners.get("media_timeout"):
            self._spawn(leg.call.hangup(ended_by=EndedBy.TIMEOUT))

    def _open_recording(self, leg: CallLeg) -> CallRecording | None:
        cfg = self.config
        if cfg.recordings is None:
            return None
        if cfg.record_trunks and not {leg.trunk.id, leg.trunk.name} & set(cfg.record_trunks):
            return None
        try:
            return CallRecording(Path(cfg.recordings) / f"{leg.call.call_id}.wav")
        except OSError as exc:  # a full disk or a bad directory never stops the call
            log.error("%s: recording not started: %s", leg.call.call_id, exc)
            return None

    def _release_media(self, leg: CallLeg) -> None:
        if leg.first_rtp_timer is not None:
            leg.first_rtp_timer.cancel()
            leg.first_rtp_timer = None
        if leg.call.media is not None:
            leg.call.media.close()
        if leg.recording is not None:
            leg.recording.close()
            leg.recording = None
        port = leg.rtp_port
        if port is not None:
            leg.rtp_port = None
            if leg.call.media is None and self.ports.taken(port):
                # The media task holds the port's socket, its transport being made: the
                # endpoint gives the port back when it finds the call over (_media_opened),
                # parked with that transport. Released here, the port would be free while
                # still bound, and its socket closed rather than parked.
                return
            self.ports.release(port)

    # -- CANCEL and in-dialog requests ------------------------------------------------------

    def _receive_cancel(self, cancel: Request, flow: Flow, data: bytes) -> None:
        invite_key = (cancel.branch or "", _sent_by(cancel.top_via), "INVITE")
        leg = self._invite_legs.get(invite_key)
        entry = self._server_txns.get(invite_key)
        if entry is None:
            self.respond(cancel, flow, 481)
            return
        call_id = leg.call.call_id if leg else None
        self._trace_in(call_id, flow, data)
        self.respond(cancel, flow, 200, call_id=call_id)
        if leg is not None and leg.call.state is CallState.RINGING:
            self._reject_leg(leg, 487, [], EndedBy.CALLER)

    def _reject_leg(
        self, leg: CallLeg, status: int, headers: list[tuple[str, str]], ended_by: EndedBy
    ) -> None:
        mapped = attrs.headers_from_attributes(leg.trunk, leg.call.attributes, stage="final")
        safe, _ = attrs.merge_headers(mapped, headers)
        response = make_response(
            leg.invite,
            status,
            to_tag=leg.local_tag,
            headers=[("Server", self.config.user_agent), *safe],
        )
        to = self._response_target(leg.invite, leg.flow)
        try:
            outputs = leg.txn.respond(response, self._now())
        except RuntimeError:
            return
        self._run_server(leg.txn, leg.flow, outputs, leg.call.call_id, to)
        self._end_leg(
            leg, CallResult(ended_by=ended_by, delivery=Delivery.NOT_SENT), final_code=status
        )

    def _receive_in_dialog(self, request: Request, flow: Flow, data: bytes) -> None:
        key = (request.call_id, request.to_tag or "")
        leg = self._legs.get(key)
        if leg is None or leg.dialog is None:
            ended = self._ended.get(key)
            if ended is not None:
                # A request of an ended dialog: a BYE that crossed ours, or came again with a new
                # branch, is answered 200 (the call is over either way); anything else 481.
                self._trace_in(ended, flow, data)
                self.respond(request, flow, 200 if request.method == "BYE" else 481, call_id=ended)
                return
            self.respond(request, flow, 481)
            return
        call = leg.call
        self._trace_in(call.call_id, flow, data)
        if not leg.dialog.check_remote_cseq(request):
            self.respond(
                request,
                flow,
                500,
                "CSeq out of order",
                call_id=call.call_id,
                headers=[("Retry-After", "1")],
            )
            return
        method = request.method
        if method == "BYE":
            self.respond(request, flow, 200, call_id=call.call_id)
            if not call.ended:
                log.info("%s: caller hung up", call.call_id)
                call.emit("caller_hangup")
                self._end_leg(leg, CallResult(ended_by=EndedBy.CALLER, delivery=Delivery.NOT_SENT))
        elif method in ("INVITE", "UPDATE"):
            self._receive_reoffer(leg, request, flow)
        elif method == "INFO":
            ctype = (request.headers.get("Content-Type") or "").lower()
            if ctype.startswith("application/dtmf-relay") or ctype.startswith("application/dtmf"):
                digit = parse_dtmf_relay(request.body)
                self.respond(request, flow, 200, call_id=call.call_id)
                if digit:
                    call.emit("dtmf", digit)
            else:
                self.respond(request, flow, 200, call_id=call.call_id)
        elif method == "OPTIONS":
            self.respond(request, flow, 200, call_id=call.call_id, headers=[("Allow", ALLOW)])
        elif method in KNOWN_METHODS:
            self.respond(request, flow, 405, call_id=call.call_id, headers=[("Allow", ALLOW)])
        else:
            self.respond(request, flow, 501, call_id=call.call_id, headers=[("Allow", ALLOW)])

    def _receive_reoffer(self, leg: CallLeg, request: Request, flow: Flow) -> None:
        """re-INVITE or UPDATE: session refresh, hold and resume (RFC 3264 §8)."""
        call = leg.call
        if call.ended or leg.media_session is None:
            self.respond(request, flow, 481, call_id=call.call_id)
            return
        body = b""
        if request.body:
            try:
                offer = sdp.SessionDescription.parse(request.body)
                negotiated = leg.media_session.answer(offer)
            except ValueError as exc:
                self.respond(
                    request,
                    flow,
                    488,
                    call_id=call.call_id,
                    headers=[("Warning", f'399 byeline "{str(exc)[:80]}"')],
                )
                return
            leg.negotiated = negotiated
            body = negotiated.sdp
            if call.media is not None:
                call.media.update_remote(negotiated.remote_rtp, on_hold=negotiated.on_hold)
                _rekey(call.media.stream, negotiated)
            call.emit("hold" if negotiated.on_hold else "resume")
        elif request.method == "INVITE":
            body = leg.media_session.offer()  # offerless re-INVITE: we offer, ACK answers
        if request.method == "INVITE":
            key = _txn_key(request)
            txn = ServerInviteTransaction(
                request, reliable=flow.reliable, config=self.config.timers
            )
            txn.key = key
            self._server_txns[key] = txn
            response = make_response(
                request,
                200,
                headers=[
                    ("Server", self.config.user_agent),
                    ("Contact", self._contact(flow)),
                    ("Allow", ALLOW),
                ],
                body=body,
            )
            response.headers.add("Content-Type", "application/sdp")
            to = self._response_target(request, flow)
            now = self._now()
            self._run_server(txn, flow, txn.respond(response, now), call.call_id, to)
            # The UAS core retransmits this 2xx until its ACK too (§13.3.1.4).
            if leg.retransmitter is not None:
                self._schedule(leg.retransmitter, None, _nothing)
            leg.retransmitter = AnswerRetransmitter(response.serialize(), now, self.config.timers)
            leg.reinvite_offer = not request.body
            self._schedule(
                leg.retransmitter, leg.retransmitter.deadline, lambda: self._retransmit_answer(leg)
            )
        else:
            self.respond(
                request,
                flow,
                200,
                call_id=call.call_id,
                body=body,
                headers=[("Contact", self._contact(flow))],
            )

    # -- hangup (BYE) ------------------------------------------------------------------

    async def hangup_call(
        self, call: Call, headers: list[tuple[str, str]], ended_by: EndedBy
    ) -> CallResult:
        """Send the BYE that carries the routing result; wait for its final response."""
        leg = self._active.get(call.call_id)
        if leg is None or call.ended:
            return call.result or CallResult(ended_by=ended_by, delivery=Delivery.NOT_SENT)
        if call.state is CallState.RINGING:
            self._reject_leg(leg, 480 if ended_by is not EndedBy.SHUTDOWN else 503, [], ended_by)
            return call.result or CallResult(ended_by=ended_by, delivery=Delivery.NOT_SENT)
        # The attributes are read NOW, after every update the agent made (LiveKit #404).
        mapped = attrs.headers_from_attributes(leg.trunk, call.attributes, stage="bye")
        safe, refused = attrs.merge_headers(mapped, headers)
        refusals = [HeaderRefusal(r.name, r.reason) for r in refused]
        for r in refusals:
            log.warning("%s: header %s refused on BYE: %s", call.call_id, r.name, r.reason)
        call._set_status(CallState.ENDING)
        assert leg.dialog is not None
        flow = await self._bye_flow(leg)
        if call.result is not None:
            return call.result  # ended while a new connection was being opened (shutdown)
        if flow is None:
            # The caller's TCP/TLS connection is gone and its Contact takes no new one: no BYE
            # can carry the headers (the route stays in the record for the API and webhooks).
            result = CallResult(ended_by=ended_by, delivery=Delivery.NOT_SENT, refusals=refusals)
            self._end_leg(leg, result)
            return result
        branch = new_branch()
        via = f"SIP/2.0/{flow.transport} {format_address(flow.local)};branch={branch};rport"
        bye = leg.dialog.create_request(
            "BYE",
            via=via,
            headers=[("User-Agent", self.config.user_agent), *safe],
        )
        txn = ClientTransaction(bye, reliable=flow.reliable, config=self.config.timers)
        future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
        leg.bye_txn, leg.bye_future = txn, future
        self._client_txns[branch] = (txn, flow, leg)
        self._run_client(txn, flow, leg, txn.start(self._now()))
        # Recorded once the BYE is on the wire: the record's enqueue wakes the writer thread,
        # which would otherwise take the GIL between the decision and the BYE.
        leg.recorded_attributes = call.attributes
        self._record(
            leg,
            {
                "delivery": "pending",
                "route": self._route_attributes(call),
                "attributes": leg.recorded_attributes,
                "bye_headers": safe,
                "header_refusals": [{"name": r.name, "reason": r.reason} for r in refusals],
            },
        )
        response = await future
        if response is None:
            delivery, code = Delivery.TIMEOUT, None
        elif 200 <= response.status < 300:
            delivery, code = Delivery.DELIVERED, response.status
        else:
            delivery, code = Delivery.REJECTED, response.status
        result = CallResult(
            ended_by=ended_by, delivery=delivery, code=code, headers=safe, refusals=refusals
        )
        self._end_leg(leg, result)
        return result

    async def _bye_flow(self, leg: CallLeg) -> Flow | None:
        """Where our BYE goes: the first route or the remote target (§12.2.1.1).

        Over TCP/TLS, a connection that has gone (reset, closed by the peer) is replaced by a
        new one to the caller's Contact (§18.1.1); None when that cannot be opened in 64*T1.
        """
        flow = leg.flow
        if flow.reliable:
            if not flow.closed:
                return flow
            target = _uri_address(leg.dialog.remote_target if leg.dialog else "", flow)
            try:
                new_flow = await asyncio.wait_for(
                    self.transports.connect(flow.transport, target), self.config.timers.timeout
                )
            except (OSError, TimeoutError) as exc:
                log.warning(
                    "%s: %s connection from %s gone and %s refuses a new one (%s): BYE not sent",
                    leg.call.call_id,
                    flow.transport,
                    flow.peer,
                    format_address(target),
                    exc or "timeout",
                )
                return None
            log.info(
                "%s: %s connection from %s gone; BYE on a new connection to %s",
                leg.call.call_id,
                flow.transport,
                flow.peer,
                new_flow.peer,
            )
            return new_flow
        assert leg.dialog is not None
        hop = leg.dialog.route_set[0] if leg.dialog.route_set else leg.dialog.remote_target
        target = _uri_address(hop, flow)
        return flow.towards(target)

    def _run_client(
        self, txn: ClientTransaction, flow: Flow, leg: CallLeg, outputs: list[Output]
    ) -> None:
        for out in outputs:
            if isinstance(out, Transmit):
                self._send(flow, out.data, leg.call.call_id)
            elif isinstance(out, Deliver):
                if out.response.status >= 200 and leg.bye_future and not leg.bye_future.done():
                    leg.bye_future.set_result(out.response)
            elif isinstance(out, TimedOut):
                log.warning("%s: no final response to BYE (Timer F)", leg.call.call_id)
                if leg.bye_future and not leg.bye_future.done():
                    leg.bye_future.set_result(None)
            elif isinstance(out, Terminated):
                self._client_txns.pop(_branch_of(txn.request), None)
        self._schedule(
            txn,
            None if txn.terminated else txn.deadline,
            lambda: self._run_client(txn, flow, leg, txn.on_timer(self._now())),
        )

    def _receive_response(self, response: Response, flow: Flow, data: bytes) -> None:
        entry = self._client_txns.get(response.branch or "")
        if entry is None:
            return  # a stray response: dropped (§18.1.2)
        txn, txn_flow, leg = entry
        self._trace_in(leg.call.call_id, flow, data)
        self._run_client(txn, txn_flow, leg, txn.receive_response(response, self._now()))

    # -- end and records ---------------------------------------------------------------

    def _end_leg(self, leg: CallLeg, result: CallResult, final_code: int | None = None) -> None:
        call = leg.call
        if call.result is not None:
            return
        self._active.pop(call.call_id, None)
        if leg.answer_timer is not None:
            leg.answer_timer.cancel()
            leg.answer_timer = None
        if leg.retransmitter is not None:
            leg.retransmitter.ack()
            self._schedule(leg.retransmitter, None, _nothing)
        self._release_media(leg)
        call._finish(result)
        fields: dict[str, Any] = {
            "status": "ended",
            "ended_at": time.time(),
            "ended_by": str(result.ended_by),  # a StrEnum's str() is its value
            "delivery": str(result.delivery),
            "delivery_code": result.code,
            "route": self._route_attributes(call),
        }
        attributes_now = call.attributes
        if attributes_now != leg.recorded_attributes:
            # Written only when changed: encoding 20-odd attributes again costs 2 % of a call.
            fields["attributes"] = attributes_now
        if final_code is not None:
            fields["final_code"] = final_code
        if result.headers:
            fields["bye_headers"] = result.headers
        if result.refusals:
            fields["header_refusals"] = [
                {"name": r.name, "reason": r.reason} for r in result.refusals
            ]
        self._record(leg, fields)
        log.info(
            "%s: ended by %s, delivery %s%s",
            call.call_id,
            result.ended_by,
            result.delivery,
            f" ({result.code})" if result.code else "",
        )
        # The dialog is remembered briefly for late requests (a retransmitted ACK, a BYE that
        # crossed ours), by its key and our call id only.
        key = leg.key
        if self._legs.get(key) is leg:
            del self._legs[key]
            self._ended[key] = call.call_id
            self._linger(key, 64 * self.config.timers.t1 if not leg.flow.reliable else 1.0)

    def _linger(self, key: tuple[str, str], delay: float) -> None:
        """Forget the ended dialog ``key`` about ``delay`` seconds from now."""
        self._to_sweep(self._lingering, delay, self._now() + delay, key)

    def _to_sweep(
        self, queues: dict[float, deque[tuple[float, Any]]], delay: float, due: float, key: Any
    ) -> None:
        """Put ``key`` on the sweep at ``due``, in the queue of the things that wait ``delay``
        (each queue stays in due order), and arm the sweep timer if it is not."""
        queue = queues.get(delay)
        if queue is None:
            queue = queues[delay] = deque()
        queue.append((due, key))
        if self._sweeper is None and self._loop is not None:
            self._sweeper = self._loop.call_at(due, self._sweep)

    def _sweep(self) -> None:
        """Drop the ended dialogs whose time is up and end the transactions whose Timer J or L is
        due; come back for the next one, at most 10 times a second."""
        self._sweeper = None
        now = self._now()
        next_due: float | None = None
        for queue in self._lingering.values():
            while queue and queue[0][0] <= now:
                self._ended.pop(queue.popleft()[1], None)
            if queue and (next_due is None or queue[0][0] < next_due):
                next_due = queue[0][0]
        for waiting in self._waiting.values():
            while waiting and waiting[0][0] <= now:
                key = waiting.popleft()[1]
                txn = self._server_txns.get(key)
                # Its timer (J or L) ends it: Terminated, nothing sent. A newer transaction
                # under the same key, not due yet, is left to its own place in the queue.
                if txn is not None and txn.context is _WAITING and txn.on_timer(now):
                    self._server_txns.pop(key, None)
            if waiting and (next_due is None or waiting[0][0] < next_due):
                next_due = waiting[0][0]
        if next_due is not None and self._loop is not None:
            self._sweeper = self._loop.call_at(max(next_due, now + _SWEEP_GRANULARITY), self._sweep)

    def _record_start(self, leg: CallLeg, flow: Flow, data: bytes) -> None:
        if self.store is None:
            return
        attrs_now = leg.call.attributes
        self.store.call_started(
            leg.call.call_id,
            sip_call_id=leg.invite.call_id,
            trunk_id=leg.trunk.id,
            rule_id=leg.rule.id if leg.rule else None,
            caller=leg.call.caller,
            callee=leg.call.callee,
            five9_call_id=_first_header(leg.invite, ("X-CallID", "X-five9callid")),
            five9_session_id=_first_header(leg.invite, ("X-CallSessionID", "X-five9sessionid")),
            transport=flow.transport,
            remote=flow.peer,
            started_at=leg.started_at,
            status="ringing",
            attributes=attrs_now,
        )
        leg.recorded_attributes = attrs_now
        self._trace_in(leg.call.call_id, flow, data)

    def _route_attributes(self, call: Call) -> dict[str, str]:
        """The routing result attributes as they are on the call now."""
        current = call.attributes
        return {k: current[k] for k in self.result_attributes if current.get(k)}

    def _record(self, leg: CallLeg, fields: dict[str, Any]) -> None:
        # A record that cannot be written is logged; it never stops a call or its BYE.
        if self.store is not None:
            try:
                self.store.call_updated_from(leg.call.call_id, fields)
            except Exception:
                log.exception("%s: call record update failed", leg.call.call_id)

    # -- runtime trunks and dispatch rules (LiveKit's SIP API) -----------------------------

    def replace_routing(self, trunks: TrunkSet, dispatch: DispatchRuleSet | None) -> None:
        """Match new INVITEs against ``trunks`` and ``dispatch`` from now on.

        Built by the caller (the constructors refuse conflicts as LiveKit does), swapped in
        one step on the loop, so an INVITE sees either the old set or the new one. Calls in
        progress keep the trunk and rule they were admitted with: their BYE still maps
        headers through that trunk even if it has since been deleted.
        """
        self.trunks = trunks
        self.dispatch = dispatch


# -- small pure helpers ---------------------------------------------------------------


def _nothing() -> None:
    """The callback of a cancelled deadline (never called)."""


def _txn_key(request: Request) -> tuple[str, str, str]:
    """RFC 3261 §17.2.3 matching key: branch, sent-by, method (ACK matches INVITE).

    Kept in the message's memo: a request's key is asked for three times or more (its
    transaction, its leg, its answer), and replacing the Via line forgets it.
    """
    memo = request.headers.memo
    known = memo.get("txn_key")
    if known is not None:
        return cast(tuple[str, str, str], known)
    method = "INVITE" if request.method == "ACK" else request.method
    branch = request.branch or ""
    if not branch.startswith("z9hG4bK"):
        # RFC 2543 peers: fall back to the dialog-ish identity of the request.
        branch = f"{request.call_id}|{request.from_tag}|{request.cseq[0]}|{branch}"
    key = (branch, _sent_by(request.top_via), method)
    memo["txn_key"] = key
    return key


def _branch_of(request: Request) -> str:
    return request.branch or ""


_SENT_PROTOCOL: Final = re.compile(r"\s*[^/\s]+\s*/\s*[^/\s]+\s*/\s*\S+\s+(.*)$", re.DOTALL)
_SENT_PROTOCOLS: Final = frozenset(
    f"SIP/2.0/{t}" for t in ("UDP", "TCP", "TLS", "SCTP", "WS", "WSS")
)


def _rekey(stream: MediaStream, negotiated: sdp.Negotiated) -> None:
    """SRTP after a re-offer: new keys, or plain RTP again (under the ALLOW policy)."""
    if negotiated.srtp is None:
        stream.srtp = None
    elif stream.srtp is None:
        stream.srtp = negotiated.srtp.context()
    else:
        stream.srtp.update(negotiated.srtp)


def _redacted(data: bytes) -> bytes:
    """A message for the trace: SRTP keys (SDES ``a=crypto`` inline keys) never stored."""
    return sdp.redact_keys(data) if b"a=crypto:" in data else data


def _accepts_sdp(accept: str) -> bool:
    """Whether an Accept header value admits application/sdp."""
    for item in accept.split(","):
        media = item.split(";", 1)[0].strip().lower()
        if media in ("application/sdp", "application/*", "*/*"):
            return True
    return False


def _sent_by(via: str) -> str:
    """``host:port`` of a Via, with RFC 3261's optional spaces (``SIP / 2.0 / UDP h``)."""
    head = via.split(";", 1)[0]
    protocol, space, rest = head.partition(" ")
    if space and protocol in _SENT_PROTOCOLS:
        # The usual spelling, without the regex: what follows the protocol, blanks removed.
        return "".join(rest.split()).lower()
    return _sent_by_grammar(head)


def _sent_by_grammar(via: str) -> str:
    """``_sent_by`` by the grammar alone, for any spelling of the sent-protocol."""
    m = _SENT_PROTOCOL.match(via.split(";", 1)[0])
    return "".join(m.group(1).split()).lower() if m else ""


def via_with_received(top: str, host: str, port: int) -> str | None:
    """The top Via entry ``top`` with RFC 3261 §18.2.1 ``received`` and RFC 3581 ``rport``
    from the packet's source (``host``, ``port``), or None when it needs no change.

    What :func:`_via_with_received_split` gives, without splitting the parameters in the two
    usual cases: no ``rport`` or ``received`` at all, and one bare ``;rport`` (Five9's, SIPp's).
    """
    params_text = top.partition(";")[2].lower()
    if "received" not in params_text:
        if "rport" not in params_text:
            # ``received`` only when the host differs.
            return None if _via_host(top) == host else f"{top};received={host}"
        if params_text.count("rport") == 1:
            if top.endswith(";rport"):
                return f"{top}={port};received={host}"
            if ";rport;" in top:
                return f"{top.replace(';rport;', f';rport={port};', 1)};received={host}"
    return _via_with_received_split(top, host, port)


def _via_with_received_split(top: str, host: str, port: int) -> str | None:
    """:func:`via_with_received` by its parameters, for any Via.

    A ``received`` or ``rport`` value the peer wrote itself is removed first: the packet's
    source address is the only truth, or anyone could have our responses (and retransmitted
    200s) reflected to a victim address.
    """
    head, *params = top.split(";")
    cleaned = []
    wants_rport = False
    for p in params:
        name = p.split("=", 1)[0].strip().lower()
        if name == "received":
            continue  # the peer's own claim: never trusted
        if name == "rport":
            wants_rport = True
            p = f"rport={port}"  # filled in place (RFC 3581 §4)
        cleaned.append(p)
    new_top = ";".join([head, *cleaned])
    if _via_host(top) != host or wants_rport:
        new_top += f";received={host}"
    return None if new_top == top else new_top


def _via_host(via: str) -> str:
    sent_by = _sent_by(via)
    if sent_by.startswith("["):
        return sent_by[1 : sent_by.find("]")]
    return sent_by.rsplit(":", 1)[0] if sent_by.count(":") == 1 else sent_by


def _via_target(request: Request, flow: Flow) -> Address:
    via = request.top_via
    received = _param(via, "received")
    host = received or _via_host(via)
    sent_by = _sent_by(via)
    port = 5060
    tail = sent_by.rsplit("]", 1)[-1] if sent_by.startswith("[") else sent_by
    if ":" in tail and tail.count(":") == 1:
        # try/except, not contextlib.suppress: compiled, it makes no Python-level call.
        try:  # noqa: SIM105
            port = int(tail.rsplit(":", 1)[1])
        except ValueError:
            pass
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return flow.remote  # a name we would have to resolve: answer the source
    return (host, port)


def _param(value: str, name: str) -> str | None:
    for part in value.split(";")[1:]:
        k, _, v = part.partition("=")
        if k.strip().lower() == name:
            return v.strip()
    return None


def _uri_address(uri: str, flow: Flow) -> Address:
    text = name_addr_uri(uri.strip())
    try:
        parsed = parse_uri(text)
    except ValueError:
        return flow.remote
    host = parsed.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return flow.remote  # a name: the peer we talk to is the best guess without DNS
    return (host, parsed.port or (5061 if parsed.scheme == "sips" else 5060))


def _address_uri(value: str) -> URI:
    """The URI of a From/To value (ValueError if it does not parse).

    A name-addr is parsed without the header parameters after ``>``: they do not change the URI,
    and without the tag (new on every call) the parse is a cache hit for every call of a trunk.
    """
    gt = value.rfind(">")
    if gt >= 0:
        try:
            return parse_address(value[: gt + 1]).uri
        except ValueError:
            pass
    # No name-addr, or a ">" inside a quoted parameter value: the whole value, as sent.
    return parse_address(value).uri


# sipmessage's user part of a SIP URI, less "%" (an escape would need unquoting).
_PLAIN_USER_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-_.!~*/'()&=+$,;?")


def _address_user_host(value: str) -> tuple[str | None, str]:
    """The user and host of a From/To value's URI (ValueError if it does not parse).

    The caller's number (From's user) is new on every call, so its parse would never be a cache
    hit: when the user part is plain, it is checked here character by character and swapped for
    a fixed one, and the rest of the name-addr (the same on every call of a trunk) goes to the
    cached parse. Anything else, or anything that does not parse that way, takes the full parse.
    """
    gt = value.rfind(">")
    lt = value.rfind("<", 0, gt) if gt >= 0 else -1
    if lt >= 0:
        colon = value.find(":", lt + 1, gt)
        at = value.find("@", lt + 1, gt)
        scheme = value[lt + 1 : colon] if colon >= 0 else ""
        if (scheme == "sip" or scheme == "sips") and at > colon + 1:
            user = value[colon + 1 : at]
            if all(c in _PLAIN_USER_CHARS for c in user):
                try:
                    canonical = f"{value[: colon + 1]}u{value[at : gt + 1]}"
                    return user, parse_address(canonical).uri.host
                except ValueError:
                    pass
    uri = _address_uri(value)
    return uri.user, uri.host


def _from_user(request: Request) -> str | None:
    try:
        return _address_user_host(request.headers.get("From") or "")[0]
    except ValueError:
        return None


def _from_host(request: Request) -> str:
    try:
        return _address_user_host(request.headers.get("From") or "")[1]
    except ValueError:
        return ""


def _to_user(request: Request) -> str | None:
    try:
        return _address_uri(request.headers.get("To") or "").user
    except ValueError:
        return None


def _first_header(request: Request, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = request.headers.get(name)
        if value:
            return value
    return None


def _reason_for(exc: SipParseError) -> str:
    return "Version Not Supported" if exc.status == 505 else "Bad Request"
