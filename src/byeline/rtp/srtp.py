"""SRTP (RFC 3711) keyed by SDES (RFC 4568): the crypto of one call's media, without I/O.

The cipher work is libsrtp's, through ``pylibsrtp`` (which ships libsrtp in its wheel); this module
adds what a SIP edge needs around it:

- :class:`SrtpSuite` and :data:`SUITES`: the SDES crypto-suites we can run, with their key sizes;
- :class:`SrtpKey`: the master key and salt of one direction, to and from the base64 ``inline:``
  key of an ``a=crypto`` line, and freshly generated for our side;
- :class:`SdesCrypto`: one ``a=crypto`` attribute value, parsed and written;
- :class:`SrtpParams`: the outcome of SDES negotiation (suite, tag, both keys), as SDP hands it on;
- :class:`SrtpSession` (one direction) and :class:`SrtpContext` (a call: outbound protects with
  our key, inbound unprotects with the peer's key).

With SDES each side encrypts what it sends with the key in its own ``a=crypto`` line, so our key
protects outbound RTP and the peer's key unprotects inbound RTP.

Keys are secrets: no ``repr``, ``str`` or exception message of this module shows key material.
Failures are :class:`SrtpError` (a ValueError), with :class:`SrtpAuthenticationError` for a packet
that does not authenticate (wrong key, tampering) and :class:`SrtpReplayError` for a replayed or
too old packet. libsrtp is imported on first use, so SDP code can parse ``a=crypto`` lines on a
machine without it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NoReturn

if TYPE_CHECKING:
    import pylibsrtp

__all__ = [
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
    "AES_CM_128_HMAC_SHA1_32",
    "AES_CM_128_HMAC_SHA1_80",
    "DEFAULT_OFFER_SUITES",
    "SUITES",
    "SdesCrypto",
    "SrtpAuthenticationError",
    "SrtpContext",
    "SrtpError",
    "SrtpKey",
    "SrtpParams",
    "SrtpReplayError",
    "SrtpSession",
    "SrtpSuite",
    "suite_named",
]


class SrtpError(ValueError):
    """A packet could not be protected or unprotected."""


class SrtpAuthenticationError(SrtpError):
    """The packet's authentication tag is wrong: tampered, or protected with another key."""


class SrtpReplayError(SrtpError):
    """The packet was seen already, or is older than the replay window (RFC 3711 §3.3.2)."""


@dataclass(frozen=True)
class SrtpSuite:
    """An SDES crypto-suite (RFC 4568 §6.2, RFC 7714 §12) and the libsrtp profile that runs it."""

    name: str
    key_length: int
    """Master key length in bytes."""
    salt_length: int
    """Master salt length in bytes."""
    tag_length: int
    """Bytes an SRTP packet grows by: the authentication tag (RFC 3711 §4.2)."""
    libsrtp_profile: str = field(repr=False)
    """Name of the ``pylibsrtp.Policy`` profile constant."""

    @property
    def master_length(self) -> int:
        """Length of the ``inline:`` key: master key followed by master salt."""
        return self.key_length + self.salt_length


AES_CM_128_HMAC_SHA1_80: Final = SrtpSuite(
    "AES_CM_128_HMAC_SHA1_80", 16, 14, 10, "SRTP_PROFILE_AES128_CM_SHA1_80"
)
AES_CM_128_HMAC_SHA1_32: Final = SrtpSuite(
    "AES_CM_128_HMAC_SHA1_32", 16, 14, 4, "SRTP_PROFILE_AES128_CM_SHA1_32"
)
AEAD_AES_128_GCM: Final = SrtpSuite("AEAD_AES_128_GCM", 16, 12, 16, "SRTP_PROFILE_AEAD_AES_128_GCM")
AEAD_AES_256_GCM: Final = SrtpSuite("AEAD_AES_256_GCM", 32, 12, 16, "SRTP_PROFILE_AEAD_AES_256_GCM")

#: Every suite we can answer, by SDES name (names are case-sensitive, RFC 4568 §9.2).
SUITES: Final[dict[str, SrtpSuite]] = {
    suite.name: suite
    for suite in (
        AES_CM_128_HMAC_SHA1_80,
        AES_CM_128_HMAC_SHA1_32,
        AEAD_AES_128_GCM,
        AEAD_AES_256_GCM,
    )
}

#: What we offer, in order: the two suites RFC 4568 makes mandatory, which every SBC knows.
DEFAULT_OFFER_SUITES: Final = (AES_CM_128_HMAC_SHA1_80.name, AES_CM_128_HMAC_SHA1_32.name)


