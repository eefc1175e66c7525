"""SDP (RFC 4566) and the offer/answer model (RFC 3264) for byeline's audio leg.

byeline speaks G.711 (PCMU, PCMA) with RFC 4733 telephone-events, over plain RTP/AVP. This module
parses and writes session descriptions and negotiates them, with no I/O:

- :func:`answer_offer` answers an INVITE (or re-INVITE) that carries an offer;
- :func:`create_offer` and :func:`accept_answer` cover the late-offer case (INVITE without SDP:
  we offer in the 200 OK and the ACK carries the answer);
- :class:`MediaSession` keeps the ``o=`` session id and version of one dialog across re-INVITEs.

SRTP with SDES keys (RFC 4568) is negotiated too, under a :class:`MediaEncryption` policy that
mirrors LiveKit's trunk ``media_encryption``: an RTP/SAVP stream with ``a=crypto`` lines is
answered with our own fresh key, and :class:`Negotiated` carries both keys in
:attr:`Negotiated.srtp` for the media layer (``byeline.rtp.srtp``). The keys travel in the SDP
itself, which is why :func:`redact_keys` exists for logs and traces.

Parsing is tolerant where real peers are sloppy (LF-only line ends, trailing blanks, attributes in
unusual order, unknown lines, which are kept) and raises ValueError with a precise message where
the text cannot be understood.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from operator import itemgetter
from typing import Final, cast, overload

from byeline.rtp.srtp import (
    DEFAULT_OFFER_SUITES,
    SUITES,
    SdesCrypto,
    SrtpKey,
    SrtpParams,
    suite_named,
)
from byeline.sip.entropy import random_bytes

__all__ = [
    "Answer",
    "Attribute",
    "Connection",
    "Direction",
    "EncryptionRequired",
    "MediaDescription",
    "MediaEncryption",
    "MediaSession",
    "Negotiated",
    "NoCommonCodec",
    "NoCommonCrypto",
    "Origin",
    "RtpMap",
    "SessionDescription",
    "SrtpParams",
    "UnsupportedProfile",
    "accept_answer",
    "answer_offer",
    "create_offer",
    "redact_keys",
]

_DIGITS: Final = re.compile(r"[0-9]+")
# RFC 4566 §9: token-char = %x21 / %x23-27 / %x2A-2B / %x2D-2E / %x30-39 / %x41-5A / %x5E-7E
_TOKEN: Final = re.compile(r"[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7e]+")
_FORBIDDEN: Final = re.compile(r"[\x00\r\n]")
# A field of o=, c= or m= is one word: any blank (str.isspace, which \s matches) splits it.
_BLANK: Final = re.compile(r"\s")

#: RFC 3551 §6 static audio payload types (encoding, clock rate) byeline may meet in offers.
STATIC_PAYLOAD_TYPES: Final[dict[int, tuple[str, int]]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    18: ("G729", 8000),
}
_STATIC_BY_NAME: Final = {name: pt for pt, (name, _) in STATIC_PAYLOAD_TYPES.items()}

#: The plain RTP transport profile (RFC 3551); RTP/SAVP is answered under an SRTP policy.
PROFILE: Final = "RTP/AVP"
#: The SRTP transport profile (RFC 3711 §12), keyed by ``a=crypto`` lines (RFC 4568).
SAVP_PROFILE: Final = "RTP/SAVP"
#: Packetization time we ask for, in milliseconds (G.711 at 20 ms is 160 bytes a packet).
PTIME: Final = 20
#: RFC 4733 events we can receive: DTMF 0-9, *, #, A-D and flash (16).
TELEPHONE_EVENTS: Final = "0-16"


class NoCommonCodec(ValueError):
    """The offer (or answer) has no audio stream with a codec we support: answer 488."""


class UnsupportedProfile(ValueError):
    """The audio stream uses a transport profile we do not answer yet (e.g. RTP/SAVP): 488."""


class EncryptionRequired(UnsupportedProfile):
    """Plain RTP/AVP audio offered (or accepted) where the policy requires SRTP: answer 488."""


class NoCommonCrypto(UnsupportedProfile):
    """RTP/SAVP audio whose ``a=crypto`` lines offer no suite and key we can run: answer 488."""


class MediaEncryption(enum.StrEnum):
    """SRTP policy, as LiveKit's trunk ``media_encryption`` (``SIPMediaEncryption``).

    - ``DISABLE``: plain RTP/AVP only; an offer with RTP/SAVP audio only is refused.
    - ``ALLOW``: SRTP when the peer offers RTP/SAVP with ``a=crypto``, plain RTP otherwise.
    - ``REQUIRE``: SRTP only; a plain RTP offer is refused (:class:`EncryptionRequired`).
    """

    DISABLE = "disable"
    ALLOW = "allow"
    REQUIRE = "require"

    @classmethod
    def from_livekit(cls, value: int | str) -> MediaEncryption:
        """From a trunk's ``media_encryption``: the enum number (``trunk.info.media_encryption``)
        or its name (``"SIP_MEDIA_ENCRYPT_ALLOW"``); ValueError for anything else."""
        by_number = {0: cls.DISABLE, 1: cls.ALLOW, 2: cls.REQUIRE}
        if isinstance(value, int) and value in by_number:
            return by_number[value]
        if isinstance(value, str):
            name = value.upper().removeprefix("SIP_MEDIA_ENCRYPT_")
            for member in cls:
                if member.name == name:
                    return member
        raise ValueError(f"unknown media_encryption {value!r}")


def _policy(value: MediaEncryption | str) -> MediaEncryption:
    """``value`` as a :class:`MediaEncryption` (a member is returned as it is, without the
    enum's lookup)."""
    return value if isinstance(value, MediaEncryption) else MediaEncryption(value)


_KEY_IN_CRYPTO: Final = re.compile(r"^(a=crypto:.*)$", re.MULTILINE)
_INLINE_KEY: Final = re.compile(r"(inline:)[^|;\s]+")


@overload
def redact_keys(sdp: bytes) -> bytes: ...
@overload
def redact_keys(sdp: str) -> str: ...
def redact_keys(sdp: str | bytes) -> str | bytes:
    """``sdp`` (or a whole SIP message) with every ``a=crypto`` inline key replaced by
    ``<redacted>``: SDES keys are secrets that travel in the SDP, keep them out of logs/traces."""
    if isinstance(sdp, bytes):
        return redact_keys(sdp.decode("utf-8", "surrogateescape")).encode(
            "utf-8", "surrogateescape"
        )
    return _KEY_IN_CRYPTO.sub(lambda line: _INLINE_KEY.sub(r"\1<redacted>", line.group(1)), sdp)


def _uint(text: str, what: str, maximum: int) -> int:
    # isascii and isdigit: [0-9]+ as _DIGITS says, without a regular expression's call.
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{what} is not a decimal number: {text!r}")
    # The length test first keeps int() off huge digit strings (the maxima are under 2**64).
    if len(text) > 40 or (value := int(text)) > maximum:
        raise ValueError(f"{what} {text} is larger than {maximum}")
    return value


def _words(fields: tuple[str, ...], line: str | None = None) -> bool:
    """Whether every field is non-empty and without blanks, in one split instead of a regex
    search per field: ``str.split()`` cuts at exactly the characters ``\\s`` matches
    (``str.isspace``), so the fields come back unchanged only if none is empty or has one."""
    return (" ".join(fields) if line is None else line).split() == list(fields)


def _check_text(value: str, what: str) -> str:
    # Three substring tests: cheaper than the regex on the short values of an SDP line.
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"{what} contains CR, LF or NUL: {value!r}")
    return value


