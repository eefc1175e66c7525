"""SIP grammar pieces (RFC 3261 §25) as compiled regular expressions.

Like h11's ``_abnf.py``: one place for the ABNF, so the parser and the
header guard on the way out agree on what a token or a header value is.
"""

from __future__ import annotations

import re
from typing import Final

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS: Final = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN: Final = re.compile(rf"[{TOKEN_CHARS}]+")

# Method = INVITEm / ACKm / ... / extension-method ; extension-method = token
METHOD: Final = TOKEN

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT  (case-insensitive per RFC 3261 §7.1).
# DIGIT is ASCII only: ``\d`` would also take Arabic-Indic and other Unicode digits.
SIP_VERSION: Final = re.compile(r"SIP/([0-9]+)\.([0-9]+)", re.IGNORECASE)

# Request-Line = Method SP Request-URI SP SIP-Version.  Runs of SP between the
# elements and trailing SP are tolerated (RFC 4475 §3.1.2.9, §3.1.2.10 allow it);
# :func:`split_request_line` does the split without a backtracking regex (a
# request line may be 64 KiB of spaces), and the Request-URI is checked on its own
# (REQUEST_URI) so that a bad one is still a request that can be answered with 400.
REQUEST_LINE: Final = re.compile(rf"([{TOKEN_CHARS}]+) (\S+) (SIP/[0-9]+\.[0-9]+)", re.IGNORECASE)

# Request-URI = SIP-URI / SIPS-URI / absoluteURI: a scheme, a colon, no whitespace
# (RFC 4475 §3.1.2.7 "<sip:...>" and §3.1.2.8 embedded LWS are refused).
REQUEST_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>]+")

# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase; exactly three
# digits (RFC 4475 §3.1.2.19: "4294967301" is not 429 with reason "4967301").
# A missing SP before an empty reason is tolerated.
STATUS_LINE: Final = re.compile(r"(SIP/[0-9]+\.[0-9]+) ([0-9]{3})(?: (.*))?", re.IGNORECASE)

# message-header: header-name HCOLON header-value; HCOLON = *( SP / HTAB ) ":" SWS
HEADER_LINE: Final = re.compile(rf"([{TOKEN_CHARS}]+)[ \t]*:[ \t]*(.*)", re.DOTALL)

# What may never appear inside a header value we put on the wire: CR and LF would
# split the message (header injection), NUL and the other C0 controls and DEL are
# refused by every sane SIP stack. HTAB is legal whitespace in SIP (LWS).
FORBIDDEN_IN_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# The magic cookie that marks an RFC 3261 branch (§8.1.1.7).
BRANCH_COOKIE: Final = "z9hG4bK"


def is_token(value: str) -> bool:
    """True when ``value`` is an RFC 3261 token (a valid header name or method)."""
    return TOKEN.fullmatch(value) is not None


_KNOWN_TOKENS: Final[set[str]] = set()
_KNOWN_URIS: Final[set[str]] = set()
_KNOWN_LIMIT: Final = 4096  # entries each set may hold; what comes after is checked every time
_KNOWN_LENGTH: Final = 256  # the longest string the sets keep


def _matches_remembered(pattern: re.Pattern[str], known: set[str], value: str) -> bool:
    """``pattern.fullmatch(value)``, remembering the values that matched in ``known``."""
    if value in known:
        return True
    if pattern.fullmatch(value) is None:
        return False
    if len(known) < _KNOWN_LIMIT and len(value) <= _KNOWN_LENGTH:
        known.add(value)
    return True


def is_known_token(value: str) -> bool:
    """:func:`is_token`, remembering the tokens met (methods and header names repeat on
    every message; the regular expression is the dearer part of a short check)."""
    return _matches_remembered(TOKEN, _KNOWN_TOKENS, value)


def is_request_uri(value: str) -> bool:
    """Whether ``value`` matches :data:`REQUEST_URI`, remembering the URIs met (a trunk's
    calls share the few numbers it serves, and in-dialog requests our Contact)."""
    return _matches_remembered(REQUEST_URI, _KNOWN_URIS, value)


def split_request_line(line: str) -> tuple[str, str, str] | None:
    """``(method, request_uri, version)`` of a request line, or None if it is not one.

    The Request-URI is returned as found between method and version (outer SP
    removed); it may still be malformed: check it with :data:`REQUEST_URI`.
    """
    parts = line.rstrip(" ").split(" ")
    version = parts[-1]
    if (
        len(parts) < 3
        or not is_known_token(parts[0])
        or (version != "SIP/2.0" and SIP_VERSION.fullmatch(version) is None)
    ):
        return None
    uri = " ".join(parts[1:-1]).strip(" ")
    return (parts[0], uri, parts[-1]) if uri else None
