"""HTTP Digest authentication as SIP uses it (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Sans-I/O: the server side (:class:`DigestChallenger`) takes the current time as an argument and
keeps no per-challenge table. A nonce is ``base64url(timestamp ‖ random ‖ HMAC(secret, ...))``
so any worker holding the secret can check it; the only state is a bounded LRU of the highest
nonce-count seen per nonce, which is what replay protection for ``qop=auth`` needs.

The client side (:func:`answer_challenge`) builds an ``Authorization`` value from a
``WWW-Authenticate`` value; the Five9 simulator and the tests use it.

Header values are parsed here rather than with ``sipmessage.AuthChallenge``: that parser splits on
every comma, so ``qop="auth,auth-int"`` (RFC 2617's own example) is refused.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ALGORITHMS",
    "DigestChallenge",
    "DigestChallenger",
    "DigestCredentials",
    "Verdict",
    "Verification",
    "answer_challenge",
    "digest_response",
    "parse_auth_header",
    "select_challenge",
]

_HASHES: Final[dict[str, Callable[[bytes], str]]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}

#: Algorithm names we can compute, canonical spelling, strongest first (RFC 8760 §2.4 order).
ALGORITHMS: Final[tuple[str, ...]] = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
_CANONICAL: Final = {name.upper(): name for name in ALGORITHMS}

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# An unquoted parameter value. Stricter grammars say token; real peers put base64 ('/', '=')
# and URIs (':', '@') unquoted, so anything but separators and controls is taken.
_BARE_VALUE: Final = re.compile(r"[^\x00-\x20\x7f\",]+")
_WS: Final = " \t"
_NC: Final = re.compile(r"[0-9A-Fa-f]{8}")


def _canonical_algorithm(name: str) -> str:
    try:
        return _CANONICAL[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {name!r}") from None


def _unfold(value: str) -> str:
    # RFC 3261 §7.3.1: a CRLF followed by whitespace is linear white space.
    return re.sub(r"\r?\n(?=[ \t])", " ", value)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string whose opening DQUOTE is at ``text[pos]``; return (value, next pos)."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            if pos + 1 >= len(text):
                break
            escaped = text[pos + 1]
            if escaped in "\r\n":
                raise ValueError("quoted-pair escapes CR or LF")
            out.append(escaped)
            pos += 2
            continue
        if (ord(char) < 0x20 and char != "\t") or char == "\x7f":
            raise ValueError(f"control character {char!r} inside quoted string")
        out.append(char)
        pos += 1
    raise ValueError("unterminated quoted string")


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Parse a ``WWW-Authenticate`` / ``Authorization`` value into (scheme, parameters).

    Parameter names are lower-cased (they are case-insensitive); quoted values are unescaped.
    Raises ValueError on anything that is not ``scheme LWS param *(COMMA param)``, on duplicate
    parameters and on control characters.
    """
    text = _unfold(value).strip(_WS)
    match = _TOKEN.match(text)
    if match is None:
        raise ValueError("authentication header does not start with a scheme token")
    scheme = match.group()
    pos = match.end()
    if pos < len(text) and text[pos] not in _WS:
        raise ValueError(f"unexpected {text[pos]!r} after scheme {scheme!r}")
    params: dict[str, str] = {}
    pos = _skip_ws(text, pos)
    expect_param = True
    while pos < len(text):
        if text[pos] == ",":
            # RFC 7230 §7 list rule: empty elements are tolerated.
            pos = _skip_ws(text, pos + 1)
            expect_param = True
            continue
        if not expect_param:
            raise ValueError(f"expected ',' between parameters at offset {pos}")
        name_match = _TOKEN.match(text, pos)
        if name_match is None:
            raise ValueError(f"expected a parameter name at offset {pos}")
        name = name_match.group().lower()
        pos = _skip_ws(text, name_match.end())
        if pos >= len(text) or text[pos] != "=":
            raise ValueError(f"parameter {name!r} has no '='")
        pos = _skip_ws(text, pos + 1)
        if pos < len(text) and text[pos] == '"':
            param_value, pos = _read_quoted(text, pos)
        else:
            value_match = _BARE_VALUE.match(text, pos)
            if value_match is None:
                raise ValueError(f"parameter {name!r} has no value")
            param_value = value_match.group()
            pos = value_match.end()
        if name in params:
            raise ValueError(f"parameter {name!r} appears twice")
        params[name] = param_value
        pos = _skip_ws(text, pos)
        expect_param = False
    if not params:
        raise ValueError(f"{scheme} header has no parameters")
    return scheme, params