def suite_named(name: str) -> SrtpSuite:
    """The suite called ``name`` (ValueError naming the supported ones if unknown)."""
    suite = SUITES.get(name)
    if suite is None:
        raise ValueError(f"unsupported SRTP crypto-suite {name!r}; supported: {', '.join(SUITES)}")
    return suite


@dataclass(frozen=True, eq=False)
class SrtpKey:
    """Master key and salt of one direction of one call. Never shown by ``repr``/``str``."""

    suite: SrtpSuite
    material: bytes = field(repr=False)
    """Master key followed by master salt (the decoded ``inline:`` key)."""

    def __post_init__(self) -> None:
        if not isinstance(self.material, bytes):
            raise TypeError("SRTP key material must be bytes")
        if len(self.material) != self.suite.master_length:
            raise ValueError(
                f"{self.suite.name} needs {self.suite.master_length} bytes of key and salt, "
                f"got {len(self.material)}"
            )

    @classmethod
    def generate(cls, suite: SrtpSuite | str) -> SrtpKey:
        """A fresh random key for our side (RFC 4568 §6.1: from a cryptographic source)."""
        suite = suite if isinstance(suite, SrtpSuite) else suite_named(suite)
        return cls(suite, os.urandom(suite.master_length))

    @classmethod
    def from_inline(cls, suite: SrtpSuite | str, key: str) -> SrtpKey:
        """Decode the base64 key||salt of an ``inline:`` key parameter (without ``inline:``)."""
        suite = suite if isinstance(suite, SrtpSuite) else suite_named(suite)
        try:
            # Some peers leave out the base64 padding (a 28-byte GCM key is 38 characters then).
            padded = key + "=" * (-len(key) % 4)
            material = base64.b64decode(padded.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            # The text itself is secret: say what is wrong, not what it is.
            raise ValueError(
                f"{suite.name} inline key is not valid base64 ({len(key)} characters)"
            ) from None
        return cls(suite, material)

    def inline(self) -> str:
        """The base64 key||salt for an ``inline:`` key parameter (RFC 4568 §6.1, with padding)."""
        return base64.b64encode(self.material).decode("ascii")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SrtpKey):
            return NotImplemented
        return self.suite == other.suite and hmac.compare_digest(self.material, other.material)

    def __hash__(self) -> int:
        return hash((self.suite.name, self.material))


# RFC 4568 §9.1:
#   a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]
#   tag        = 1*9DIGIT
#   key-params = key-param *(";" key-param)
#   key-param  = "inline:" key-info ; key-info = key-salt ["|" lifetime] ["|" mki]
#   lifetime   = ["2^"] 1*(DIGIT)
#   mki        = mki-value ":" mki-length
_CRYPTO = re.compile(r"([0-9]{1,9})[ \t]+([A-Za-z0-9_]+)[ \t]+(\S+)(?:[ \t]+(.*))?")
_LIFETIME = re.compile(r"(2\^)?([0-9]{1,20})")
_MKI = re.compile(r"([0-9]{1,20}):([0-9]{1,3})")


