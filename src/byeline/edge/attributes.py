"""Participant attributes from an INVITE, and SIP headers from attributes.

Mirrors LiveKit's SIP service:

* ``livekit/protocol`` ``sip/sip.go`` ``EvaluateDispatchRule``: the rule's ``attributes``, then
  ``sip.callID``, ``sip.trunkID``, ``sip.phoneNumber`` / ``sip.hostname`` /
  ``sip.trunkPhoneNumber`` (left out with the rule's ``hide_phone_number``), ``sip.ruleID``;
  participant identity ``sip_<caller>`` (``sip_`` + 16 hex digits of SHA-256 when hidden).
* ``livekit/sip`` ``pkg/sip/types.go`` ``HeadersToAttrs``: with ``include_headers`` every header
  (``SIP_ALL_HEADERS``) or every ``X-`` header (``SIP_X_HEADERS``) becomes
  ``sip.h.<lower-case name>``; a repeated header keeps its LAST value there. Then LiveKit's
  built-in header map (Twilio, Telnyx, Amazon Connect ids), then the trunk's
  ``headers_to_attributes``, whose header names match case-insensitively and take the FIRST
  occurrence of a repeated header. Then ``sip.callTag`` and ``sip.callIDFull``.
* ``pkg/sip/inbound.go``: ``sip.callStatus`` is set last (``ringing`` on join).
* ``pkg/sip/types.go`` ``AttrsToHeaders`` and ``pkg/sip/inbound.go``: ``attributes_to_headers``
  is applied to the 200 OK (over the trunk's static ``headers``), final responses and the BYE,
  from the attributes current at that moment.

Where byeline is better than LiveKit: an attribute that is absent OR EMPTY gives no header
(LiveKit sends an empty header for an empty attribute); every header value is checked before it
is sent (:func:`check_header`; LiveKit sends attribute values unchecked, so CR/LF injection is
possible there); duplicate names are merged deterministically and the order is stable.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from livekit.protocol import sip as lk_sip

from byeline.edge.trunk import (
    MAX_HEADER_VALUE_BYTES,
    DispatchRule,
    Trunk,
    header_name_problem,
    masked_caller,
)
from byeline.sip.message import COMPACT_FORMS

__all__ = [
    "ATTR_CALL_ID",
    "ATTR_CALL_ID_FULL",
    "ATTR_CALL_STATUS",
    "ATTR_CALL_TAG",
    "ATTR_HEADER_PREFIX",
    "ATTR_HOSTNAME",
    "ATTR_PHONE_NUMBER",
    "ATTR_RULE_ID",
    "ATTR_TRUNK_ID",
    "ATTR_TRUNK_PHONE_NUMBER",
    "CALL_STATUS_ACTIVE",
    "CALL_STATUS_HANGUP",
    "CALL_STATUS_RINGING",
    "HeaderRefusal",
    "HeaderRefused",
    "Stage",
    "check_header",
    "headers_from_attributes",
    "invite_attributes",
    "merge_headers",
    "outgoing_headers",
    "participant_identity",
    "participant_name",
]

# Attribute names: livekit/protocol livekit/attrs.go and livekit/sip pkg/sip/participant.go.
ATTR_CALL_ID: Final = "sip.callID"
ATTR_CALL_ID_FULL: Final = "sip.callIDFull"
ATTR_CALL_TAG: Final = "sip.callTag"
ATTR_TRUNK_ID: Final = "sip.trunkID"
ATTR_RULE_ID: Final = "sip.ruleID"
ATTR_PHONE_NUMBER: Final = "sip.phoneNumber"
ATTR_TRUNK_PHONE_NUMBER: Final = "sip.trunkPhoneNumber"
ATTR_HOSTNAME: Final = "sip.hostname"
ATTR_CALL_STATUS: Final = "sip.callStatus"
ATTR_HEADER_PREFIX: Final = "sip.h."

CALL_STATUS_RINGING: Final = "ringing"
CALL_STATUS_ACTIVE: Final = "active"
CALL_STATUS_HANGUP: Final = "hangup"

# livekit/sip pkg/sip/participant.go headerToAttr: applied to every inbound call.
_BUILTIN_HEADER_TO_ATTR: Final[tuple[tuple[str, str], ...]] = (
    ("X-Twilio-AccountSid", "sip.twilio.accountSid"),
    ("X-Twilio-CallSid", "sip.twilio.callSid"),
    ("X-call_leg_id", "sip.telnyx.callLegID"),
    ("X-call_session_id", "sip.telnyx.callSessionID"),
    ("X-Amzn-ConnectContactId", "sip.amazon.contactId"),
    ("X-Amzn-ConnectInitialContactId", "sip.amazon.initialContactId"),
    ("X-Amzn-SourceAccount", "sip.amazon.sourceAccount"),
    ("X-Amzn-SourceArn", "sip.amazon.sourceArn"),
    ("X-Amzn-TargetArn", "sip.amazon.targetArn"),
    ("X-Lk-Test-Id", "lktest.id"),
)

# The SIP parser LiveKit uses (sipgo) expands these compact forms to their full names, so a
# header received as "f:" is seen by HeadersToAttrs as "from".
_COMPACT_FORMS: Final = {
    "c": "content-type",
    "f": "from",
    "i": "call-id",
    "l": "content-length",
    "m": "contact",
    "t": "to",
    "v": "via",
}


def _canonical(name: str) -> str:
    lower = name.lower()
    return _COMPACT_FORMS.get(lower, lower)


#: Header name as written -> (lookup key, its ``sip.h.`` attribute, an ``X-`` header?): a trunk's
#: peers send the same names on every INVITE. Bounded, short names only.
_HEADER_NAMES: Final[dict[str, tuple[str, str, bool]]] = {}


def _header_name(name: str) -> tuple[str, str, bool]:
    key = _canonical(name)
    known = (key, ATTR_HEADER_PREFIX + key, key.startswith("x-"))
    if len(_HEADER_NAMES) < 4096 and len(name) <= 128:
        _HEADER_NAMES[name] = known
    return known


# LiveKit's SIPHeaderOptions as plain ints: a protobuf enum's attribute is a Python-level lookup.
_SIP_NO_HEADERS: Final = int(lk_sip.SIPHeaderOptions.SIP_NO_HEADERS)
_SIP_X_HEADERS: Final = int(lk_sip.SIPHeaderOptions.SIP_X_HEADERS)


@functools.lru_cache(maxsize=256)
def _trunk_header_rules(trunk: Trunk) -> tuple[int, tuple[tuple[str, str], ...]]:
    """A trunk's include_headers and its header → attribute pairs, header names as lookup keys.

    Derived once per trunk (a trunk is never changed, only replaced). LiveKit iterates Go maps
    (random order); byeline sorts the trunk's own mapping by header name, after the built-in
    pairs, so that two headers feeding one attribute always resolve the same way.
    """
    mapping = sorted(trunk.headers_to_attributes.items(), key=lambda kv: kv[0].lower())
    pairs = tuple((_canonical(h), attr) for h, attr in (*_BUILTIN_HEADER_TO_ATTR, *mapping))
    return trunk.include_headers, pairs


def participant_identity(caller_number: str, *, hide_phone_number: bool = False) -> str:
    """``sip_<caller>``; with ``hide_phone_number``, ``sip_`` + the first 8 bytes of
    SHA-256(caller) in hex, as LiveKit's ``EvaluateDispatchRule``."""
    if hide_phone_number:
        return "sip_" + hashlib.sha256(caller_number.encode("utf-8")).hexdigest()[:16]
    return "sip_" + caller_number


