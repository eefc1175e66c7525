"""RFC 3261 §17 transactions, sans-I/O.

Rules (read this before the code):

* A transaction never touches a socket or a clock.  Every method takes ``now``
  (seconds, any monotonic origin) and returns a list of outputs for the caller
  to act on: :class:`Transmit` (put these bytes on the wire towards the
  transaction's peer), :class:`Deliver` (a response for the transaction user),
  :class:`TimedOut` (Timer B/F fired) and :class:`Terminated`.
* ``deadline`` is the earliest pending timer, or ``None``.  The caller calls
  :meth:`on_timer` at or after it.  Firing early is harmless: nothing is due.
* Over a reliable transport (TCP, TLS) retransmission timers are not armed and
  the wait timers (D, I, J, K) are zero, as §17 specifies.
* The INVITE server transaction follows RFC 6026: a 2xx moves it to Accepted,
  where retransmitted INVITEs are absorbed and the 2xx itself is retransmitted
  by the UAS core (:class:`byeline.sip.dialog.AnswerRetransmitter`), not here.

State tables (state, event -> state, outputs):

    INVITE server   Proceeding  1xx sent        -> Proceeding
                    Proceeding  2xx sent        -> Accepted    (L = 64*T1)
                    Proceeding  300-699 sent    -> Completed   (G = T1 unreliable, H = 64*T1)
                    Proceeding  INVITE again    -> Proceeding  resend last 1xx
                    Completed   INVITE again    -> Completed   resend final
                    Completed   G fires         -> Completed   resend final, G = min(2G, T2)
                    Completed   ACK             -> Confirmed   (I = T4 unreliable, 0 reliable)
                    Completed   H fires         -> Terminated  TimedOut
                    Confirmed   I fires         -> Terminated
                    Accepted    L fires         -> Terminated
    non-INVITE srv  Trying      request again   -> Trying      (absorbed)
                    Trying      1xx sent        -> Proceeding
                    Trying/Proc final sent      -> Completed   (J = 64*T1 unreliable, 0 reliable)
                    Proc/Compl  request again   -> same        resend last response
                    Completed   J fires         -> Terminated
    non-INVITE cli  Trying      E fires         -> Trying      resend, E = min(2E, T2)
                    Trying/Proc 1xx             -> Proceeding  Deliver
                    Trying/Proc final           -> Completed   Deliver (K = T4 unreliable, 0)
                    Proceeding  E fires         -> Proceeding  resend, E = T2
                    any         F fires         -> Terminated  TimedOut
                    Completed   K fires         -> Terminated
    INVITE client   Calling     A fires         -> Calling     resend, A = 2A
                    Calling     B fires         -> Terminated  TimedOut
                    Calling/Pr  1xx             -> Proceeding  Deliver
                    Calling/Pr  2xx             -> Accepted    Deliver (M = 64*T1)
                    Accepted    2xx again       -> Accepted    Deliver (the TU re-ACKs)
                    Calling/Pr  300-699         -> Completed   ACK sent, Deliver (D = 32 s or 0)
                    Completed   300-699 again   -> Completed   ACK resent
                    Completed/Accepted D/M      -> Terminated
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .message import Headers, Request, Response


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 timer base values (seconds)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L, M."""
        return 64 * self.t1


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``data`` to the transaction's peer."""

    data: bytes
    retransmission: bool = False

    # Written out so that mypyc compiles it (the generated one runs interpreted).
    def __init__(self, data: bytes, retransmission: bool = False) -> None:
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "retransmission", retransmission)


@dataclass(frozen=True, slots=True)
class Deliver:
    """A response for the transaction user."""

    response: Response

    def __init__(self, response: Response) -> None:
        object.__setattr__(self, "response", response)


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B, F or H fired: the peer never answered."""

    def __init__(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is over; forget it."""

    def __init__(self) -> None:
        pass


Output = Transmit | Deliver | TimedOut | Terminated