# Offers repeat their attribute names and codec lines on every call: what was checked or parsed
# once is remembered (bounded, short values only, so a peer cannot fill memory with them).
_ATTRIBUTE_NAMES: Final[set[str]] = set()
_RTPMAPS: Final[dict[str, RtpMap]] = {}
_ATTRIBUTES: Final[dict[str, Attribute]] = {}
_CACHE_LIMIT: Final = 1024
_CACHED_LENGTH: Final = 64


def _check_attribute_name(name: str) -> None:
    if name in _ATTRIBUTE_NAMES:
        return
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"attribute name is not a token: {name!r}")
    if len(_ATTRIBUTE_NAMES) < _CACHE_LIMIT and len(name) <= _CACHED_LENGTH:
        _ATTRIBUTE_NAMES.add(name)


#: The attributes an offer repeats call after call, kept parsed. Only these: per-session values
#: (``a=ssrc``, ``a=ice-ufrag``) would fill the cache for nothing, and secrets (``a=crypto``
#: inline keys, ``a=ice-pwd``) must not outlive their call.
_SHARED_ATTRIBUTES: Final = frozenset(
    {"rtpmap", "fmtp", "ptime", "maxptime", "sendrecv", "sendonly", "recvonly", "inactive"}
    | {"rtcp-mux", "silenceSupp"}
)


def _parse_attribute(text: str) -> Attribute:
    """``Attribute.parse``, remembered for the lines of :data:`_SHARED_ATTRIBUTES`: an Attribute
    is frozen, one parse serves every call."""
    attribute = _ATTRIBUTES.get(text)
    if attribute is None:
        attribute = Attribute.parse(text)
        if (
            attribute.name in _SHARED_ATTRIBUTES
            and len(_ATTRIBUTES) < _CACHE_LIMIT
            and len(text) <= _CACHED_LENGTH
        ):
            _ATTRIBUTES[text] = attribute
    return attribute


def _parse_rtpmap(value: str) -> RtpMap:
    """``RtpMap.parse``, remembered: an RtpMap is frozen, one parse serves every call."""
    rtpmap = _RTPMAPS.get(value)
    if rtpmap is None:
        rtpmap = RtpMap.parse(value)
        if len(_RTPMAPS) < _CACHE_LIMIT and len(value) <= _CACHED_LENGTH:
            _RTPMAPS[value] = rtpmap
    return rtpmap


class Direction(enum.StrEnum):
    """Media direction attribute (RFC 3264 §5.1), seen from the side that wrote the SDP."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        """Whether the side that wrote this direction sends media."""
        return self == "sendrecv" or self == "sendonly"

    @property
    def receives(self) -> bool:
        """Whether the side that wrote this direction receives media."""
        return self == "sendrecv" or self == "recvonly"

    @classmethod
    def from_flags(cls, *, sends: bool, receives: bool) -> Direction:
        """Build a direction from its two halves."""
        # The members by value from a plain dict: each ``cls.MEMBER`` is an attribute lookup on
        # the enum class (a Python-level call, compiled or not), on every offer and answer.
        if sends:
            return _BY_VALUE["sendrecv" if receives else "sendonly"]
        return _BY_VALUE["recvonly" if receives else "inactive"]

    def reversed(self) -> Direction:
        """The same stream seen from the other side (sendonly ↔ recvonly)."""
        return Direction.from_flags(sends=self.receives, receives=self.sends)

    def restricted(self, other: Direction) -> Direction:
        """Directions allowed by both ``self`` and ``other`` (both seen from the same side)."""
        return Direction.from_flags(
            sends=self.sends and other.sends, receives=self.receives and other.receives
        )


_DIRECTIONS: Final = frozenset(d.value for d in Direction)
_BY_VALUE: Final[dict[str, Direction]] = {d.value: d for d in Direction}


@dataclass(frozen=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    # The SDP classes write their __init__ out: mypyc compiles it, while the one @dataclass
    # generates runs interpreted (several times slower; every INVITE makes a dozen of these).

    username: str
    session_id: int
    session_version: int
    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    def __init__(
        self,
        username: str,
        session_id: int,
        session_version: int,
        address: str,
        addrtype: str = "IP4",
        nettype: str = "IN",
    ) -> None:
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "session_id", session_id)
        object.__setattr__(self, "session_version", session_version)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "addrtype", addrtype)
        object.__setattr__(self, "nettype", nettype)

    @classmethod
    def parse(cls, value: str) -> Origin:
        """Parse the value of an ``o=`` line."""
        fields = value.split()
        if len(fields) != 6:
            raise ValueError(f"o= needs 6 fields, got {len(fields)}: {value!r}")
        username, sess_id, sess_version, nettype, addrtype, address = fields
        return Origin(
            username=username,
            # RFC 4566 says 1*DIGIT; 64-bit NTP-based values are common, larger ones are not.
            session_id=_uint(sess_id, "o= session id", 2**64 - 1),
            session_version=_uint(sess_version, "o= session version", 2**64 - 1),
            address=address,
            addrtype=addrtype,
            nettype=nettype,
        )

    def serialize(self) -> str:
        """Return the value of the ``o=`` line."""
        fields = (self.username, self.nettype, self.addrtype, self.address)
        if not _words(fields):
            for item in fields:
                if not item or _BLANK.search(item):
                    raise ValueError(f"o= field must be non-empty without blanks: {item!r}")
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (the address may carry ``/ttl``)."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    def __init__(self, address: str, addrtype: str = "IP4", nettype: str = "IN") -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "addrtype", addrtype)
        object.__setattr__(self, "nettype", nettype)

    @classmethod
    def parse(cls, value: str) -> Connection:
        """Parse the value of a ``c=`` line."""
        fields = value.split()
        if len(fields) != 3:
            raise ValueError(f"c= needs 3 fields, got {len(fields)}: {value!r}")
        nettype, addrtype, address = fields
        return Connection(address=address, addrtype=addrtype, nettype=nettype)

    @classmethod
    def for_ip(cls, ip: str) -> Connection:
        """Connection for a unicast IPv4 or IPv6 address (ValueError if ``ip`` is neither)."""
        return _connection_for_ip(ip)

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl`` or ``/count`` suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_hold_address(self) -> bool:
        """True for ``0.0.0.0`` (RFC 2543 hold, still sent by older peers) or IPv6 ``::``."""
        if ":" not in self.host:
            # IPv4 has one spelling of the unspecified address (ipaddress refuses leading
            # zeros), and a name is never it: no parse needed on every offer.
            return self.host == "0.0.0.0"
        try:
            return ipaddress.ip_address(self.host).is_unspecified
        except ValueError:
            return False

    def serialize(self) -> str:
        """Return the value of the ``c=`` line."""
        fields = (self.nettype, self.addrtype, self.address)
        if not _words(fields):
            for item in fields:
                if not item or _BLANK.search(item):
                    raise ValueError(f"c= field must be non-empty without blanks: {item!r}")
        return f"{self.nettype} {self.addrtype} {self.address}"


@functools.lru_cache(maxsize=256)
def _connection_for_ip(ip: str) -> Connection:
    parsed = ipaddress.ip_address(ip)
    return Connection(address=str(parsed), addrtype="IP4" if parsed.version == 4 else "IP6")


@dataclass(frozen=True)
class Attribute:
    """``a=<name>`` (property attribute) or ``a=<name>:<value>``."""

    name: str
    value: str | None = None

    def __init__(self, name: str, value: str | None = None) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", value)

    @classmethod
    def parse(cls, text: str) -> Attribute:
        """Parse the text after ``a=``."""
        name, colon, value = text.partition(":")
        _check_attribute_name(name)
        return Attribute(name, value if colon else None)

    def serialize(self) -> str:
        """Return the text after ``a=``."""
        _check_attribute_name(self.name)
        if self.value is None:
            return self.name
        return f"{self.name}:{_check_text(self.value, 'attribute value')}"


@dataclass(frozen=True)
class RtpMap:
    """``a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __init__(
        self, payload_type: int, encoding: str, clock_rate: int, channels: int | None = None
    ) -> None:
        object.__setattr__(self, "payload_type", payload_type)
        object.__setattr__(self, "encoding", encoding)
        object.__setattr__(self, "clock_rate", clock_rate)
        object.__setattr__(self, "channels", channels)

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        """Parse the value of an ``rtpmap`` attribute."""
        pt_text, _, rest = value.strip().partition(" ")
        parts = rest.strip().split("/")
        if len(parts) not in (2, 3) or not parts[0]:
            raise ValueError(f"rtpmap must be '<pt> <name>/<rate>[/<channels>]': {value!r}")
        return RtpMap(
            payload_type=_uint(pt_text, "rtpmap payload type", 127),
            encoding=parts[0],
            clock_rate=_uint(parts[1], "rtpmap clock rate", 2**32 - 1),
            channels=_uint(parts[2], "rtpmap channels", 255) if len(parts) == 3 else None,
        )

    def serialize(self) -> str:
        """Return the value of the ``rtpmap`` attribute."""
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"


