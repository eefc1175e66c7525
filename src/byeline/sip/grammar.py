"""SIP grammar pieces (RFC 3261 §25) as compiled regular expressions.

Like h11's ``_abnf.py``: one place for the ABNF, so the parser and the
header guard on the way out agree on what a token or a header value is.
"""

from __future__ import annotations

import re

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = re.compile(rf"[{TOKEN_CHARS}]+")

# Method = INVITEm / ACKm / ... / extension-method ; extension-method = token
METHOD = TOKEN

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT  (case-insensitive per RFC 3261 §7.1)
SIP_VERSION = re.compile(r"SIP/(\d+)\.(\d+)", re.IGNORECASE)

# Request-Line = Method SP Request-URI SP SIP-Version
REQUEST_LINE = re.compile(rf"([{TOKEN_CHARS}]+) (\S+) (SIP/\d+\.\d+)", re.IGNORECASE)

# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
STATUS_LINE = re.compile(r"(SIP/\d+\.\d+) (\d{3}) ?(.*)", re.IGNORECASE)

# message-header: header-name HCOLON header-value; HCOLON = *( SP / HTAB ) ":" SWS
HEADER_LINE = re.compile(rf"([{TOKEN_CHARS}]+)[ \t]*:[ \t]*(.*)", re.DOTALL)

# What may never appear inside a header value we put on the wire: CR and LF would
# split the message (header injection), NUL and the other C0 controls and DEL are
# refused by every sane SIP stack. HTAB is legal whitespace in SIP (LWS).
FORBIDDEN_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# The magic cookie that marks an RFC 3261 branch (§8.1.1.7).
BRANCH_COOKIE = "z9hG4bK"


def is_token(value: str) -> bool:
    """True when ``value`` is an RFC 3261 token (a valid header name or method)."""
    return TOKEN.fullmatch(value) is not None
