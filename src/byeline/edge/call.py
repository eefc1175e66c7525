"""The ``Call``: one Five9 call as the agent sees it.

A call is a LiveKit-style SIP participant: it has attributes (read from the
INVITE's headers, written by the agent), events, and ``hangup()``.  The agent
code touches nothing else, so the same agent runs on the embedded edge and on
LiveKit.

Attribute semantics follow LiveKit: setting a key to ``""`` deletes it; at BYE
time the CURRENT attributes are mapped through the trunk's
``attributes_to_headers``.  byeline applies every attribute update before the
BYE is built, always (LiveKit issue #404 lost headers there).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from byeline.sip.entropy import random_bytes

if TYPE_CHECKING:
    from ..net.rtp import RtpEndpoint

log = logging.getLogger("byeline.call")


class CallState(enum.Enum):
    """Where a call is in its life (mirrors LiveKit's ``sip.callStatus``)."""

    RINGING = "ringing"
    ACTIVE = "active"
    ENDING = "ending"
    ENDED = "hangup"


def _call_status(state: CallState) -> str:
    """``sip.callStatus`` of ``state`` (LiveKit has no "ending": the call is still active).

    Compared by identity: an Enum member as a dict key hashes in Python (``Enum.__hash__``).
    """
    if state is CallState.ACTIVE or state is CallState.ENDING:
        return "active"
    if state is CallState.RINGING:
        return "ringing"
    return "hangup"


class Delivery(enum.StrEnum):
    """What became of the routing headers on the BYE."""

    PENDING = "pending"
    DELIVERED = "delivered"  # a 2xx to our BYE
    REJECTED = "rejected"  # a non-2xx final response to our BYE
    TIMEOUT = "timeout"  # no final response before Timer F
    NOT_SENT = "not_sent"  # the caller hung up first: no BYE of ours could carry them


class EndedBy(enum.StrEnum):
    """Who or what ended the call."""

    AGENT = "agent"
    CALLER = "caller"
    TIMEOUT = "timeout"
    ERROR = "error"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class HeaderRefusal:
    """A header that was not sent, and why."""

    name: str
    reason: str

    # Written out so that mypyc compiles it (the one @dataclass generates runs interpreted).
    def __init__(self, name: str, reason: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "reason", reason)


@dataclass
class CallResult:
    """How a call ended and what reached Five9."""

    ended_by: EndedBy
    delivery: Delivery
    code: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    refusals: list[HeaderRefusal] = field(default_factory=list)

    def __init__(
        self,
        ended_by: EndedBy,
        delivery: Delivery,
        code: int | None = None,
        headers: list[tuple[str, str]] | None = None,
        refusals: list[HeaderRefusal] | None = None,
    ) -> None:
        self.ended_by = ended_by
        self.delivery = delivery
        self.code = code
        self.headers = [] if headers is None else headers
        self.refusals = [] if refusals is None else refusals


class CallController(Protocol):
    """The edge side of a call (what ``hangup`` asks of the SIP edge)."""

    async def hangup_call(
        self, call: Call, headers: list[tuple[str, str]], ended_by: EndedBy
    ) -> CallResult: ...


#: Digits of a call id in ASCII order, so that ids compare as the numbers they spell.
_ID_DIGITS: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: Every two-digit pair, in order: the time part is four look-ups, not eight divisions.
_ID_PAIRS: Final = tuple(a + b for a in _ID_DIGITS for b in _ID_DIGITS)
#: A random byte to its digit (``byte % 62``), for ``bytes.translate``.
_ID_BYTE_DIGITS: Final = bytes(ord(_ID_DIGITS[b % 62]) for b in range(256))


def new_call_id(now: float | None = None) -> str:
    """Our call id: LiveKit's ``SCL_`` and 16 letters and digits (LiveKit's own ids have 12).

    The first 8 spell the wall-clock millisecond in base 62 (good until the year 8900), the last
    8 are random (62**8, 47 bits, for the calls of one millisecond). Ids made later sort after,
    so the call records' indexes on the id (``calls`` and ``sip_messages``) grow at their right
    edge: a commit dirties a few pages there instead of one page per call scattered over the
    whole B-tree (30 % less CPU per call on the SQLite record path, ``bench/store_cost.py``).
    12 characters could not hold both the time and enough randomness to rule out two calls with
    one id (which the store would merge into one row).
    """
    ms = int((time.time() if now is None else now) * 1000) % 62**8
    pairs = _ID_PAIRS
    ms, d = divmod(ms, 3844)
    ms, c = divmod(ms, 3844)
    a, b = divmod(ms, 3844)
    # 256 % 62 favours the first 8 digits a little (5 in 256 against 4): harmless here.
    tail = random_bytes(8).translate(_ID_BYTE_DIGITS).decode("ascii")
    return f"SCL_{pairs[a]}{pairs[b]}{pairs[c]}{pairs[d]}{tail}"


Listener = Callable[..., Any]


class Call:
    """One call: attributes, events, media and ``hangup()``."""

    def __init__(
        self,
        *,
        call_id: str,
        identity: str,
        attributes: Mapping[str, str],
        controller: CallController,
        caller: str = "",
        callee: str = "",
    ) -> None:
        self.call_id = call_id
        self.identity = identity
        self.caller = caller
        self.callee = callee
        self._attributes: dict[str, str] = dict(attributes)
        self._controller = controller
        self._listeners: dict[str, list[Listener]] = {}
        self._early_keys: list[str] = []
        self.state = CallState.RINGING
        self.agent_name: str | None = None  # the dispatch rule's room_config.agents[0]
        self.media: RtpEndpoint | None = None
        self.result: CallResult | None = None
        self._ended: asyncio.Future[CallResult] | None = None
        self._hangup_task: asyncio.Task[CallResult] | None = None

    # -- attributes ------------------------------------------------------------------

    @property
    def attributes(self) -> dict[str, str]:
        """A copy of the current attributes."""
        return dict(self._attributes)

    def update_attributes(self, changes: Mapping[str, str]) -> None:
        """Set attributes; a value of ``""`` deletes the key (LiveKit semantics)."""
        for key, value in changes.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("attribute keys and values must be str")
            if value == "":
                self._attributes.pop(key, None)
            else:
                self._attributes[key] = value
        self.emit("attributes_changed", dict(changes))

    def _set_status(self, state: CallState) -> None:
        self.state = state
        self._attributes["sip.callStatus"] = _call_status(state)

    # -- events ----------------------------------------------------------------------

    def on(self, event: str, listener: Listener) -> None:
        """Register a listener: answered, dtmf, caller_hangup, media_timeout, ended...

        Keys pressed before anyone listened for ``dtmf`` are kept and given to the first
        ``dtmf`` listener, in order: under load the caller's first key can arrive (on the
        RTP socket) before the agent has started (on the ACK, from the SIP socket).
        """
        self._listeners.setdefault(event, []).append(listener)
        if event == "dtmf" and self._early_keys:
            keys, self._early_keys = self._early_keys, []
            for digit in keys:
                self.emit("dtmf", digit)

    def off(self, event: str, listener: Listener) -> None:
        """Remove a listener."""
        if listener in self._listeners.get(event, []):
            self._listeners[event].remove(listener)

    def emit(self, event: str, *args: Any) -> None:
        """Call the listeners of ``event``; a failing listener is logged, never raised."""
        if event == "dtmf" and not self._listeners.get("dtmf") and len(self._early_keys) < 32:
            self._early_keys.extend(str(a) for a in args)
            return
        for listener in list(self._listeners.get(event, ())):
            try:
                listener(*args)
            except Exception:
                log.exception("%s: listener for %s failed", self.call_id, event)

    # -- end of call -----------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """True once the call is over."""
        return self.state is CallState.ENDED

    async def wait_ended(self) -> CallResult:
        """Wait until the call is over and return how it ended."""
        if self.result is not None:
            return self.result
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._ended)

    def _finish(self, result: CallResult) -> None:
        if self.result is not None:
            return
        self.result = result
        self._set_status(CallState.ENDED)
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(result)
        self.emit("ended", result)

    async def hangup(
        self,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
        *,
        ended_by: EndedBy = EndedBy.AGENT,
    ) -> CallResult:
        """End the call with a BYE whose headers carry the current attributes.

        The BYE's headers are the trunk's ``attributes_to_headers`` applied to the
        attributes as they are NOW, then ``headers`` (explicit wins on a duplicate
        name).  A header that fails validation is refused and recorded; the call
        still ends.  If the caller already hung up, nothing is raised: the result
        says ``not_sent``.  Calling it again returns the same result.
        """
        if self.result is not None:
            return self.result
        if self._hangup_task is None:
            explicit = (
                list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
            )
            self._hangup_task = asyncio.ensure_future(
                self._controller.hangup_call(self, explicit, ended_by)
            )
        return await asyncio.shield(self._hangup_task)

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.state.value} {self.caller}->{self.callee}>"