def _quote(value: str) -> str:
    if any(char in value for char in "\r\n\x00"):
        raise ValueError(f"CR, LF or NUL in a digest parameter value: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _require(params: Mapping[str, str], name: str, what: str) -> str:
    try:
        return params[name]
    except KeyError:
        raise ValueError(f"{what} lacks the {name} parameter") from None


def _check_digest_scheme(scheme: str, what: str) -> None:
    if scheme.lower() != "digest":
        raise ValueError(f"{what} uses scheme {scheme!r}, not Digest")


@dataclass(frozen=True)
class DigestChallenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    #: Whether the algorithm parameter was present (RFC 2617 clients must echo what they got).
    algorithm_given: bool = True

    @classmethod
    def parse(cls, value: str) -> DigestChallenge:
        """Parse a header value; ValueError if it is malformed or not a Digest challenge."""
        scheme, params = parse_auth_header(value)
        _check_digest_scheme(scheme, "challenge")
        algorithm = params.get("algorithm")
        qop = tuple(item.strip(_WS) for item in params.get("qop", "").split(",") if item.strip())
        return cls(
            realm=_require(params, "realm", "challenge"),
            nonce=_require(params, "nonce", "challenge"),
            algorithm=_canonical_algorithm(algorithm) if algorithm is not None else "MD5",
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
            algorithm_given=algorithm is not None,
        )

    def serialize(self) -> str:
        """Return the header value, e.g. ``Digest realm="...", nonce="...", ...``."""
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        if self.algorithm_given:
            parts.append(f"algorithm={_canonical_algorithm(self.algorithm)}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True)
class DigestCredentials:
    """The Digest parameters of an ``Authorization`` / ``Proxy-Authorization`` value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    cnonce: str | None = None
    nc: str | None = None
    opaque: str | None = None
    algorithm_given: bool = True

    @classmethod
    def parse(cls, value: str) -> DigestCredentials:
        """Parse a header value; ValueError if malformed, not Digest, or internally inconsistent.

        ``username*`` and ``userhash=true`` (RFC 7616 §3.4.4) are refused: SIP peers do not use
        them and accepting them half-way would only hide a wrong user name.
        """
        scheme, params = parse_auth_header(value)
        _check_digest_scheme(scheme, "credentials")
        if "username*" in params:
            raise ValueError("username* (RFC 7616 encoded user name) is not supported")
        if params.get("userhash", "false").lower() != "false":
            raise ValueError("userhash is not supported")
        algorithm = params.get("algorithm")
        qop = params.get("qop")
        cnonce = params.get("cnonce")
        nc = params.get("nc")
        if qop is not None:
            if cnonce is None or nc is None:
                raise ValueError(f"qop={qop} credentials need both cnonce and nc")
            if not _NC.fullmatch(nc):
                raise ValueError(f"nc must be 8 hexadecimal digits, got {nc!r}")
        elif nc is not None:
            raise ValueError("nc given without qop")
        canonical = _canonical_algorithm(algorithm) if algorithm is not None else "MD5"
        if canonical.endswith("-sess") and cnonce is None:
            raise ValueError(f"algorithm {canonical} needs a cnonce")
        return cls(
            username=_require(params, "username", "credentials"),
            realm=_require(params, "realm", "credentials"),
            nonce=_require(params, "nonce", "credentials"),
            uri=_require(params, "uri", "credentials"),
            response=_require(params, "response", "credentials"),
            algorithm=canonical,
            qop=qop,
            cnonce=cnonce,
            nc=nc,
            opaque=params.get("opaque"),
            algorithm_given=algorithm is not None,
        )

    def serialize(self) -> str:
        """Return the header value, e.g. ``Digest username="...", realm="...", ...``."""
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
        ]
        if self.algorithm_given:
            parts.append(f"algorithm={_canonical_algorithm(self.algorithm)}")
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            if not _TOKEN.fullmatch(self.qop):
                raise ValueError(f"qop must be a token, got {self.qop!r}")
            if self.nc is None or not _NC.fullmatch(self.nc):
                raise ValueError(f"nc must be 8 hexadecimal digits, got {self.nc!r}")
            parts.append(f"qop={self.qop}")
            parts.append(f"nc={self.nc}")
        return "Digest " + ", ".join(parts)


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """Compute the ``response`` value (RFC 2617 §3.2.2, RFC 7616 §3.4.1) as lower-case hex.

    ``qop`` is ``"auth"`` or None (RFC 2069 compatibility); ``auth-int`` is refused because SIP
    peers do not use it and it would need the message body here.
    """
    canonical = _canonical_algorithm(algorithm)
    hash_hex = _HASHES[canonical.removesuffix("-sess")]

    def h(*parts: str) -> str:
        return hash_hex(":".join(parts).encode("utf-8"))

    ha1 = h(username, realm, password)
    if canonical.endswith("-sess"):
        if cnonce is None:
            raise ValueError(f"algorithm {canonical} needs a cnonce")
        ha1 = h(ha1, nonce, cnonce)
    ha2 = h(method, uri)
    if qop is None:
        return h(ha1, nonce, ha2)
    if qop != "auth":
        raise ValueError(f"unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise ValueError("qop=auth needs nc and cnonce")
    return h(ha1, nonce, nc, cnonce, qop, ha2)


def select_challenge(values: Iterable[str]) -> DigestChallenge:
    """Pick the strongest Digest challenge we can answer among several header values.

    RFC 8760 §2.4: a server lists its preferred algorithm first, and the client uses the first
    one it supports; here SHA-256 beats MD5 whatever the order. Unparsable values are skipped.
    """
    best: DigestChallenge | None = None
    for value in values:
        try:
            challenge = DigestChallenge.parse(value)
        except ValueError:
            continue
        if best is None or ALGORITHMS.index(challenge.algorithm) < ALGORITHMS.index(best.algorithm):
            best = challenge
    if best is None:
        raise ValueError("no Digest challenge with an algorithm we support")
    return best


def answer_challenge(
    challenge: str | DigestChallenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str | None = None,
    nc: int = 1,
) -> str:
    """Answer a ``WWW-Authenticate`` value: return the ``Authorization`` header value.

    Uses ``qop=auth`` when offered, the RFC 2069 form when the challenge has no qop, and refuses
    (ValueError) a challenge that offers only ``auth-int``. ``cnonce`` defaults to 16 random bytes
    in hex; pass one for reproducible output.
    """
    parsed = (
        challenge if isinstance(challenge, DigestChallenge) else DigestChallenge.parse(challenge)
    )
    if not 1 <= nc <= 0xFFFFFFFF:
        raise ValueError(f"nc must be between 1 and 0xffffffff, got {nc}")
    qop: str | None = None
    if parsed.qop:
        if "auth" not in parsed.qop:
            raise ValueError(f"challenge offers qop {','.join(parsed.qop)!r}, not auth")
        qop = "auth"
    sess = parsed.algorithm.endswith("-sess")
    if cnonce is None and (qop is not None or sess):
        cnonce = os.urandom(16).hex()
    nc_text = f"{nc:08x}" if qop is not None else None
    response = digest_response(
        algorithm=parsed.algorithm,
        username=username,
        realm=parsed.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=parsed.nonce,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
    )
    credentials = DigestCredentials(
        username=username,
        realm=parsed.realm,
        nonce=parsed.nonce,
        uri=uri,
        response=response,
        algorithm=parsed.algorithm,
        qop=qop,
        cnonce=cnonce if (qop is not None or sess) else None,
        nc=nc_text,
        opaque=parsed.opaque,
        algorithm_given=parsed.algorithm_given,
    )
    return credentials.serialize()


class Verdict(enum.Enum):
    """Outcome of :meth:`DigestChallenger.verify`."""

    #: Credentials are right: let the request through.
    OK = "ok"
    #: Right password on a nonce we issued that has expired: re-challenge with ``stale=true``.
    STALE = "stale"
    #: Anything else: re-challenge (or 403 after repeated failures).
    BAD = "bad"


@dataclass(frozen=True)
class Verification:
    """A :class:`Verdict` plus a reason for the log (never send the reason to the peer)."""

    verdict: Verdict
    reason: str

    @property
    def ok(self) -> bool:
        """True when the verdict is :attr:`Verdict.OK`."""
        return self.verdict is Verdict.OK


_TIMESTAMP: Final = struct.Struct(">q")  # milliseconds, signed: callers may use a monotonic clock
_NONCE_RANDOM: Final = 12
_NONCE_MAC: Final = 16
_NONCE_LENGTH: Final = _TIMESTAMP.size + _NONCE_RANDOM + _NONCE_MAC


class DigestChallenger:
    """Server side of Digest: issues challenges and verifies credentials for one realm.

    ``now`` is seconds on any clock the caller keeps consistent (``time.time()`` if the secret is
    shared across restarts or processes). A nonce is accepted for ``nonce_ttl`` seconds; after
    that, correct credentials get :attr:`Verdict.STALE`.

    Replay protection: for ``qop=auth`` each nonce-count must exceed the highest one already
    accepted for that nonce. The table is an LRU of ``max_nonces`` entries; when an entry is
    evicted, every nonce issued at or before it is answered STALE if it comes back unknown, so
    eviction never reopens a replay window. RFC 2069 responses (no qop) carry no count and are
    replayable within the nonce lifetime; that is inherent to the legacy form.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300,
        *,
        max_nonces: int = 4096,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("digest secret must be at least 16 bytes")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        if max_nonces < 1:
            raise ValueError("max_nonces must be at least 1")
        _quote(realm)
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self._secret = secret
        self._random = random
        self._max_nonces = max_nonces
        self._highest_nc: OrderedDict[str, int] = OrderedDict()
        self._evicted_up_to: int | None = None

    # -- nonces -----------------------------------------------------------------------------

    def _mac(self, body: bytes) -> bytes:
        message = body + self.realm.encode("utf-8")
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_NONCE_MAC]

    def make_nonce(self, now: float) -> str:
        """Return a fresh signed nonce for time ``now``."""
        body = _TIMESTAMP.pack(round(now * 1000)) + self._random(_NONCE_RANDOM)
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii")

    def _nonce_issued_ms(self, nonce: str) -> int | None:
        """Issue time in ms if the nonce is ours (well-formed and correctly signed), else None."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None
        # b64decode skips characters outside the alphabet; insist on the canonical spelling so
        # one nonce cannot be respelled into a fresh key of the nonce-count table.
        if len(raw) != _NONCE_LENGTH or base64.urlsafe_b64encode(raw).decode() != nonce:
            return None
        body, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        issued: int = _TIMESTAMP.unpack(body[: _TIMESTAMP.size])[0]
        return issued

    # -- challenge --------------------------------------------------------------------------

    def challenge(
        self,
        now: float,
        stale: bool = False,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
    ) -> list[str]:
        """Return ``WWW-Authenticate`` values, one per algorithm in the given order, same nonce.

        RFC 8760 §2.4: the server lists the algorithms it prefers first; SHA-256 first by
        default, MD5 after it because most SIP phones and trunks still only do MD5.
        """
        nonce = self.make_nonce(now)
        values = [
            DigestChallenge(
                realm=self.realm,
                nonce=nonce,
                algorithm=_canonical_algorithm(algorithm),
                qop=("auth",),
                stale=stale,
            ).serialize()
            for algorithm in algorithms
        ]
        if not values:
            raise ValueError("at least one algorithm is needed")
        return values

    # -- verify -----------------------------------------------------------------------------

    def verify(
        self,
        method: str,
        credentials: str,
        username: str,
        password: str,
        now: float,
        *,
        request_uri: str | None = None,
    ) -> Verification:
        """Check an ``Authorization`` value for a request of ``method``.

        ``username``/``password`` are the account the caller looked up (typically from
        :meth:`DigestCredentials.parse` on the same value). With ``request_uri``, the ``uri``
        parameter must equal it exactly (RFC 2617 §3.2.2.5); leave it None behind proxies that
        rewrite the Request-URI. Never raises on peer input.
        """

        def bad(reason: str) -> Verification:
            return Verification(Verdict.BAD, reason)

        try:
            parsed = DigestCredentials.parse(credentials)
        except ValueError as exc:
            return bad(f"malformed credentials: {exc}")
        if parsed.realm != self.realm:
            return bad(f"realm {parsed.realm!r} is not ours ({self.realm!r})")
        if parsed.username != username:
            return bad(f"username {parsed.username!r} does not match account {username!r}")
        if request_uri is not None and parsed.uri != request_uri:
            return bad(f"uri {parsed.uri!r} is not the Request-URI {request_uri!r}")
        issued_ms = self._nonce_issued_ms(parsed.nonce)
        if issued_ms is None:
            return bad("nonce was not issued by us")
        nc_value = int(parsed.nc, 16) if parsed.nc is not None else None
        try:
            expected = digest_response(
                algorithm=parsed.algorithm,
                username=parsed.username,
                realm=self.realm,
                password=password,
                method=method,
                uri=parsed.uri,
                nonce=parsed.nonce,
                qop=parsed.qop,
                nc=parsed.nc,
                cnonce=parsed.cnonce,
            )
        except ValueError as exc:
            return bad(str(exc))
        if not hmac.compare_digest(expected.encode("ascii"), parsed.response.lower().encode()):
            return bad("wrong response (password or request does not match)")
        # RFC 2617 §3.2.1: stale only when the digest is valid, so a wrong password on an
        # old nonce is BAD and does not make the client silently retry.
        if (now * 1000 - issued_ms) > self.nonce_ttl * 1000:
            return Verification(Verdict.STALE, "nonce expired")
        if nc_value is None:
            return Verification(Verdict.OK, "ok (RFC 2069 response without qop)")
        seen = self._highest_nc.get(parsed.nonce)
        if seen is None and self._evicted_up_to is not None and issued_ms <= self._evicted_up_to:
            return Verification(Verdict.STALE, "nonce-count state for this nonce was evicted")
        if seen is not None and nc_value <= seen:
            return bad(f"replayed nonce-count {nc_value} (highest seen {seen})")
        self._remember(parsed.nonce, nc_value, issued_ms)
        return Verification(Verdict.OK, "ok")

    def _remember(self, nonce: str, nc: int, issued_ms: int) -> None:
        self._highest_nc[nonce] = nc
        self._highest_nc.move_to_end(nonce)
        while len(self._highest_nc) > self._max_nonces:
            evicted, _ = self._highest_nc.popitem(last=False)
            evicted_ms = self._nonce_issued_ms(evicted)
            if evicted_ms is not None and (
                self._evicted_up_to is None or evicted_ms > self._evicted_up_to
            ):
                self._evicted_up_to = evicted_ms