_MLine = tuple[str, int, str, tuple[str, ...], int | None]


def _m_line_fields(value: str) -> _MLine:
    """The fields of an ``m=`` line's value: media, port, proto, formats, port count."""
    fields = value.split()
    if len(fields) < 3:
        raise ValueError(f"m= needs at least media, port and proto: {value!r}")
    port_part, slash, count_part = fields[1].partition("/")
    return (
        fields[0],
        _uint(port_part, "m= port", 65535),
        fields[2],
        tuple(fields[3:]),
        _uint(count_part, "m= port count", 65535) if slash else None,
    )


def _section(
    m_line: _MLine,
    connection: Connection | None,
    attributes: list[Attribute],
    other: list[tuple[str, str]],
) -> MediaDescription:
    media, port, proto, formats, port_count = m_line
    return MediaDescription(
        media, port, proto, formats, port_count, connection, tuple(attributes), tuple(other)
    )


# Where the non-structured lines go when writing (RFC 4566 §5 fixes the order of line types).
_SESSION_ORDER: Final = {"i": 0, "u": 1, "e": 2, "p": 3, "b": 5, "r": 7, "z": 8, "k": 9}
_MEDIA_ORDER: Final = {"i": 0, "b": 2, "k": 3}
_UNKNOWN_RANK: Final = 10


def _ranked(
    other: tuple[tuple[str, str], ...], order: dict[str, int]
) -> list[tuple[int, str, str]]:
    """``other`` lines as (rank, type, value), in their writing order (stable: received order
    within a type)."""
    return sorted(
        [(order.get(kind, _UNKNOWN_RANK), kind, value) for kind, value in other],
        key=itemgetter(0),
    )


def _other_lines(ranked: list[tuple[int, str, str]], low: int, high: int) -> list[str]:
    return [f"{kind}={value}" for rank, kind, value in ranked if low <= rank < high]