@dataclass(frozen=True)
class SdesCrypto:
    """One ``a=crypto`` value (RFC 4568 §9.1). The key is kept as written and never shown.

    Only what byeline can run is :attr:`usable`: a known suite, one ``inline:`` key with no MKI,
    no session parameters. The lifetime is parsed and kept; libsrtp's own key-usage limit applies.
    """

    tag: int
    suite: str
    key: str = field(repr=False)
    """The base64 key||salt as written, without ``inline:``."""
    lifetime: int | None = None
    """Packets the key may protect (``2^31`` is 2147483648), if given."""
    mki: tuple[int, int] | None = None
    """(MKI value, MKI length in bytes), if given."""
    extra_keys: int = 0
    """Further ``;inline:`` key parameters (only usable with MKI, which we do not run)."""
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> SdesCrypto:
        """Parse the text after ``a=crypto:`` (ValueError with what is wrong, never the key)."""
        match = _CRYPTO.fullmatch(value.strip())
        if match is None:
            raise ValueError("a=crypto must be '<tag> <crypto-suite> inline:<key>[ <params>]'")
        tag_text, suite, key_params, session_text = match.groups()
        params = key_params.split(";")
        method, colon, info = params[0].partition(":")
        if method != "inline" or not colon:
            raise ValueError(f"a=crypto:{tag_text} key method must be inline, not {method!r}")
        key, *extras = info.split("|")
        if not key:
            raise ValueError(f"a=crypto:{tag_text} has an empty inline key")
        lifetime: int | None = None
        mki: tuple[int, int] | None = None
        for extra in extras:
            if (found := _MKI.fullmatch(extra)) is not None and mki is None:
                mki = (int(found.group(1)), int(found.group(2)))
            elif (found := _LIFETIME.fullmatch(extra)) is not None and lifetime is None:
                number = int(found.group(2))
                if found.group(1):
                    if number > 64:
                        raise ValueError(f"a=crypto:{tag_text} lifetime 2^{number} is too large")
                    number = 2**number
                lifetime = number
            else:
                raise ValueError(f"a=crypto:{tag_text} has an unknown key parameter field")
        return cls(
            tag=int(tag_text),
            suite=suite,
            key=key,
            lifetime=lifetime,
            mki=mki,
            extra_keys=len(params) - 1,
            session_params=tuple(session_text.split()) if session_text else (),
        )

    @property
    def usable(self) -> bool:
        """Whether byeline can run this line: see the class docstring."""
        return (
            self.suite in SUITES
            and self.mki is None
            and self.extra_keys == 0
            and not self.session_params
        )

    def srtp_key(self) -> SrtpKey:
        """The decoded key (ValueError if the suite is unknown or the key malformed)."""
        return SrtpKey.from_inline(self.suite, self.key)

    @classmethod
    def for_key(cls, tag: int, key: SrtpKey) -> SdesCrypto:
        """Our own line for ``key`` with ``tag``."""
        if not 0 <= tag <= 999_999_999:
            raise ValueError(f"a=crypto tag must be 0-999999999, got {tag}")
        return cls(tag=tag, suite=key.suite.name, key=key.inline())

    def serialize(self) -> str:
        """The text after ``a=crypto:``."""
        info = self.key
        if self.lifetime is not None:
            info += f"|{self.lifetime}"
        if self.mki is not None:
            info += f"|{self.mki[0]}:{self.mki[1]}"
        text = f"{self.tag} {self.suite} inline:{info}"
        if self.session_params:
            text += " " + " ".join(self.session_params)
        return text


@dataclass(frozen=True)
class SrtpParams:
    """What SDES negotiated for a call: the suite, the ``a=crypto`` tag and both keys."""

    suite: SrtpSuite
    tag: int
    local_key: SrtpKey = field(repr=False)
    """Ours: protects what we send (it is in the SDP we sent)."""
    remote_key: SrtpKey = field(repr=False)
    """The peer's: unprotects what we receive (it is in the SDP we received)."""

    def context(self) -> SrtpContext:
        """A new SRTP context for the call's media."""
        return SrtpContext(self.local_key, self.remote_key)


# -- libsrtp ---------------------------------------------------------------------------------------


def _describe(packet: bytes, rtcp: bool) -> str:
    # Header fields help an operator match a failure to a capture; they are sent in clear anyway.
    if rtcp:
        if len(packet) >= 8:
            return f"SRTCP packet (SSRC {int.from_bytes(packet[4:8], 'big'):#010x})"
        return f"SRTCP packet of {len(packet)} bytes"
    if len(packet) >= 12:
        return (
            f"SRTP packet (SSRC {int.from_bytes(packet[8:12], 'big'):#010x}, "
            f"seq {int.from_bytes(packet[2:4], 'big')})"
        )
    return f"SRTP packet of {len(packet)} bytes"


def _fail(exc: Exception, action: str, packet: bytes, rtcp: bool) -> NoReturn:
    reason = str(exc)
    what = _describe(packet, rtcp)
    if reason == "authentication failure":
        raise SrtpAuthenticationError(
            f"cannot {action} {what}: authentication failed (wrong key or altered packet)"
        ) from None
    if reason.startswith("replay check failed"):
        raise SrtpReplayError(f"cannot {action} {what}: replayed or too old ({reason})") from None
    raise SrtpError(f"cannot {action} {what}: {reason}") from None