def participant_name(caller_number: str, *, hide_phone_number: bool = False) -> str:
    """``Phone <caller>``; with ``hide_phone_number`` only the last 4 digits are shown."""
    shown = masked_caller(caller_number) if hide_phone_number else caller_number
    return "Phone " + shown


def invite_attributes(
    trunk: Trunk,
    rule: DispatchRule | None,
    *,
    headers: Sequence[tuple[str, str]],
    call_id: str,
    sip_call_id: str,
    call_tag: str,
    caller_number: str,
    called_number: str,
    hostname: str,
    extra_attributes: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The caller participant's attributes for an accepted INVITE, exactly as LiveKit sets them.

    ``headers`` are the INVITE headers in received order; ``hostname`` is the From URI host
    (LiveKit's ``call.From.Host``); ``caller_number`` the From user, ``called_number`` the To user;
    ``call_id`` byeline's call id, ``sip_call_id`` the SIP Call-ID, ``call_tag`` the INVITE's
    From tag (LiveKit's ``sipInbound.Tag()`` is the remote tag).
    Later steps override earlier ones, in LiveKit's order (see the module docstring), so a
    ``headers_to_attributes`` entry can override a rule attribute. ``rule`` may be ``None``
    when byeline answers without a dispatch rule: ``sip.ruleID`` is then empty.
    """
    attrs: dict[str, str] = dict(rule.attributes) if rule is not None else {}
    if extra_attributes:
        attrs.update(extra_attributes)
    attrs[ATTR_CALL_ID] = call_id
    attrs[ATTR_TRUNK_ID] = trunk.id
    if rule is None or not rule.hide_phone_number:
        attrs[ATTR_PHONE_NUMBER] = caller_number
        attrs[ATTR_HOSTNAME] = hostname
        attrs[ATTR_TRUNK_PHONE_NUMBER] = called_number
    attrs[ATTR_RULE_ID] = rule.id if rule is not None else ""

    include, pairs = _trunk_header_rules(trunk)
    every = include != _SIP_NO_HEADERS and include != _SIP_X_HEADERS
    some = include == _SIP_X_HEADERS
    first: dict[str, str] = {}
    names = _HEADER_NAMES
    for name, value in headers:
        known = names.get(name)
        if known is None:
            known = _header_name(name)
        key, attr, is_x = known
        if key and (every or (some and is_x)):
            attrs[attr] = value  # a repeated header: the last one wins
        if key not in first:
            first[key] = value
    for key, attr in pairs:
        found = first.get(key)
        if found is not None:
            attrs[attr] = found

    if call_tag:
        attrs[ATTR_CALL_TAG] = call_tag
    if sip_call_id:
        attrs[ATTR_CALL_ID_FULL] = sip_call_id
    attrs[ATTR_CALL_STATUS] = CALL_STATUS_RINGING
    return attrs


Stage = Literal["200", "final", "bye"]


@functools.lru_cache(maxsize=256)
def _trunk_outbound_rules(
    trunk: Trunk,
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """A trunk's static ``headers`` and its ``attributes_to_headers`` pairs, in the order
    :func:`headers_from_attributes` applies them; derived once per trunk, as
    :func:`_trunk_header_rules`."""
    static = sorted(trunk.headers.items(), key=lambda kv: (kv[0].lower(), kv[0]))
    mapped = sorted(
        trunk.attributes_to_headers.items(), key=lambda kv: (kv[1].lower(), kv[1], kv[0])
    )
    return tuple(static), tuple(mapped)


def headers_from_attributes(
    trunk: Trunk, attributes: Mapping[str, str], *, stage: Stage
) -> list[tuple[str, str]]:
    """Headers for a 200 OK (``"200"``), a non-2xx final response (``"final"``) or a BYE.

    Stage ``"200"`` starts with the trunk's static ``headers``; every stage then applies
    ``attributes_to_headers`` to ``attributes`` (read them at the moment the message is built).
    An absent or empty attribute gives no header. A mapped header replaces a static one of the
    same name (case-insensitive) in place, as LiveKit's ``AttrsToHeaders`` overwrites the
    static map. Order: static headers sorted by lower-case name, then mapped headers sorted by
    lower-case header name; on equal names (case-insensitive) the later entry wins in the
    earlier position. Values are not checked here: send through :func:`merge_headers` or
    :func:`outgoing_headers`.
    """
    if stage not in ("200", "final", "bye"):
        raise ValueError(f"stage must be '200', 'final' or 'bye'; got {stage!r}")
    out: list[tuple[str, str]] = []
    index: dict[str, int] = {}

    def put(name: str, value: str) -> None:
        key = name.lower()
        if key in index:
            out[index[key]] = (out[index[key]][0], value)
        else:
            index[key] = len(out)
            out.append((name, value))

    static, mapped = _trunk_outbound_rules(trunk)
    if stage == "200":
        for name, static_value in static:
            put(name, static_value)
    for attr, header in mapped:
        value = attributes.get(attr)
        if value:  # absent or empty: no header (LiveKit would send an empty one)
            put(header, value)
    return out


class HeaderRefused(ValueError):
    """A header byeline will not send; the message is a one-line reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"header {name!r} refused: {reason}")


@dataclass(frozen=True)
class HeaderRefusal:
    """A header dropped from an outgoing message, and why."""

    name: str
    reason: str


def check_header(name: str, value: str) -> None:
    """Raise :class:`HeaderRefused` unless ``name: value`` is safe to put on the wire.

    The name must be an RFC 3261 token of at most 255 characters and not a reserved name
    (:data:`byeline.edge.trunk.RESERVED_HEADER_NAMES`: LiveKit's forbidden names plus Via, To,
    Route and the other names the SIP stack owns), nor any compact form (RFC 3261 §7.3.3 and
    the IANA registry: ``a``, ``b``, ``y``... go on the wire under their full names). The value
    must be valid UTF-8 of at most 1024 bytes with no control character: CR, LF, NUL, the other
    C0 controls, DEL and the C1 controls (U+0080-U+009F) are refused. HTAB is allowed: RFC 3261
    permits it inside a header value and it cannot end the header line, and LiveKit's value
    rules allow it too. An empty value is allowed (RFC 3261 permits it;
    :func:`headers_from_attributes` never produces one).
    """
    if not isinstance(name, str) or not isinstance(value, str):
        raise HeaderRefused(str(name), "name and value must be strings")
    if problem := header_name_problem(name, reserved=True):
        raise HeaderRefused(name, problem)
    if name.lower() in COMPACT_FORMS:
        # The serializer writes the full name ("y" goes out as "Identity", "a" as
        # Accept-Contact): a header the name check never saw would reach the wire.
        raise HeaderRefused(
            name, f"header name is the compact form of {COMPACT_FORMS[name.lower()]}"
        )
    for ch in value:
        code = ord(ch)
        if code == 0x09 or 0x20 <= code <= 0x7E or code >= 0xA0:
            continue
        if code in (0x0D, 0x0A):
            raise HeaderRefused(name, f"value contains {'CR' if code == 0x0D else 'LF'}")
        if code == 0:
            raise HeaderRefused(name, "value contains NUL")
        raise HeaderRefused(name, f"value contains control character U+{code:04X}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise HeaderRefused(name, "value is not valid UTF-8 (lone surrogate)") from None
    if size > MAX_HEADER_VALUE_BYTES:
        raise HeaderRefused(
            name, f"value is too long ({size} bytes UTF-8, max {MAX_HEADER_VALUE_BYTES})"
        )


def merge_headers(
    mapped: Iterable[tuple[str, str]], explicit: Iterable[tuple[str, str]]
) -> tuple[list[tuple[str, str]], list[HeaderRefusal]]:
    """Merge mapped headers with explicitly given ones; drop and report unsafe headers.

    Every header is checked with :func:`check_header` first; a refused one is left out and
    reported, and takes no part in the merge (so a refused explicit value does not remove a
    valid mapped one). Then names compare case-insensitively: an explicit header replaces a
    mapped one of the same name in the mapped one's position (keeping the explicit spelling);
    new explicit names follow in their order; within each list a repeated name keeps its first
    position and its last value. The call can always end: nothing here raises.
    """
    refusals: list[HeaderRefusal] = []
    out: list[tuple[str, str]] = []
    index: dict[str, int] = {}
    for source, replace_name in ((mapped, False), (explicit, True)):
        for name, value in source:
            try:
                check_header(name, value)
            except HeaderRefused as exc:
                refusals.append(HeaderRefusal(exc.name, exc.reason))
                continue
            key = name.lower()
            if key in index:
                i = index[key]
                out[i] = (name if replace_name else out[i][0], value)
            else:
                index[key] = len(out)
                out.append((name, value))
    return out, refusals


def outgoing_headers(
    trunk: Trunk,
    attributes: Mapping[str, str],
    *,
    stage: Stage,
    explicit: Iterable[tuple[str, str]] = (),
) -> tuple[list[tuple[str, str]], list[HeaderRefusal]]:
    """:func:`headers_from_attributes` then :func:`merge_headers` with ``explicit``: the
    headers to send and the refusals to record."""
    return merge_headers(headers_from_attributes(trunk, attributes, stage=stage), explicit)