class State(enum.Enum):
    """Transaction states of RFC 3261 §17 and RFC 6026."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def _take_due(timers: dict[str, float], now: float) -> list[str]:
    """The names of the timers due at ``now``, earliest first, taken out of ``timers``.

    A transaction's timers are a plain dict of name to deadline, not an object: a dict of str to
    float is one the cyclic GC does not track, and an ended call's transactions linger 64*T1.
    """
    fired = sorted((at, name) for name, at in timers.items() if at <= now)
    for _, name in fired:
        del timers[name]
    return [name for _, name in fired]


class Transaction:
    """What every transaction has: a state, timers, and the user's key and context for it.

    ``key`` and ``context`` are the transaction user's (its entry in a table of transactions,
    where its messages go): the transaction never reads them. The request is kept by each kind
    as it needs it.
    """

    __slots__ = ("_timers", "config", "context", "key", "reliable", "state")

    def __init__(self, *, reliable: bool, config: TimerConfig) -> None:
        self.key: object = None
        self.context: object = None
        self.reliable = reliable
        self.config = config
        self.state = State.TRYING
        self._timers: dict[str, float] = {}

    @property
    def deadline(self) -> float | None:
        """The earliest pending timer, or None."""
        timers = self._timers
        return min(timers.values()) if timers else None

    @property
    def terminated(self) -> bool:
        """True once the transaction is over."""
        return self.state is State.TERMINATED

    @property
    def waiting(self) -> bool:
        """True while the transaction only waits out its last timer (J, L): that timer ends it
        and sends nothing, so it may fire late, and only a retransmitted request can make the
        transaction send again (the reply goes to where that request came from)."""
        return False

    def _terminate(self) -> list[Output]:
        self.state = State.TERMINATED
        self._timers.clear()
        return [Terminated()]

    def on_timer(self, now: float) -> list[Output]:
        """Fire every timer due at ``now``."""
        out: list[Output] = []
        for name in _take_due(self._timers, now):
            if self.state is State.TERMINATED:
                break
            out.extend(self._fire(name, now))
        return out

    def _fire(self, name: str, now: float) -> list[Output]:
        raise NotImplementedError


# --------------------------------------------------------------------------- server


class ServerInviteTransaction(Transaction):
    """The INVITE server transaction (§17.2.1, RFC 6026).

    ``request`` is the INVITE until the final response is sent, then None: what is left to do
    (absorb or answer retransmissions, wait for the ACK) needs the response's bytes only, and a
    transaction that waits 64*T1 in Accepted or Completed holds no parsed message meanwhile.
    """

    __slots__ = ("_g_interval", "_last", "request")

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig = TimerConfig(),
    ) -> None:
        super().__init__(reliable=reliable, config=config)
        self.request: Request | None = request
        self.state = State.PROCEEDING
        self._last: bytes | None = None
        self._g_interval = config.t1

    def respond(self, response: Response, now: float) -> list[Output]:
        """The transaction user sends ``response``."""
        if self.state is not State.PROCEEDING:
            raise RuntimeError(f"cannot respond in state {self.state.value}")
        data = response.serialize()
        self._last = data
        out: list[Output] = [Transmit(data)]
        if response.status < 200:
            return out
        self.request = None
        if response.status < 300:
            self.state = State.ACCEPTED
            self._timers["L"] = now + self.config.timeout
            return out
        self.state = State.COMPLETED
        if not self.reliable:
            self._timers["G"] = now + self._g_interval
        self._timers["H"] = now + self.config.timeout
        return out

    @property
    def waiting(self) -> bool:
        """Accepted (RFC 6026): Timer L only; see :attr:`Transaction.waiting`."""
        return self.state is State.ACCEPTED

    def receive_request(self, request: Request, now: float) -> list[Output]:
        """A retransmitted INVITE, or the ACK for a non-2xx final response."""
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._timers.pop("G", None)
                self._timers.pop("H", None)
                if self.reliable:
                    return self._terminate()
                self._timers["I"] = now + self.config.t4
            return []
        if self.state in (State.PROCEEDING, State.COMPLETED) and self._last is not None:
            return [Transmit(self._last, retransmission=True)]
        return []

    def _fire(self, name: str, now: float) -> list[Output]:
        # G and H are armed only in Completed (with a final sent) and cancelled on
        # the ACK; I only in Confirmed, L only in Accepted.
        if name == "G":
            assert self._last is not None
            self._g_interval = min(2 * self._g_interval, self.config.t2)
            self._timers["G"] = now + self._g_interval
            return [Transmit(self._last, retransmission=True)]
        if name == "H":
            return [TimedOut(), *self._terminate()]
        return self._terminate()  # I or L


class ServerTransaction(Transaction):
    """The non-INVITE server transaction (§17.2.2).

    ``request`` is None once the final response is sent (see :class:`ServerInviteTransaction`).
    """

    __slots__ = ("_last", "request")

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig = TimerConfig(),
    ) -> None:
        super().__init__(reliable=reliable, config=config)
        self.request: Request | None = request
        self._last: bytes | None = None

    def respond(self, response: Response, now: float) -> list[Output]:
        """The transaction user sends ``response``."""
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise RuntimeError(f"cannot respond in state {self.state.value}")
        data = response.serialize()
        self._last = data
        if response.status < 200:
            self.state = State.PROCEEDING
            return [Transmit(data)]
        self.state = State.COMPLETED
        self.request = None
        if self.reliable:
            return [Transmit(data), *self._terminate()]
        self._timers["J"] = now + self.config.timeout
        return [Transmit(data)]

    @property
    def waiting(self) -> bool:
        """Completed: Timer J only; see :attr:`Transaction.waiting`."""
        return self.state is State.COMPLETED

    def receive_request(self, request: Request, now: float) -> list[Output]:
        """A retransmission of the request."""
        if self.state in (State.PROCEEDING, State.COMPLETED) and self._last is not None:
            return [Transmit(self._last, retransmission=True)]
        return []

    def _fire(self, name: str, now: float) -> list[Output]:
        return self._terminate()  # J, the only timer


# --------------------------------------------------------------------------- client


class ClientTransaction(Transaction):
    """The non-INVITE client transaction (§17.1.2): BYE, INFO, OPTIONS..."""

    __slots__ = ("_data", "_e_interval", "request")

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig = TimerConfig(),
    ) -> None:
        super().__init__(reliable=reliable, config=config)
        self.request = request
        self._data = request.serialize()
        self._e_interval = config.t1

    def start(self, now: float) -> list[Output]:
        """Send the request and arm Timers E and F."""
        if not self.reliable:
            self._timers["E"] = now + self._e_interval
        self._timers["F"] = now + self.config.timeout
        return [Transmit(self._data)]

    def receive_response(self, response: Response, now: float) -> list[Output]:
        """A response arrived for this transaction."""
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []  # retransmitted final: absorbed in Completed
        if response.status < 200:
            self.state = State.PROCEEDING
            return [Deliver(response)]
        self.state = State.COMPLETED
        self._timers.pop("E", None)
        self._timers.pop("F", None)
        if self.reliable:
            return [Deliver(response), *self._terminate()]
        self._timers["K"] = now + self.config.t4
        return [Deliver(response)]

    def _fire(self, name: str, now: float) -> list[Output]:
        # E and F live in Trying and Proceeding (cancelled by a final); K in Completed.
        if name == "E":
            if self.state is State.PROCEEDING:
                self._e_interval = self.config.t2
            else:
                self._e_interval = min(2 * self._e_interval, self.config.t2)
            self._timers["E"] = now + self._e_interval
            return [Transmit(self._data, retransmission=True)]
        if name == "F":
            return [TimedOut(), *self._terminate()]
        return self._terminate()  # K


class ClientInviteTransaction(Transaction):
    """The INVITE client transaction (§17.1.1, RFC 6026)."""

    __slots__ = ("_a_interval", "_ack", "_data", "request")

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig = TimerConfig(),
    ) -> None:
        super().__init__(reliable=reliable, config=config)
        self.request = request
        self.state = State.CALLING
        self._data = request.serialize()
        self._a_interval = config.t1
        self._ack: bytes | None = None

    def start(self, now: float) -> list[Output]:
        """Send the INVITE and arm Timers A and B."""
        if not self.reliable:
            self._timers["A"] = now + self._a_interval
        self._timers["B"] = now + self.config.timeout
        return [Transmit(self._data)]

    def receive_response(self, response: Response, now: float) -> list[Output]:
        """A response arrived for this transaction."""
        if self.state in (State.CALLING, State.PROCEEDING):
            self._timers.pop("A", None)
            if response.status < 200:
                self.state = State.PROCEEDING
                self._timers.pop("B", None)
                return [Deliver(response)]
            self._timers.pop("B", None)
            if response.status < 300:
                self.state = State.ACCEPTED
                self._timers["M"] = now + self.config.timeout
                return [Deliver(response)]
            self.state = State.COMPLETED
            self._ack = self._build_ack(response).serialize()
            self._timers["D"] = now + (0.0 if self.reliable else 32.0)
            return [Transmit(self._ack), Deliver(response)]
        if self.state is State.ACCEPTED and 200 <= response.status < 300:
            return [Deliver(response)]
        if self.state is State.COMPLETED and response.status >= 300 and self._ack is not None:
            return [Transmit(self._ack, retransmission=True)]
        return []

    def _build_ack(self, response: Response) -> Request:
        # §17.1.1.3: same Request-URI, Call-ID, From, top Via and Route as the
        # INVITE, To from the response (with its tag), CSeq number with ACK.
        invite = self.request
        headers = Headers()
        headers.add("Via", invite.top_via)
        for name in ("Route",):
            for value in invite.headers.getall(name):
                headers.add(name, value)
        headers.add("From", invite.headers.get("From") or "")
        headers.add("To", response.headers.get("To") or invite.headers.get("To") or "")
        headers.add("Call-ID", invite.call_id)
        headers.add("CSeq", f"{invite.cseq[0]} ACK")
        headers.add("Max-Forwards", "70")
        return Request(method="ACK", uri=invite.uri, headers=headers)

    def _fire(self, name: str, now: float) -> list[Output]:
        # A and B live in Calling only (any response cancels both); D in Completed,
        # M in Accepted.
        if name == "A":
            self._a_interval *= 2
            self._timers["A"] = now + self._a_interval
            return [Transmit(self._data, retransmission=True)]
        if name == "B":
            return [TimedOut(), *self._terminate()]
        return self._terminate()  # D or M