class SrtpSession:
    """One direction of SRTP for any SSRC: ``outbound`` protects, otherwise it unprotects.

    A wildcard SSRC policy lets the peer change SSRC mid-call (an SBC switching legs) with the same
    key, as RFC 4568 keys are per media stream, not per SSRC. Replay protection uses libsrtp's
    default window of 128 packets.
    """

    __slots__ = ("_key", "_session", "outbound", "suite")

    def __init__(self, key: SrtpKey, *, outbound: bool) -> None:
        import pylibsrtp

        policy = pylibsrtp.Policy(
            key=key.material,
            ssrc_type=(
                pylibsrtp.Policy.SSRC_ANY_OUTBOUND
                if outbound
                else pylibsrtp.Policy.SSRC_ANY_INBOUND
            ),
            srtp_profile=getattr(pylibsrtp.Policy, key.suite.libsrtp_profile),
        )
        self._session: pylibsrtp.Session = pylibsrtp.Session(policy)
        self.outbound = outbound
        self.suite = key.suite
        self._key = key

    def uses(self, key: SrtpKey) -> bool:
        """Whether this session runs with ``key`` (compared in constant time)."""
        return self._key == key

    def __repr__(self) -> str:
        direction = "outbound" if self.outbound else "inbound"
        return f"SrtpSession({self.suite.name}, {direction})"

    def protect(self, packet: bytes) -> bytes:
        """SRTP-protect one RTP packet (outbound sessions only)."""
        if not self.outbound:
            raise SrtpError("an inbound SRTP session cannot protect")
        try:
            return self._session.protect(packet)
        except Exception as exc:  # pylibsrtp.Error, or ValueError for a packet too long
            _fail(exc, "protect", packet, rtcp=False)

    def protect_rtcp(self, packet: bytes) -> bytes:
        """SRTCP-protect one RTCP packet (outbound sessions only)."""
        if not self.outbound:
            raise SrtpError("an inbound SRTP session cannot protect")
        try:
            return self._session.protect_rtcp(packet)
        except Exception as exc:
            _fail(exc, "protect", packet, rtcp=True)

    def unprotect(self, packet: bytes) -> bytes:
        """Verify and decrypt one SRTP packet (inbound sessions only)."""
        if self.outbound:
            raise SrtpError("an outbound SRTP session cannot unprotect")
        try:
            return self._session.unprotect(packet)
        except Exception as exc:
            _fail(exc, "unprotect", packet, rtcp=False)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """Verify and decrypt one SRTCP packet (inbound sessions only)."""
        if self.outbound:
            raise SrtpError("an outbound SRTP session cannot unprotect")
        try:
            return self._session.unprotect_rtcp(packet)
        except Exception as exc:
            _fail(exc, "unprotect", packet, rtcp=True)


class SrtpContext:
    """SRTP for one call: protect with ``local_key`` what we send, unprotect with ``remote_key``.

    Both keys must be of the same suite (SDES negotiates one suite per stream).
    """

    __slots__ = ("inbound", "outbound")

    def __init__(self, local_key: SrtpKey, remote_key: SrtpKey) -> None:
        if local_key.suite != remote_key.suite:
            raise ValueError(
                f"local key is {local_key.suite.name} but remote key is {remote_key.suite.name}"
            )
        self.outbound = SrtpSession(local_key, outbound=True)
        self.inbound = SrtpSession(remote_key, outbound=False)

    @classmethod
    def from_params(cls, params: SrtpParams) -> SrtpContext:
        """The context for what SDES negotiated."""
        return cls(params.local_key, params.remote_key)

    @property
    def suite(self) -> SrtpSuite:
        """The negotiated crypto-suite."""
        return self.outbound.suite

    def update(self, params: SrtpParams) -> None:
        """Take the keys of a later offer/answer (re-INVITE, session refresh).

        Only a direction whose key changed gets a new libsrtp session: the peer's unchanged key
        keeps its replay window, and our unchanged key keeps its rollover counter; restarting
        that one would repeat keystream after a sequence number wrap (RFC 3711 §9.1).
        """
        if not self.outbound.uses(params.local_key):
            self.outbound = SrtpSession(params.local_key, outbound=True)
        if not self.inbound.uses(params.remote_key):
            self.inbound = SrtpSession(params.remote_key, outbound=False)

    def __repr__(self) -> str:
        return f"SrtpContext({self.suite.name})"

    def protect(self, packet: bytes) -> bytes:
        """Protect an RTP packet we send (:class:`SrtpError` on failure)."""
        return self.outbound.protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Protect an RTCP packet we send."""
        return self.outbound.protect_rtcp(packet)

    def unprotect(self, packet: bytes) -> bytes:
        """Unprotect an SRTP packet we received: :class:`SrtpAuthenticationError` if it does not
        authenticate, :class:`SrtpReplayError` if replayed, :class:`SrtpError` otherwise."""
        return self.inbound.unprotect(packet)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """Unprotect an SRTCP packet we received."""
        return self.inbound.unprotect_rtcp(packet)
