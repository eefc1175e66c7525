"""Dialogs (RFC 3261 §12) and the UAS core pieces around them, sans-I/O.

* :func:`make_response` builds a response that echoes the request's Via, From,
  To, Call-ID and CSeq verbatim (§8.2.6.2).
* :class:`Dialog` keeps tags, route set, remote target and CSeq counters, and
  builds in-dialog requests (our BYE) with loose or strict routing (§12.2.1.1).
* :class:`AnswerRetransmitter` is the UAS core's 2xx retransmission until the
  ACK arrives (§13.3.1.4): T1, doubling, capped at T2; after 64*T1 with no ACK
  it reports :class:`AckTimedOut` so the edge ends the call with a BYE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .entropy import random_hex
from .grammar import BRANCH_COOKIE
from .message import Headers, Request, Response, header_tag
from .transaction import TimerConfig, Transmit

REASONS: Final = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
}


def new_tag() -> str:
    """A fresh From/To tag (§19.3: at least 32 bits of randomness)."""
    return random_hex(5)


def new_branch() -> str:
    """A fresh RFC 3261 branch with the magic cookie."""
    return BRANCH_COOKIE + random_hex(8)


# Requests whose 1xx (other than 100) and 2xx responses create a dialog.
_DIALOG_CREATING: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER"})


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """A response to ``request`` with the mandatory headers copied (§8.2.6.2).

    ``to_tag`` is added to To unless the request already carries one (a
    request inside a dialog) or the status is 100 (§8.2.6.2: never on 100).
    A 101-299 response to a dialog-creating request carries the request's
    Record-Route lines, in order (§12.1.1), so that the peer's route set holds
    the proxies that asked to stay on the path.
    """
    h = Headers()
    for via in request.headers.getall("Via"):
        h.add("Via", via)
    h.add("From", request.headers.get("From") or "")
    to = request.headers.get("To") or ""
    if to_tag and status != 100 and header_tag(to) is None:
        to = f"{to};tag={to_tag}"
    h.add("To", to)
    h.add("Call-ID", request.headers.get("Call-ID") or "")
    h.add("CSeq", request.headers.get("CSeq") or "")
    if request.method in _DIALOG_CREATING and 100 < status < 300:
        for record_route in request.headers.getall("Record-Route"):
            h.add("Record-Route", record_route)
    if request.headers.get("Timestamp") and status == 100:
        h.add("Timestamp", request.headers.get("Timestamp") or "")
    for name, value in headers or ():
        h.add(name, value)
    return Response(
        status=status, reason=reason or REASONS.get(status, "Unknown"), headers=h, body=body
    )


@dataclass(slots=True)
class Dialog:
    """A dialog as the UAS (callee) sees it, or as the UAC does.

    ``local_*`` is us, ``remote_*`` the peer.  ``route_set`` is in the order in
    which our requests must traverse it.
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None
    secure: bool = False

    # Written out so that mypyc compiles it (the one @dataclass generates runs interpreted).
    def __init__(
        self,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: str,
        remote_uri: str,
        remote_target: str,
        route_set: list[str] | None = None,
        local_cseq: int = 1,
        remote_cseq: int | None = None,
        secure: bool = False,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = [] if route_set is None else route_set
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.secure = secure

    @classmethod
    def from_invite(cls, invite: Request, local_tag: str, local_cseq: int = 1) -> Dialog:
        """The UAS dialog created by our 2xx to ``invite`` (§12.1.1)."""
        target = _contact_uri(invite) or invite.uri
        return Dialog(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_tag or "",
            local_uri=_strip_tag(invite.headers.get("To") or ""),
            remote_uri=_strip_tag(invite.headers.get("From") or ""),
            remote_target=target,
            route_set=invite.headers.values("Record-Route"),
            local_cseq=local_cseq,
            remote_cseq=invite.cseq[0],
            secure=invite.uri.lower().startswith("sips:"),
        )

    @classmethod
    def from_response(cls, invite: Request, response: Response) -> Dialog:
        """The UAC dialog created by a 2xx to our ``invite`` (§12.1.2)."""
        target = _contact_uri(response) or invite.uri
        return Dialog(
            call_id=invite.call_id,
            local_tag=invite.from_tag or "",
            remote_tag=response.to_tag or "",
            local_uri=_strip_tag(invite.headers.get("From") or ""),
            remote_uri=_strip_tag(response.headers.get("To") or ""),
            remote_target=target,
            route_set=list(reversed(response.headers.values("Record-Route"))),
            local_cseq=invite.cseq[0],
            remote_cseq=None,
        )

    def check_remote_cseq(self, request: Request) -> bool:
        """§12.2.2: a lower CSeq than the last one seen is out of order (500)."""
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and number < self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def create_request(
        self,
        method: str,
        *,
        via: str,
        contact: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        cseq: int | None = None,
    ) -> Request:
        """An in-dialog request (§12.2.1.1), e.g. our BYE.

        ``via`` is the complete Via value for our hop (with a fresh branch).
        """
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and not _is_loose_route(routes[0]):
            # Strict routing: the first route becomes the Request-URI and the
            # remote target goes last in the Route header.
            uri = name_addr_uri(routes[0])
            routes = [*routes[1:], f"<{self.remote_target}>"]
        h = Headers()
        h.add("Via", via)
        h.add("Max-Forwards", "70")
        for r in routes:
            h.add("Route", r)
        # An empty tag (an RFC 2543 peer sent none) gives no tag parameter (§12.2.1.1).
        h.add("From", _with_tag(self.local_uri, self.local_tag))
        h.add("To", _with_tag(self.remote_uri, self.remote_tag))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        if contact:
            h.add("Contact", contact)
        for name, value in headers or ():
            h.add(name, value)
        return Request(method=method, uri=uri, headers=h, body=body)

    def matches(self, message: Request | Response, *, we_are_uas: bool = True) -> bool:
        """True when ``message`` belongs to this dialog (Call-ID and both tags)."""
        try:
            if message.call_id != self.call_id:
                return False
        except KeyError:
            return False
        # A missing tag (RFC 2543 peer) is the empty tag the dialog was built with.
        from_tag, to_tag = message.from_tag or "", message.to_tag or ""
        if isinstance(message, Request):
            return from_tag == self.remote_tag and to_tag == self.local_tag
        return from_tag == self.local_tag and to_tag == self.remote_tag


def name_addr_uri(value: str) -> str:
    """The URI of a name-addr or addr-spec value (Contact, Route), as written.

    Inside ``<...>`` the URI is taken whole; a bare addr-spec ends at the first
    ``;``, since the parameters after it belong to the header (§20.10).  Quoted
    display names may hold ``<`` and ``,``.  An unclosed ``<`` takes the rest.
    """
    quoted = escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            close = value.find(">", i + 1)
            return value[i + 1 : close if close >= 0 else len(value)].strip()
    return value.split(";", 1)[0].strip()


def _contact_uri(message: Request | Response) -> str:
    """The first Contact's URI, or "" when there is none."""
    contacts = message.headers.values("Contact")
    return name_addr_uri(contacts[0]) if contacts else ""


def _is_loose_route(route: str) -> bool:
    """True when the route's URI has the ``lr`` parameter (§19.1.1, §16.12.1.1)."""
    uri = name_addr_uri(route).split("?", 1)[0]
    host_and_params = uri.rsplit("@", 1)[-1]  # the user part may hold ';' (RFC 4475 §3.1.1.9)
    return any(p.split("=", 1)[0].strip().lower() == "lr" for p in host_and_params.split(";")[1:])


def _with_tag(uri: str, tag: str) -> str:
    return f"{uri};tag={tag}" if tag else uri


def _strip_tag(value: str) -> str:
    gt = value.rfind(">")
    head, tail = (value[: gt + 1], value[gt + 1 :]) if gt >= 0 else ("", value)
    params = [p.strip() for p in tail.split(";")]
    params = [p for p in params if p and p.split("=", 1)[0].strip().lower() != "tag"]
    if not head:
        return ";".join(params)
    return head + "".join(f";{p}" for p in params)


@dataclass(frozen=True, slots=True)
class AckTimedOut:
    """64*T1 passed without an ACK for our 2xx: end the call with a BYE."""


class AnswerRetransmitter:
    """The UAS core's retransmission of a 2xx to INVITE until the ACK (§13.3.1.4)."""

    __slots__ = ("_data", "_interval", "_next", "_stop_at", "acked", "config")

    def __init__(self, data: bytes, now: float, config: TimerConfig = TimerConfig()) -> None:  # noqa: B008
        self._data = data
        self.config = config
        self._interval = config.t1
        self._next: float | None = now + config.t1
        self._stop_at = now + config.timeout
        self.acked = False

    @property
    def deadline(self) -> float | None:
        """When :meth:`on_timer` is next due."""
        return None if self.acked else self._next

    def ack(self) -> None:
        """The ACK arrived: stop."""
        self.acked = True
        self._next = None

    def retransmit(self) -> Transmit | None:
        """A retransmitted INVITE arrived: resend the 2xx at once (§13.3.1.4)."""
        return None if self.acked else Transmit(self._data, retransmission=True)

    def on_timer(self, now: float) -> list[Transmit | AckTimedOut]:
        """Retransmit, or report the timeout."""
        if self.acked or self._next is None or now < self._next:
            return []
        if now >= self._stop_at:
            self._next = None
            return [AckTimedOut()]
        self._interval = min(2 * self._interval, self.config.t2)
        self._next = min(now + self._interval, self._stop_at)
        return [Transmit(self._data, retransmission=True)]