@dataclass(frozen=True)
class MediaDescription:
    """One ``m=`` section: ``m=<media> <port>[/<count>] <proto> <fmt> ...`` and its lines."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: tuple[Attribute, ...] = ()
    #: ``i=``, ``b=``, ``k=`` and unknown lines, as (type letter, value), in received order.
    other: tuple[tuple[str, str], ...] = ()
    #: rtpmaps and codecs derived once (not a field of its own: left out of init, eq and repr).
    _memo: dict[str, object] = field(
        default_factory=dict, init=False, compare=False, repr=False, hash=False
    )

    def __init__(
        self,
        media: str,
        port: int,
        proto: str,
        formats: tuple[str, ...],
        port_count: int | None = None,
        connection: Connection | None = None,
        attributes: tuple[Attribute, ...] = (),
        other: tuple[tuple[str, str], ...] = (),
    ) -> None:
        object.__setattr__(self, "media", media)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "proto", proto)
        object.__setattr__(self, "formats", formats)
        object.__setattr__(self, "port_count", port_count)
        object.__setattr__(self, "connection", connection)
        object.__setattr__(self, "attributes", attributes)
        object.__setattr__(self, "other", other)
        object.__setattr__(self, "_memo", {})

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        """Parse the value of an ``m=`` line (the section's other lines are added by the caller)."""
        media, port, proto, formats, port_count = _m_line_fields(value)
        return MediaDescription(
            media=media, port=port, proto=proto, formats=formats, port_count=port_count
        )

    def m_line(self) -> str:
        """Return the value of the ``m=`` line."""
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        fields = (self.media, port, self.proto, *self.formats)
        line = " ".join(fields)
        if not _words(fields, line) or "\x00" in line:
            for item in fields:
                if not item or _BLANK.search(item) or _FORBIDDEN.search(item):
                    raise ValueError(f"m= field must be non-empty without blanks: {item!r}")
        return line

    def values(self, name: str) -> list[str]:
        """Values of every ``a=<name>:<value>`` attribute, in order (names are case-sensitive)."""
        return [a.value for a in self.attributes if a.name == name and a.value is not None]

    @property
    def direction(self) -> Direction | None:
        """The media-level direction attribute, if any (first one wins)."""
        for attribute in self.attributes:
            if attribute.value is None and attribute.name in _DIRECTIONS:
                return Direction(attribute.name)
        return None

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds, or None if absent (ValueError if malformed)."""
        values = self.values("ptime")
        if not values:
            return None
        # RFC 4566 allows a fractional ptime ("20.0" has been seen); keep the integer part.
        whole = values[0].strip().split(".", 1)[0]
        return _uint(whole, "ptime", 10_000)

    @property
    def crypto(self) -> list[str]:
        """Raw ``a=crypto`` values (RFC 4568); :meth:`sdes_crypto` parses them."""
        return self.values("crypto")

    def sdes_crypto(self) -> list[SdesCrypto]:
        """The ``a=crypto`` lines parsed, in order; malformed ones are left out (RFC 4568 §6.3:
        an offerer's line we cannot understand is ignored, not fatal)."""
        found: list[SdesCrypto] = []
        for value in self.crypto:
            try:
                found.append(SdesCrypto.parse(value))
            except ValueError:
                continue
        return found

    # The description is frozen, so what is derived from it is derived once: an answer reads
    # the codecs of every offered stream several times.  Callers get copies.

    def rtpmaps(self) -> dict[int, RtpMap]:
        """``a=rtpmap`` attributes by payload type (ValueError if one is malformed)."""
        cached = cast("dict[int, RtpMap] | None", self._memo.get("rtpmaps"))
        if cached is None:
            cached = {}
            for value in self.values("rtpmap"):
                rtpmap = _parse_rtpmap(value)
                cached.setdefault(rtpmap.payload_type, rtpmap)
            self._memo["rtpmaps"] = cached
        return dict(cached)

    def fmtp(self, payload_type: int) -> str | None:
        """The ``a=fmtp`` parameters of ``payload_type``, or None."""
        for value in self.values("fmtp"):
            pt_text, _, params = value.strip().partition(" ")
            if pt_text == str(payload_type):
                return params.strip()
        return None

    def codecs(self) -> list[RtpMap]:
        """Payload types of the ``m=`` line in its order (the sender's preference), described.

        A payload type without rtpmap is described from the RFC 3551 static table; a format that
        is neither (or not a number) is left out.
        """
        cached = cast("list[RtpMap] | None", self._memo.get("codecs"))
        if cached is None:
            maps = self.rtpmaps()
            cached = []
            for fmt in self.formats:
                if not _DIGITS.fullmatch(fmt) or len(fmt) > 3 or int(fmt) > 127:
                    continue
                pt = int(fmt)
                if pt in maps:
                    cached.append(maps[pt])
                elif pt in STATIC_PAYLOAD_TYPES:
                    name, rate = STATIC_PAYLOAD_TYPES[pt]
                    cached.append(RtpMap(pt, name, rate))
            self._memo["codecs"] = cached
        return list(cached)

    def serialize_lines(self) -> list[str]:
        """Return the section's lines (without line ends), ``m=`` first."""
        lines = [f"m={self.m_line()}"]
        ranked = _ranked(self.other, _MEDIA_ORDER) if self.other else []
        # i= comes before c=; b=, k= and unknown lines after it.
        lines += _other_lines(ranked, 0, 1)
        if self.connection is not None:
            lines.append(f"c={self.connection.serialize()}")
        lines += _other_lines(ranked, 1, _UNKNOWN_RANK + 1)
        lines += [f"a={attribute.serialize()}" for attribute in self.attributes]
        return lines


@dataclass(frozen=True)
class SessionDescription:
    """A whole SDP body (RFC 4566)."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    #: ``t=`` values; ``r=``/``z=`` lines are in :attr:`other`.
    timing: tuple[str, ...] = ("0 0",)
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    #: ``i= u= e= p= b= r= z= k=`` and unknown session-level lines, as (type, value).
    other: tuple[tuple[str, str], ...] = ()
    version: int = 0

    def __init__(
        self,
        origin: Origin,
        session_name: str = "-",
        connection: Connection | None = None,
        timing: tuple[str, ...] = ("0 0",),
        attributes: tuple[Attribute, ...] = (),
        media: tuple[MediaDescription, ...] = (),
        other: tuple[tuple[str, str], ...] = (),
        version: int = 0,
    ) -> None:
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "session_name", session_name)
        object.__setattr__(self, "connection", connection)
        object.__setattr__(self, "timing", timing)
        object.__setattr__(self, "attributes", attributes)
        object.__setattr__(self, "media", media)
        object.__setattr__(self, "other", other)
        object.__setattr__(self, "version", version)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body. CRLF or LF line ends; ValueError with the line number if invalid."""
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"SDP is not UTF-8: byte {exc.start}") from None
        else:
            text = data
        lines: list[tuple[int, str, str]] = []
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.removesuffix("\r").rstrip(" \t")
            if not line:
                continue
            if "\r" in line or "\x00" in line:
                raise ValueError(f"SDP line {number}: CR or NUL inside the line")
            # ord(): compiled, a comparison of two ints (a str ordering is a generic call).
            if len(line) < 2 or line[1] != "=" or not (97 <= ord(line[0]) <= 122):
                raise ValueError(f"SDP line {number}: not '<letter>=<value>': {line[:40]!r}")
            lines.append((number, line[0], line[2:]))
        try:
            return cls._from_lines(lines)
        except ValueError as exc:
            raise ValueError(f"SDP: {exc}") from None

    @classmethod
    def _from_lines(cls, lines: list[tuple[int, str, str]]) -> SessionDescription:
        if not lines or lines[0][1] != "v":
            raise ValueError("the first line must be v=")
        version = _uint(lines[0][2], "v=", 0)  # only version 0 exists
        origin: Origin | None = None
        session_name: str | None = None
        connection: Connection | None = None
        timing: list[str] = []
        attributes: list[Attribute] = []
        other: list[tuple[str, str]] = []
        media: list[MediaDescription] = []
        # Per current m= section: its m= line, connection, attributes, other lines. (No nested
        # function closes a section: compiled, the variables it shared would all live in a
        # closure's environment object instead of locals.)
        section: _MLine | None = None
        m_conn: Connection | None = None
        m_attrs: list[Attribute] = []
        m_other: list[tuple[str, str]] = []
        for number, kind, value in lines[1:]:
            try:
                if kind == "v":
                    raise ValueError("v= appears twice")
                if kind == "m":
                    if section is not None:
                        media.append(_section(section, m_conn, m_attrs, m_other))
                    section = _m_line_fields(value)
                    m_conn, m_attrs, m_other = None, [], []
                elif section is not None:
                    if kind == "c":
                        if m_conn is not None:
                            # Several c= lines in a section are multicast layering; unused here.
                            m_other.append((kind, value))
                        else:
                            m_conn = Connection.parse(value)
                    elif kind == "a":
                        m_attrs.append(_parse_attribute(value))
                    elif kind in "ostuerpz":
                        raise ValueError(f"{kind}= is not allowed in a media section")
                    else:
                        m_other.append((kind, value))
                elif kind == "o":
                    if origin is not None:
                        raise ValueError("o= appears twice")
                    origin = Origin.parse(value)
                elif kind == "s":
                    if session_name is not None:
                        raise ValueError("s= appears twice")
                    session_name = value
                elif kind == "c":
                    if connection is not None:
                        raise ValueError("session-level c= appears twice")
                    connection = Connection.parse(value)
                elif kind == "t":
                    timing.append(value)
                elif kind == "a":
                    attributes.append(_parse_attribute(value))
                else:
                    other.append((kind, value))
            except ValueError as exc:
                raise ValueError(f"line {number}: {exc}") from None
        if section is not None:
            media.append(_section(section, m_conn, m_attrs, m_other))
        if origin is None:
            raise ValueError("no o= line")
        if session_name is None:
            raise ValueError("no s= line")
        return SessionDescription(
            origin=origin,
            session_name=session_name,
            connection=connection,
            timing=tuple(timing),
            attributes=tuple(attributes),
            media=tuple(media),
            other=tuple(other),
            version=version,
        )

    def serialize(self) -> bytes:
        """Return the SDP body: CRLF line ends, RFC 4566 line order, UTF-8."""
        lines = [f"v={self.version}", f"o={self.origin.serialize()}", f"s={self.session_name}"]
        ranked = _ranked(self.other, _SESSION_ORDER) if self.other else []
        lines += _other_lines(ranked, 0, 4)
        if self.connection is not None:
            lines.append(f"c={self.connection.serialize()}")
        lines += _other_lines(ranked, 4, 6)
        lines += [f"t={value}" for value in self.timing]
        lines += _other_lines(ranked, 6, _UNKNOWN_RANK + 1)
        lines += [f"a={attribute.serialize()}" for attribute in self.attributes]
        for media in self.media:
            lines += media.serialize_lines()
        if _FORBIDDEN.search("".join(lines)):  # one scan; the line is named only on failure
            for line in lines:
                _check_text(line, "SDP line")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    @property
    def direction(self) -> Direction | None:
        """The session-level direction attribute, if any."""
        for attribute in self.attributes:
            if attribute.value is None and attribute.name in _DIRECTIONS:
                return Direction(attribute.name)
        return None

    def media_direction(self, media: MediaDescription) -> Direction:
        """Direction of ``media``: media-level attribute, else session-level, else sendrecv."""
        return media.direction or self.direction or Direction.SENDRECV

    def media_connection(self, media: MediaDescription) -> Connection:
        """The ``c=`` that applies to ``media`` (ValueError if neither level has one)."""
        connection = media.connection or self.connection
        if connection is None:
            raise ValueError(f"m={media.media} has no c= line at media or session level")
        return connection


# -- negotiation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    """The result of an offer/answer exchange, from our side.

    Returned by :func:`answer_offer` (``sdp`` is the answer we send) and by
    :func:`accept_answer` (``sdp`` is the answer we received).
    """

    #: Encoding name as written in the SDP we answer or received, e.g. ``"PCMU"``.
    codec: str
    payload_type: int
    clock_rate: int
    #: RFC 4733 payload type agreed for DTMF, or None if the peer did not offer it.
    telephone_event_pt: int | None
    #: Where to send RTP: (host, port) from the peer's c= and m= lines.
    remote_rtp: tuple[str, int]
    #: Our direction: whether we send and receive on this stream.
    direction: Direction
    #: The peer will not receive our audio: it put the call on hold (sendonly, inactive or the
    #: RFC 2543 ``c=0.0.0.0``). The agent should stop talking.
    on_hold: bool
    #: The answer SDP body.
    sdp: bytes
    #: ``a=ptime`` the peer asked for (the packet duration it wants to receive), if any.
    remote_ptime: int | None = None
    #: SRTP suite and keys when the stream is RTP/SAVP (SDES), else None. Secret: never log it.
    srtp: SrtpParams | None = None

    def __init__(
        self,
        codec: str,
        payload_type: int,
        clock_rate: int,
        telephone_event_pt: int | None,
        remote_rtp: tuple[str, int],
        direction: Direction,
        on_hold: bool,
        sdp: bytes,
        remote_ptime: int | None = None,
        srtp: SrtpParams | None = None,
    ) -> None:
        object.__setattr__(self, "codec", codec)
        object.__setattr__(self, "payload_type", payload_type)
        object.__setattr__(self, "clock_rate", clock_rate)
        object.__setattr__(self, "telephone_event_pt", telephone_event_pt)
        object.__setattr__(self, "remote_rtp", remote_rtp)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "on_hold", on_hold)
        object.__setattr__(self, "sdp", sdp)
        object.__setattr__(self, "remote_ptime", remote_ptime)
        object.__setattr__(self, "srtp", srtp)

    def __repr__(self) -> str:
        # The SDP carries an SRTP key in its a=crypto line; the repr must not leak it.
        parts = []
        for item in fields(self):
            value = getattr(self, item.name)
            parts.append(f"{item.name}={redact_keys(value) if item.name == 'sdp' else value!r}")
        return f"Negotiated({', '.join(parts)})"


#: The name the offer/answer API was first specified with.
Answer = Negotiated


def _as_description(sdp: bytes | str | SessionDescription) -> SessionDescription:
    return sdp if isinstance(sdp, SessionDescription) else SessionDescription.parse(sdp)


def _pick_codec(media: MediaDescription, supported: Sequence[str]) -> RtpMap | None:
    wanted = _wanted(tuple(supported))
    for codec in media.codecs():
        if codec.encoding.upper() in wanted and (codec.channels is None or codec.channels == 1):
            return codec
    return None


@functools.lru_cache(maxsize=64)
def _wanted(supported: tuple[str, ...]) -> frozenset[str]:
    """The supported encoding names, upper-case (an edge answers with the same list each time)."""
    return frozenset(name.upper() for name in supported)


def _pick_telephone_event(media: MediaDescription, clock_rate: int) -> RtpMap | None:
    # RFC 4733 §2.1: events use the clock rate of the audio codec they go with.
    for codec in media.codecs():
        if codec.encoding.lower() == "telephone-event" and codec.clock_rate == clock_rate:
            return codec
    return None


def _remote_direction(session: SessionDescription, media: MediaDescription) -> Direction:
    direction = session.media_direction(media)
    if session.media_connection(media).is_hold_address:
        # RFC 3264 §8.4: c=0.0.0.0 is the RFC 2543 way to say "do not send to me".
        direction = direction.restricted(Direction.SENDONLY)
    return direction


def _local_origin(media_ip: str, session_id: int, session_version: int) -> Origin:
    connection = Connection.for_ip(media_ip)
    return Origin(
        username="byeline",
        session_id=session_id,
        session_version=session_version,
        address=connection.address,
        addrtype=connection.addrtype,
    )


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"media port must be 1-65535, got {port}")


def _pick_crypto(
    media: MediaDescription, suites: Sequence[str]
) -> tuple[SdesCrypto, SrtpKey] | None:
    # RFC 4568 §7.1.1: the offerer lists its lines in preference order; take the first we can run.
    allowed = set(suites)
    for line in media.sdes_crypto():
        if line.usable and line.suite in allowed:
            try:
                return line, line.srtp_key()
            except ValueError:
                continue  # a key of the wrong length or not base64: try the next line
    return None


def _local_key(suite_name: str, keys: Mapping[str, SrtpKey] | None) -> SrtpKey:
    key = keys.get(suite_name) if keys is not None else None
    if key is None:
        return SrtpKey.generate(suite_name)
    if key.suite.name != suite_name:
        raise ValueError(f"the key given for {suite_name} is a {key.suite.name} key")
    return key


def answer_offer(
    offer: bytes | str | SessionDescription,
    *,
    media_ip: str,
    media_port: int,
    supported: Sequence[str] = ("PCMU", "PCMA"),
    session_id: int,
    session_version: int,
    direction: Direction = Direction.SENDRECV,
    policy: MediaEncryption | str = MediaEncryption.DISABLE,
    crypto_suites: Sequence[str] = tuple(SUITES),
    srtp_keys: Mapping[str, SrtpKey] | None = None,
) -> Negotiated:
    """Answer an SDP offer (RFC 3264 §6).

    The first audio stream on RTP/AVP that has a codec in ``supported`` is accepted; the codec is
    the first of the offer's formats we support (the offerer's preference), plus telephone-event
    with the offerer's payload type when offered. Every other ``m=`` line is rejected with port 0.
    The answer mirrors the offered direction (sendonly → recvonly, inactive → inactive,
    ``c=0.0.0.0`` counts as hold), limited by ``direction``, our own wish (sendonly while we hold).

    ``policy`` (see :class:`MediaEncryption`) decides about SRTP. Under ``allow`` and ``require``
    an RTP/SAVP audio stream is accepted when one of its ``a=crypto`` lines (the first usable one,
    in the offer's order) has a suite in ``crypto_suites``; we answer with that line's tag and
    suite and our own key: the one in ``srtp_keys`` for the suite (a session keeps its key across
    re-INVITEs), else a new random one. Under ``allow`` an encrypted stream is preferred to a plain
    one when the offer has both; under ``require`` plain streams are not considered.

    Raises :class:`UnsupportedProfile` if audio is offered only with another profile (RTP/SAVP
    under ``disable``), :class:`EncryptionRequired` if ``require`` meets plain audio only,
    :class:`NoCommonCrypto` if no RTP/SAVP stream has a usable ``a=crypto`` line,
    :class:`NoCommonCodec` if no audio stream has a supported codec, ValueError if malformed.
    """
    _check_port(media_port)
    policy = _policy(policy)
    parsed = _as_description(offer)
    chosen_index: int | None = None
    codec: RtpMap | None = None
    chosen_crypto: tuple[SdesCrypto, SrtpKey] | None = None
    profiles: list[str] = []
    considered: list[MediaDescription] = []  # the audio streams whose codecs were looked at
    plain_refused = False  # RTP/AVP audio passed over because the policy requires SRTP
    crypto_refused: list[str] = []  # suites of RTP/SAVP audio we could not run
    fallback: tuple[int, RtpMap] | None = None  # a plain stream, if no encrypted one fits
    for index, media in enumerate(parsed.media):
        if media.media != "audio" or media.port == 0:
            continue
        proto = media.proto.upper()
        crypto: tuple[SdesCrypto, SrtpKey] | None = None
        if proto == PROFILE and policy is MediaEncryption.REQUIRE:
            plain_refused = True
            continue
        if proto == SAVP_PROFILE and policy is not MediaEncryption.DISABLE:
            crypto = _pick_crypto(media, crypto_suites)
            if crypto is None:
                crypto_refused += [line.suite for line in media.sdes_crypto()] or ["none"]
                continue
        elif proto != PROFILE:
            profiles.append(media.proto)
            continue
        considered.append(media)
        found = _pick_codec(media, supported)
        if found is None:
            continue
        if crypto is None and policy is MediaEncryption.ALLOW:
            # Keep looking: an encrypted stream further on is better than this plain one.
            fallback = fallback or (index, found)
            continue
        chosen_index, codec, chosen_crypto = index, found, crypto
        break
    if chosen_index is None and fallback is not None:
        chosen_index, codec = fallback
    if chosen_index is None or codec is None:
        # What was offered, named for the error only (not formatted on every answer).
        offered: list[str] = []
        for seen in considered:
            offered += [f"{c.encoding}/{c.clock_rate}" for c in seen.codecs()] or list(seen.formats)
        if crypto_refused and not offered:
            raise NoCommonCrypto(
                f"no usable SRTP crypto-suite: offered {', '.join(crypto_refused)}; "
                f"we support {', '.join(crypto_suites)} (inline key, no MKI)"
            )
        if plain_refused and not offered:
            raise EncryptionRequired(
                "the trunk requires SRTP (RTP/SAVP with a=crypto) but audio was offered "
                "as plain RTP/AVP"
            )
        if profiles and not offered:
            raise UnsupportedProfile(f"audio offered only with {', '.join(profiles)}, not RTP/AVP")
        if not offered:
            raise NoCommonCodec("the offer has no active audio stream")
        raise NoCommonCodec(
            f"no common codec: offered {', '.join(offered)}; we support {', '.join(supported)}"
        )
    media = parsed.media[chosen_index]
    event = _pick_telephone_event(media, codec.clock_rate)
    remote_direction = _remote_direction(parsed, media)
    ours = remote_direction.reversed().restricted(direction)
    connection = parsed.media_connection(media)

    formats = [str(codec.payload_type)]
    attributes = [Attribute("rtpmap", codec.serialize())]
    if event is not None:
        formats.append(str(event.payload_type))
        attributes += [
            Attribute("rtpmap", event.serialize()),
            Attribute("fmtp", f"{event.payload_type} {TELEPHONE_EVENTS}"),
        ]
    attributes += [Attribute("ptime", str(PTIME)), Attribute(str(ours))]
    srtp: SrtpParams | None = None
    if chosen_crypto is not None:
        # RFC 4568 §7.1.2: one line, with the tag and suite of the offer line we accept.
        line, remote_key = chosen_crypto
        local_key = _local_key(line.suite, srtp_keys)
        attributes.append(Attribute("crypto", SdesCrypto.for_key(line.tag, local_key).serialize()))
        srtp = SrtpParams(remote_key.suite, line.tag, local_key, remote_key)
    answer = _rendered_answer(
        parsed, chosen_index, media_ip, media_port, session_id, session_version, formats, attributes
    )
    if answer is None:
        answer = _answer_description(
            parsed,
            chosen_index,
            media_ip,
            media_port,
            session_id,
            session_version,
            formats,
            attributes,
        ).serialize()
    return Negotiated(
        codec=codec.encoding,
        payload_type=codec.payload_type,
        clock_rate=codec.clock_rate,
        telephone_event_pt=event.payload_type if event is not None else None,
        remote_rtp=(connection.host, media.port),
        direction=ours,
        on_hold=not remote_direction.receives,
        sdp=answer,
        remote_ptime=media.ptime,
        srtp=srtp,
    )


def _answer_description(
    offer: SessionDescription,
    chosen_index: int,
    media_ip: str,
    media_port: int,
    session_id: int,
    session_version: int,
    formats: list[str],
    attributes: list[Attribute],
) -> SessionDescription:
    """The answer to ``offer`` as a description: the stream at ``chosen_index`` accepted with
    ``formats`` and ``attributes``, every other ``m=`` line rejected."""
    answer_media: list[MediaDescription] = []
    for index, offered_media in enumerate(offer.media):
        if index == chosen_index:
            answer_media.append(
                MediaDescription(
                    media="audio",
                    port=media_port,
                    proto=offer.media[chosen_index].proto,
                    formats=tuple(formats),
                    attributes=tuple(attributes),
                )
            )
        else:
            # RFC 3264 §6: same number of m= lines; a rejected one has port 0 and keeps a format.
            answer_media.append(
                MediaDescription(
                    media=offered_media.media,
                    port=0,
                    proto=offered_media.proto,
                    formats=offered_media.formats[:1] or ("0",),
                )
            )
    return SessionDescription(
        origin=_local_origin(media_ip, session_id, session_version),
        session_name="byeline",
        connection=Connection.for_ip(media_ip),
        media=tuple(answer_media),
    )


def _rendered_answer(
    offer: SessionDescription,
    chosen_index: int,
    media_ip: str,
    media_port: int,
    session_id: int,
    session_version: int,
    formats: list[str],
    attributes: list[Attribute],
) -> bytes | None:
    """``_answer_description(...).serialize()`` written straight from its parts, the same bytes.

    An answer has one shape: no session-level attributes or other lines, one accepted stream
    without a ``c=`` of its own, the rejected ones bare. Its fields come from the parsed offer
    (blank-free by the parse) and from us; what the description's serialisation would still
    refuse (a NUL, CR or LF, a blank in a format or attribute name) is left to it: None then.
    Building the description and serialising it cost half the answer.
    """
    connection = _connection_for_ip(media_ip).serialize()
    lines = [
        "v=0",
        f"o=byeline {session_id} {session_version} {connection}",
        "s=byeline",
        f"c={connection}",
        "t=0 0",
    ]
    for index, offered_media in enumerate(offer.media):
        if index == chosen_index:
            fields = (offered_media.proto, *formats)
            if not _words(fields):
                return None
            lines.append(f"m=audio {media_port} {' '.join(fields)}")
            for attribute in attributes:
                name, value = attribute.name, attribute.value
                try:
                    _check_attribute_name(name)
                except ValueError:
                    return None
                lines.append(f"a={name}" if value is None else f"a={name}:{value}")
        else:
            fields = (offered_media.media, offered_media.proto, *offered_media.formats[:1])
            if not _words(fields):
                return None
            lines.append(f"m={fields[0]} 0 {fields[1]} {fields[2] if len(fields) > 2 else '0'}")
    text = "\r\n".join(lines) + "\r\n"
    # No CR, LF or NUL inside a line: only the line ends' own.
    if text.count("\r") != len(lines) or text.count("\n") != len(lines) or "\x00" in text:
        return None
    return text.encode("utf-8")


def _offer_description(
    media_ip: str,
    media_port: int,
    *,
    session_id: int,
    session_version: int,
    supported: Sequence[str],
    telephone_event_pt: int | None,
    direction: Direction,
    srtp: bool = False,
    crypto_suites: Sequence[str] = DEFAULT_OFFER_SUITES,
    srtp_keys: Mapping[str, SrtpKey] | None = None,
) -> SessionDescription:
    _check_port(media_port)
    formats: list[str] = []
    attributes: list[Attribute] = []
    for name in supported:
        pt = _STATIC_BY_NAME.get(name.upper())
        if pt is None:
            raise ValueError(f"cannot offer {name!r}: not a static payload type we know")
        _, rate = STATIC_PAYLOAD_TYPES[pt]
        formats.append(str(pt))
        attributes.append(Attribute("rtpmap", RtpMap(pt, name.upper(), rate).serialize()))
    if not formats:
        raise ValueError("at least one codec must be offered")
    if telephone_event_pt is not None:
        if not 96 <= telephone_event_pt <= 127:
            raise ValueError(
                f"telephone-event needs a dynamic payload type, not {telephone_event_pt}"
            )
        formats.append(str(telephone_event_pt))
        attributes += [
            Attribute("rtpmap", RtpMap(telephone_event_pt, "telephone-event", 8000).serialize()),
            Attribute("fmtp", f"{telephone_event_pt} {TELEPHONE_EVENTS}"),
        ]
    attributes += [Attribute("ptime", str(PTIME)), Attribute(str(direction))]
    if srtp:
        if not crypto_suites:
            raise ValueError("an SRTP offer needs at least one crypto-suite")
        for tag, name in enumerate(crypto_suites, start=1):
            suite_named(name)
            key = _local_key(name, srtp_keys)
            attributes.append(Attribute("crypto", SdesCrypto.for_key(tag, key).serialize()))
    return SessionDescription(
        origin=_local_origin(media_ip, session_id, session_version),
        session_name="byeline",
        connection=Connection.for_ip(media_ip),
        media=(
            MediaDescription(
                media="audio",
                port=media_port,
                proto=SAVP_PROFILE if srtp else PROFILE,
                formats=tuple(formats),
                attributes=tuple(attributes),
            ),
        ),
    )


def create_offer(
    media_ip: str,
    media_port: int,
    *,
    session_id: int,
    session_version: int,
    supported: Sequence[str] = ("PCMU", "PCMA"),
    telephone_event_pt: int | None = 101,
    direction: Direction = Direction.SENDRECV,
    srtp: bool = False,
    crypto_suites: Sequence[str] = DEFAULT_OFFER_SUITES,
    srtp_keys: Mapping[str, SrtpKey] | None = None,
) -> bytes:
    """Build our SDP offer: one audio stream, the ``supported`` codecs in order, telephone-event.

    Used for the late-offer case (INVITE without SDP: the offer goes in the 200 OK) and for our
    own re-INVITEs (``direction=SENDONLY`` to hold).

    With ``srtp`` the stream is RTP/SAVP with one ``a=crypto`` line per suite of
    ``crypto_suites`` (tags 1, 2, ...), each with our key for it from ``srtp_keys`` or a new
    random one; :func:`accept_answer` reads our keys back from this offer.
    """
    return _offer_description(
        media_ip,
        media_port,
        session_id=session_id,
        session_version=session_version,
        supported=supported,
        telephone_event_pt=telephone_event_pt,
        direction=direction,
        srtp=srtp,
        crypto_suites=crypto_suites,
        srtp_keys=srtp_keys,
    ).serialize()


def accept_answer(
    offer_we_sent: bytes | str | SessionDescription,
    answer: bytes | str | SessionDescription,
) -> Negotiated:
    """Read the peer's answer to our offer (RFC 3264 §7), e.g. the SDP in the ACK.

    The codec is the first of the answer's formats that we offered (the answerer's preference).
    For an RTP/SAVP offer the answer's ``a=crypto`` line picks one of ours by tag; our key comes
    from ``offer_we_sent``, the peer's from the answer, both in :attr:`Negotiated.srtp`.
    Raises :class:`NoCommonCodec` if the audio stream was rejected or carries none of our codecs,
    :class:`UnsupportedProfile` if the answer changed the profile, :class:`NoCommonCrypto` if an
    SRTP answer has no usable ``a=crypto`` line, ValueError if malformed or if the answer does not
    have one ``m=`` line per offered one.
    """
    ours = _as_description(offer_we_sent)
    theirs = _as_description(answer)
    if len(theirs.media) != len(ours.media):
        raise ValueError(
            f"answer has {len(theirs.media)} m= lines, the offer had {len(ours.media)}"
        )
    for our_media, their_media in zip(ours.media, theirs.media, strict=True):
        if our_media.media != "audio" or our_media.port == 0:
            continue
        if their_media.port == 0:
            raise NoCommonCodec("the answer rejected the audio stream")
        if their_media.proto.upper() != our_media.proto.upper():
            raise UnsupportedProfile(
                f"answer uses {their_media.proto} for an {our_media.proto} offer"
            )
        offered = [c.encoding for c in our_media.codecs() if c.encoding != "telephone-event"]
        codec = _pick_codec(their_media, offered)
        if codec is None:
            raise NoCommonCodec(f"the answer has none of the offered codecs {', '.join(offered)}")
        event = _pick_telephone_event(their_media, codec.clock_rate)
        if event is not None and _pick_telephone_event(our_media, codec.clock_rate) is None:
            event = None
        srtp = (
            _accepted_crypto(our_media, their_media)
            if our_media.proto.upper() == SAVP_PROFILE
            else None
        )
        remote_direction = _remote_direction(theirs, their_media)
        our_direction = (our_media.direction or ours.direction or Direction.SENDRECV).restricted(
            remote_direction.reversed()
        )
        return Negotiated(
            codec=codec.encoding,
            payload_type=codec.payload_type,
            clock_rate=codec.clock_rate,
            telephone_event_pt=event.payload_type if event is not None else None,
            remote_rtp=(theirs.media_connection(their_media).host, their_media.port),
            direction=our_direction,
            on_hold=not remote_direction.receives,
            sdp=theirs.serialize(),
            remote_ptime=their_media.ptime,
            srtp=srtp,
        )
    raise NoCommonCodec("our offer has no active audio stream")


def _accepted_crypto(our_media: MediaDescription, their_media: MediaDescription) -> SrtpParams:
    answered = their_media.sdes_crypto()
    if not answered:
        raise NoCommonCrypto("the answer to our RTP/SAVP offer has no valid a=crypto line")
    if len(answered) > 1:
        raise ValueError(f"the answer has {len(answered)} a=crypto lines, RFC 4568 allows one")
    line = answered[0]
    ours = {offered.tag: offered for offered in our_media.sdes_crypto()}
    mine = ours.get(line.tag)
    if mine is None:
        raise NoCommonCrypto(f"the answer's a=crypto tag {line.tag} is not one we offered")
    if line.suite != mine.suite:
        raise NoCommonCrypto(
            f"the answer's a=crypto:{line.tag} is {line.suite}, we offered {mine.suite}"
        )
    if not line.usable:
        raise NoCommonCrypto(
            f"the answer's a=crypto:{line.tag} uses MKI or session parameters we do not run"
        )
    remote_key = line.srtp_key()
    local_key = mine.srtp_key()
    return SrtpParams(local_key.suite, line.tag, local_key, remote_key)


# -- one dialog's media --------------------------------------------------------------------------


def _without_origin(sdp: bytes) -> list[bytes]:
    return [line for line in sdp.split(b"\r\n") if not line.startswith(b"o=")]


class MediaSession:
    """Our SDP side of one dialog: keeps ``o=`` session id and version across re-INVITEs.

    RFC 3264 §8: every SDP we send in the dialog has the same session id; the version goes up by
    one exactly when the SDP differs from the previous one we sent (a session refresh re-INVITE
    gets the same version back). :meth:`hold` and :meth:`resume` build our re-offers; while we
    hold, answers to the peer's offers stay sendonly.

    ``policy`` is the SRTP policy (:class:`MediaEncryption`); ``crypto_suites`` the suites we
    answer (default: all we support) and offer (default: the two AES_CM_128 ones). Our SRTP key
    for a suite is made once and kept for the whole dialog.
    """

    def __init__(
        self,
        media_ip: str,
        media_port: int,
        *,
        session_id: int | None = None,
        session_version: int = 0,
        supported: Sequence[str] = ("PCMU", "PCMA"),
        telephone_event_pt: int | None = 101,
        policy: MediaEncryption | str = MediaEncryption.DISABLE,
        crypto_suites: Sequence[str] | None = None,
    ) -> None:
        Connection.for_ip(media_ip)
        if session_id is None:
            # RFC 4566 §5.2 only asks for a unique number; random beats a clock here.
            session_id = int.from_bytes(random_bytes(6), "big")
        _check_port(media_port)
        self.media_ip = media_ip
        self.media_port = media_port
        self.session_id = session_id
        self.supported = tuple(supported)
        self.telephone_event_pt = telephone_event_pt
        self.policy = _policy(policy)
        """SRTP policy for answers; our own offers are RTP/SAVP only under ``require``."""
        self.crypto_suites = None if crypto_suites is None else tuple(crypto_suites)
        for name in self.crypto_suites or ():
            suite_named(name)
        # Our SRTP key per suite, fixed for the dialog: re-INVITEs and session refreshes keep
        # the same key (RFC 4568 §7.1.4 allows it), so our outbound SRTP never has to restart.
        self._srtp_keys: dict[str, SrtpKey] = {}
        self._version = session_version
        self._last_sent: bytes | None = None
        self._pending_offer: bytes | None = None
        self._holding = False
        #: The outcome of the last completed exchange, if any.
        self.negotiated: Negotiated | None = None

    @property
    def session_version(self) -> int:
        """The version in the ``o=`` line of the last SDP we sent (or will send first)."""
        return self._version

    @property
    def local_sdp(self) -> bytes | None:
        """The last SDP body we produced, offer or answer."""
        return self._last_sent

    @property
    def holding(self) -> bool:
        """Whether we have put the peer on hold (our last offer was sendonly)."""
        return self._holding

    def _stamp(self, build: Callable[[int], bytes]) -> bytes:
        sdp = build(self._version)
        if self._last_sent is not None and _without_origin(sdp) != _without_origin(self._last_sent):
            self._version += 1
            sdp = build(self._version)
        self._last_sent = sdp
        return sdp

    def answer(self, offer: bytes | str | SessionDescription) -> Negotiated:
        """Answer the peer's offer (initial INVITE or re-INVITE); see :func:`answer_offer`."""
        wish = Direction.SENDONLY if self._holding else Direction.SENDRECV
        result: list[Negotiated] = []

        def build(version: int) -> bytes:
            negotiated = answer_offer(
                offer,
                media_ip=self.media_ip,
                media_port=self.media_port,
                supported=self.supported,
                session_id=self.session_id,
                session_version=version,
                direction=wish,
                policy=self.policy,
                crypto_suites=self.crypto_suites or tuple(SUITES),
                srtp_keys=self._srtp_keys,
            )
            if negotiated.srtp is not None:
                self._srtp_keys.setdefault(negotiated.srtp.suite.name, negotiated.srtp.local_key)
            result[:] = [negotiated]
            return negotiated.sdp

        self._stamp(build)
        self._pending_offer = None
        self.negotiated = result[0]
        return result[0]

    def offer(self, direction: Direction = Direction.SENDRECV) -> bytes:
        """Our offer (late offer in a 200 OK, or our re-INVITE); the answer goes to
        :meth:`accept_answer`."""

        srtp = self.policy is MediaEncryption.REQUIRE
        suites = self.crypto_suites or DEFAULT_OFFER_SUITES
        if srtp:
            for name in suites:
                self._srtp_keys.setdefault(name, SrtpKey.generate(name))

        def build(version: int) -> bytes:
            return create_offer(
                self.media_ip,
                self.media_port,
                session_id=self.session_id,
                session_version=version,
                supported=self.supported,
                telephone_event_pt=self.telephone_event_pt,
                direction=direction,
                srtp=srtp,
                crypto_suites=suites,
                srtp_keys=self._srtp_keys,
            )

        self._pending_offer = self._stamp(build)
        return self._pending_offer

    def hold(self) -> bytes:
        """Offer to put the peer on hold (sendonly, RFC 3264 §8.4)."""
        self._holding = True
        return self.offer(Direction.SENDONLY)

    def resume(self) -> bytes:
        """Offer to take the peer off hold (sendrecv)."""
        self._holding = False
        return self.offer(Direction.SENDRECV)

    def accept_answer(self, answer: bytes | str | SessionDescription) -> Negotiated:
        """Read the peer's answer to our last offer; see :func:`accept_answer`."""
        if self._pending_offer is None:
            raise ValueError("no offer of ours is waiting for an answer")
        result = accept_answer(self._pending_offer, answer)
        if result.srtp is None and self.policy is MediaEncryption.REQUIRE:
            raise EncryptionRequired("the peer answered our SRTP offer with plain RTP")
        self._pending_offer = None
        self.negotiated = result
        return result
