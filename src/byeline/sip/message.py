"""SIP messages: parse bytes into requests and responses, serialize them back.

The framing and header-field layer is ours (it must handle folding, compact
forms, Content-Length and stream framing exactly as RFC 3261 §7 and §18.3 say);
structured header values (URIs, name-addr, Via) are parsed with ``sipmessage``
on demand.  Header values that we echo into responses (Via, From, To, Call-ID,
CSeq) are kept as the raw text we received, so a response matches its request
byte for byte where RFC 3261 §8.2.6.2 asks for it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, cast

from sipmessage import URI, Address, Via

from . import grammar

# RFC 3261 §7.3.3 and the IANA registry: compact form -> canonical name.
COMPACT_FORMS: Final = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Canonical spelling for the headers we read and write most; others keep the
# spelling they arrived with (X- header names are case-preserved for Five9).
_CANONICAL: Final = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Max-Forwards",
        "Route",
        "Record-Route",
        "Allow",
        "Supported",
        "Require",
        "Unsupported",
        "User-Agent",
        "Server",
        "WWW-Authenticate",
        "Authorization",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Retry-After",
        "Session-Expires",
        "Min-SE",
        "Event",
        "Reason",
        "Accept",
        "Expires",
        "Timestamp",
        "Refer-To",
        "Subject",
    )
}

MAX_MESSAGE_SIZE: Final = 65535
"""Largest message accepted on any transport (the UDP datagram limit)."""


class SipParseError(ValueError):
    """A message that cannot be parsed.

    ``partial`` holds what could be read of a request (start line and the
    headers before the fault) so the caller can still answer ``400`` when the
    headers needed to form a response (Via, From, To, Call-ID, CSeq) are there.
    ``status`` is the response code that fits (400, or 505 for a bad version).
    """

    def __init__(self, reason: str, partial: Request | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial
        self.status = status


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name, expanding compact forms."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and ``<...>``."""
    if "," not in value:
        stripped = value.strip(" \t")
        return [stripped] if stripped else []
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
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
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip(" \t"))
            start = i + 1
    parts.append(value[start:].strip(" \t"))
    return [p for p in parts if p]


_LINE_BREAK: Final = re.compile(r"[\r\n]")

# Linear white space is SP and HTAB only (RFC 3261 §25.1).  A bare ``str.strip()`` would also
# eat U+00A0, U+0085, U+2028 and the other Unicode spaces at the ends of a value, so the value
# read back would differ from the one on the wire.
_LWS: Final = " \t"
_TAG: Final = re.compile(r";\s*tag\s*=\s*([^;,\s>]+)", re.IGNORECASE)
_PARAM_BRANCH: Final = re.compile(r";\s*branch\s*=\s*([^;,\s]+)", re.IGNORECASE)


_CACHED_LENGTH: Final = (
    256  # the longest name or value the parse caches keep (their keys are wire text)
)
_KEYS: Final[dict[str, str]] = {}
_CANONICAL_NAMES: Final[dict[str, str]] = {}


def _key(name: str) -> str:
    """The lookup key of a header name: canonical spelling, lowercased (cached: names repeat)."""
    key = _KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_KEYS) < 4096 and len(name) <= _CACHED_LENGTH:
            _KEYS[name] = key
    return key


def _canonical(name: str) -> str:
    """:func:`canonical_name`, cached for the names met on the wire."""
    canonical = _CANONICAL_NAMES.get(name)
    if canonical is None:
        canonical = canonical_name(name)
        if len(_CANONICAL_NAMES) < 4096 and len(name) <= _CACHED_LENGTH:
            _CANONICAL_NAMES[name] = canonical
    return canonical


_NAME_FORMS: Final[dict[str, tuple[str, str]]] = {}


def _name_forms(name: str) -> tuple[str, str]:
    """The canonical spelling and lookup key of a header name read from the wire (a token),
    remembered under ``name`` as written, blanks before its colon included."""
    canonical = _canonical(name)
    forms = (canonical, canonical.lower())  # the key, as _key makes it
    if len(_NAME_FORMS) < 4096 and len(name) <= _CACHED_LENGTH:
        _NAME_FORMS[name] = forms
    return forms


def _index_line(
    index: dict[str, int], repeated: dict[str, list[int]] | None, key: str, position: int
) -> dict[str, list[int]] | None:
    """Record that line ``position`` has ``key``; returns ``repeated``, made at the first repeat."""
    first = index.get(key)
    if first is None:
        index[key] = position
        return repeated
    if repeated is None:
        repeated = {}
    repeated.setdefault(key, [first]).append(position)
    return repeated


class Headers:
    """An ordered multimap of header fields, matched case-insensitively.

    Each entry is one header line.  Names are stored canonical (compact forms
    expanded); the order of lines is kept, which RFC 3261 requires for Via and
    Route and which keeps our output stable.  A parallel list holds each line's
    lookup key, so a lookup compares strings and never re-lowercases names.
    """

    __slots__ = ("_index", "_items", "_keys", "_repeated", "memo")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(_canonical(n), v) for n, v in items]
        self._keys: list[str] = [_key(n) for n, _ in self._items]
        # The position of each name's first line, and every position of the names that have
        # more than one line.  Plain str -> int mappings hold no object the cyclic GC tracks,
        # which matters for the messages a call keeps until its transactions end.
        self._index: dict[str, int] | None = None
        self._repeated: dict[str, list[int]] | None = None
        self.memo: dict[str, object] = {}
        """Values derived from the headers (top Via, CSeq...), emptied by every change."""

    @staticmethod
    def _parsed(items: list[tuple[str, str]], keys: list[str]) -> Headers:
        # The parser's own lines and keys, adopted as they are (already canonical).
        h = Headers()
        h._items, h._keys = items, keys
        return h

    def _first_positions(self) -> dict[str, int]:
        # Built on the first lookup and kept until a line is replaced or removed: a
        # message is read many times (transaction keys, dialogs, records) and rarely changed.
        index = self._index
        if index is None:
            index = {}
            repeated: dict[str, list[int]] | None = None
            for i, k in enumerate(self._keys):
                repeated = _index_line(index, repeated, k, i)
            self._index, self._repeated = index, repeated
        return index

    def _positions(self, name: str) -> list[int]:
        key = _key(name)
        first = self._first_positions().get(key)
        if first is None:
            return []
        repeated = self._repeated
        if repeated is not None:
            more = repeated.get(key)
            if more is not None:
                return list(more)
        return [first]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        first = self._first_positions().get(_key(name))
        return default if first is None else self._items[first][1]

    def getall(self, name: str) -> list[str]:
        """Every line of ``name``, in order (not split on commas)."""
        items = self._items
        return [items[i][1] for i in self._positions(name)]

    def values(self, name: str) -> list[str]:
        """Every value of ``name``, comma-separated lists split."""
        out: list[str] = []
        for line in self.getall(name):
            out.extend(split_header_values(line))
        return out

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        key = _key(name)
        self._items.append((_canonical(name), value))
        self._keys.append(key)
        if self.memo:
            self.memo = {}
        if self._index is not None:
            self._repeated = _index_line(self._index, self._repeated, key, len(self._keys) - 1)

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one line, where the first one stood."""
        cname = _canonical(name)
        key = _key(name)
        self.memo = {}
        if key not in self._keys:
            self._items.append((cname, value))
            self._keys.append(key)
            self._index = None
            return
        first = self._keys.index(key)
        items = [
            (cname, value) if i == first else item
            for i, item in enumerate(self._items)
            if i == first or self._keys[i] != key
        ]
        self._items = items
        self._keys = [_key(n) for n, _ in items]
        self._index = None

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first line of ``name`` in place (KeyError when there is none)."""
        positions = self._positions(name)
        if not positions:
            raise KeyError(name)
        i = positions[0]
        self._items[i] = (self._items[i][0], value)
        memo = self.memo
        if memo:
            if self._keys[i] == "via":
                # What the accessors derived from other headers (CSeq, tags) still holds: a
                # request's Via gets received/rport on every hop, and re-deriving the rest
                # cost as much again.
                memo.pop("top_via", None)
                memo.pop("branch", None)
                memo.pop("txn_key", None)  # the edge's transaction key (branch and sent-by)
            else:
                self.memo = {}

    def remove(self, name: str) -> None:
        """Remove every line of ``name``."""
        key = _key(name)
        self.memo = {}
        kept = [(item, k) for item, k in zip(self._items, self._keys, strict=True) if k != key]
        self._items = [item for item, _ in kept]
        self._keys = [k for _, k in kept]
        self._index = None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        """A shallow copy."""
        return Headers._parsed(list(self._items), list(self._keys))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(slots=True)
class Message:
    """What requests and responses share: headers and body."""

    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    # The __init__ methods of the message classes are written out: mypyc compiles them, while
    # the ones @dataclass generates at import time run interpreted (several times slower, and
    # messages are made on every packet). @dataclass still provides repr, eq and fields().
    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = Headers() if headers is None else headers
        self.body = body

    # -- accessors for the headers every transaction needs ---------------------------

    # The accessors below are read many times per message (transaction keys, dialogs,
    # records); each is derived once and kept in the headers' memo until a header changes.

    @property
    def call_id(self) -> str:
        """The Call-ID (raises KeyError when absent)."""
        value = self.headers.get("Call-ID")
        if value is None:
            raise KeyError("Call-ID")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        """The CSeq as (number, method)."""
        memo = self.headers.memo
        cached = memo.get("cseq")
        if cached is None:
            value = self.headers.get("CSeq")
            if value is None:
                raise KeyError("CSeq")
            cached = memo["cseq"] = parse_cseq(value)
        return cast(tuple[int, str], cached)

    @property
    def from_tag(self) -> str | None:
        """The tag parameter of From."""
        memo = self.headers.memo
        if "from_tag" not in memo:
            memo["from_tag"] = header_tag(self.headers.get("From"))
        return cast("str | None", memo["from_tag"])

    @property
    def to_tag(self) -> str | None:
        """The tag parameter of To."""
        memo = self.headers.memo
        if "to_tag" not in memo:
            memo["to_tag"] = header_tag(self.headers.get("To"))
        return cast("str | None", memo["to_tag"])

    @property
    def top_via(self) -> str:
        """The raw value of the first Via entry."""
        memo = self.headers.memo
        cached = memo.get("top_via")
        if cached is None:
            for line in self.headers.getall("Via"):
                vals = split_header_values(line)
                if vals:
                    cached = memo["top_via"] = vals[0]
                    break
            else:
                raise KeyError("Via")
        return cast(str, cached)

    def vias(self) -> list[str]:
        """Every Via entry, raw, in order."""
        return self.headers.values("Via")

    @property
    def branch(self) -> str | None:
        """The branch parameter of the top Via."""
        memo = self.headers.memo
        if "branch" not in memo:
            via = self.top_via
            span = branch_span(via)
            memo["branch"] = via[span[0] : span[1]] if span is not None else None
        return cast("str | None", memo["branch"])

    def serialize(self) -> bytes:
        """The message as bytes for the wire, Content-Length computed."""
        raise NotImplementedError

    def _serialize(self, start_line: str) -> bytes:
        if _LINE_BREAK.search(start_line):
            raise ValueError(f"line break in start line {start_line!r}")
        lines = [start_line]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            # A CR or LF would end the header line early and let the rest of the
            # value be read as headers of its own (header injection).
            if not grammar.is_known_token(name):
                raise ValueError(f"header name {name!r} is not a token")
            if "\n" in value or "\r" in value:
                raise ValueError(f"line break in the value of header {name}")
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(slots=True)
class Request(Message):
    """A SIP request."""

    method: str = ""
    uri: str = ""
    version: str = "SIP/2.0"

    def __init__(
        self,
        headers: Headers | None = None,
        body: bytes = b"",
        method: str = "",
        uri: str = "",
        version: str = "SIP/2.0",
    ) -> None:
        self.headers = Headers() if headers is None else headers
        self.body = body
        self.method = method
        self.uri = uri
        self.version = version

    def serialize(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {self.version}")

    @property
    def first_line(self) -> str:
        """The request line."""
        return f"{self.method} {self.uri} {self.version}"


@dataclass(slots=True)
class Response(Message):
    """A SIP response."""

    status: int = 200
    reason: str = "OK"
    version: str = "SIP/2.0"

    def __init__(
        self,
        headers: Headers | None = None,
        body: bytes = b"",
        status: int = 200,
        reason: str = "OK",
        version: str = "SIP/2.0",
    ) -> None:
        self.headers = Headers() if headers is None else headers
        self.body = body
        self.status = status
        self.reason = reason
        self.version = version

    def serialize(self) -> bytes:
        return self._serialize(f"{self.version} {self.status} {self.reason}")

    @property
    def first_line(self) -> str:
        """The status line."""
        return f"{self.version} {self.status} {self.reason}"


def parse_cseq(value: str) -> tuple[int, str]:
    """Parse ``CSeq: 1 INVITE`` into ``(1, "INVITE")``; ValueError when malformed."""
    parts = value.split()
    if len(parts) != 2 or not _is_digits(parts[0]) or not grammar.is_known_token(parts[1]):
        raise ValueError(f"malformed CSeq {value!r}")
    number = _bounded_int(parts[0], 2**31 - 1)
    if number is None:
        raise ValueError(f"CSeq number out of range in {value!r}")
    return number, parts[1]


# ASCII digits only: str.isdigit() also takes "²" and "٣", which int() then refuses
# or reads as a number no SIP peer meant.
def _is_digits(value: str) -> bool:
    """Whether ``value`` is one or more of 0-9: an ASCII string's decimal characters are
    those alone."""
    return value.isascii() and value.isdigit()


def _bounded_int(digits: str, limit: int) -> int | None:
    """``int(digits)`` when it is at most ``limit``, else None.

    Checks the length first: ``int()`` of a 5000-digit string raises ValueError
    (CPython's int_max_str_digits) and costs time on the way.
    """
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(limit)):
        return None
    number = int(significant)
    return number if number <= limit else None


def header_tag(value: str | None) -> str | None:
    """The ``tag`` parameter of a From/To value (outside the angle brackets)."""
    if value is None:
        return None
    gt = value.rfind(">")
    start = gt + 1 if gt >= 0 else 0
    # The usual spelling, ";tag=" as the first parameter, without the regex (read on every
    # message); anything else, e.g. ";TAG = x" or another parameter first, takes the regex.
    at = value.find(";tag=", start)
    if at >= 0 and value.find(";", start, at) < 0:
        first = at + 5
        end = len(value)
        for stop in (";", ",", ">"):
            found = value.find(stop, first, end)
            if found >= 0:
                end = found
        tag = value[first:end]
        # Printable without a space holds no whitespace: the tag is all of it (three searches,
        # not a character loop). Anything else is cut at its first whitespace, if any.
        if tag and tag.isprintable() and " " not in tag:
            return tag
        end = first
        length = first + len(tag)
        while end < length and not value[end].isspace():
            end += 1
        if end > first:
            return value[first:end]
    m = _TAG.search(value, start)
    return m.group(1) if m else None


# sipmessage's values are frozen dataclasses, so a parse can be shared: Five9 sends the same
# Request-URI, To and Contact on every call, and a call's From is read more than once.  Only
# values of ordinary length are cached (_CACHED_LENGTH): a peer sending unique 64 kB URIs must
# not pin the cache's worth of them in memory.

_cached_address: Final = functools.lru_cache(maxsize=2048)(Address.parse)
_cached_uri: Final = functools.lru_cache(maxsize=2048)(URI.parse)
_cached_via: Final = functools.lru_cache(maxsize=512)(Via.parse)


def parse_address(value: str) -> Address:
    """Parse a name-addr or addr-spec (From, To, Contact) with sipmessage."""
    return _cached_address(value) if len(value) <= _CACHED_LENGTH else Address.parse(value)


def parse_uri(value: str) -> URI:
    """Parse a SIP/SIPS/TEL URI with sipmessage."""
    return _cached_uri(value) if len(value) <= _CACHED_LENGTH else URI.parse(value)


def parse_via(value: str) -> Via:
    """Parse one Via entry with sipmessage."""
    return _cached_via(value) if len(value) <= _CACHED_LENGTH else Via.parse(value)


def branch_span(value: str) -> tuple[int, int] | None:
    """Where the ``branch`` parameter's value is in one Via entry: what
    ``;\\s*branch\\s*=\\s*([^;,\\s]+)`` (case-insensitive) finds first, as (start, end).

    The usual spelling, ";branch=" as the first parameter, without the regular expression (it
    ran on every message, ~7,000 instructions); anything else, e.g. ``;Branch = x`` or another
    parameter first, takes it.
    """
    at = value.find(";branch=")
    if at >= 0 and value.find(";", 0, at) < 0:
        first = at + 8
        end = value.find(";", first)
        if end < 0:
            end = len(value)
        candidate = value[first:end]
        # Printable ASCII without a space holds no whitespace (\x1c-\x1f are not printable).
        if (
            candidate
            and candidate.isascii()
            and candidate.isprintable()
            and " " not in candidate
            and "," not in candidate
        ):
            return first, end
    m = _PARAM_BRANCH.search(value)
    return (m.start(1), m.end(1)) if m is not None else None


def via_is_valid(value: str) -> bool:
    """Whether one Via entry parses (sipmessage's grammar), cheaply for a peer's usual Vias.

    The branch is new on every transaction, so a parse of the Via as sent would never hit the
    cache. A branch is a token (RFC 3261 §20.42): checked as such, then swapped for a fixed
    token, which leaves the rest of the Via (the same on every call from one peer) to the
    cached parse.
    """
    span = branch_span(value)
    if span is not None and grammar.is_token(value[span[0] : span[1]]):
        value = f"{value[: span[0]]}z9hG4bK{value[span[1] :]}"
    try:
        parse_via(value)
    except ValueError:
        return False
    return True


_REQUIRED: Final = ("Via", "From", "To", "Call-ID", "CSeq")

# Headers that may appear once only (RFC 3261 §7.3.1, RFC 4475 §3.3.8) among those
# we echo or act on: a second line would leave the response ambiguous.
_SINGLE: Final = ("From", "To", "Call-ID", "CSeq")
_REQUIRED_KEYS: Final = tuple((name, name.lower()) for name in _REQUIRED)
_SINGLE_KEYS: Final = tuple((name, name.lower()) for name in _SINGLE)

# The end of the header block: the first empty line, CRLF or bare LF (§7.5 asks
# for tolerance of bare LF; a mixed message is taken as well).
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")


def head_end(data: bytes | bytearray) -> tuple[int, int]:
    """Where the first empty line (``_HEAD_END``) starts and ends in ``data``; (-1, -1): none.

    The usual message has CRLF line ends only: three substring searches find its blank line
    (a third of the regular expression's cost in a 700-byte INVITE); a bare LF before it
    leaves the answer to the expression.
    """
    p = data.find(b"\r\n\r\n")
    if p >= 0 and data.find(b"\n\n", 0, p + 1) < 0 and data.find(b"\n\r\n", 0, p + 2) < 0:
        return p, p + 4
    m = _HEAD_END.search(data)
    return (-1, -1) if m is None else m.span()


def _crlf_lines(data: bytes) -> tuple[int, list[str]] | None:
    """Where the head of the usual message ends (ASCII, CRLF line ends only) and its lines;
    None for any other message.

    The head ends at the first CRLF CRLF. With no bare LF before it, no blank line made with
    one (``_HEAD_END``) can end the head sooner, so one search and one count replace the
    general reading's three searches (:func:`head_end`).
    """
    stop = data.find(b"\r\n\r\n")
    if stop < 0:
        return None
    head_bytes = data[:stop]
    if not head_bytes.isascii() or head_bytes.endswith(b"\r"):
        # A CR before the blank line: the general reading takes it for part of a line end.
        return None
    head = head_bytes.decode("ascii")
    lines = head.split("\r\n")
    return (stop, lines) if len(lines) == head.count("\n") + 1 else None


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one SIP message.

    Over a datagram the body is what follows the headers, cut to Content-Length
    (RFC 3261 §18.3: a longer datagram is truncated, a shorter one is an error).
    Raises :class:`SipParseError` with a precise reason; for a request whose
    start line could be read, ``partial`` carries the headers read before the
    fault so that a ``400`` (or ``505``) can be formed.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    data = data.lstrip(b"\r\n")
    fault: str | None = None
    crlf = _crlf_lines(data)
    if crlf is not None:
        head_stop, raw_lines = crlf
        body = data[head_stop + 4 :]
    else:
        # A bare LF in the head, or no blank line: the general reading.
        head_stop, body_start = head_end(data)
        if head_stop < 0:
            # Still read what is there: a request that only lacks the blank line
            # (RFC 4475 §3.1.2.15's archive copy) can be answered with 400.
            head_bytes, body = data, b""
            fault = "no blank line after the headers"
        else:
            head_bytes, body = data[:head_stop], data[body_start:]
        try:
            head = head_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SipParseError(f"header bytes are not UTF-8 at offset {exc.start}") from None
        raw_lines = [line[:-1] if line.endswith("\r") else line for line in head.split("\n")]
    if fault is not None:
        while raw_lines and not raw_lines[-1]:
            raw_lines.pop()
        if not raw_lines:
            raise SipParseError("empty message")
    start = raw_lines[0]
    if "\r" in start:
        raise SipParseError(f"bare CR in start line {start[:80]!r}")
    msg: Request | Response
    request_line = grammar.split_request_line(start)
    if request_line is not None:
        method, uri, version = request_line
        msg = Request(method=method, uri=uri, version=version)
        if not grammar.is_request_uri(uri):
            fault = f"malformed Request-URI {uri[:80]!r}"
    else:
        m = grammar.STATUS_LINE.fullmatch(start)
        if not m:
            raise SipParseError(f"malformed start line {start[:80]!r}")
        msg = Response(status=int(m.group(2)), reason=m.group(3) or "", version=m.group(1))
        if not 100 <= msg.status <= 699:
            raise SipParseError(f"status code {msg.status} out of range")
    partial = msg if isinstance(msg, Request) else None

    # Unfold continuation lines (§7.3.1) and split name: value.
    items: list[tuple[str, str]] = []
    keys: list[str] = []
    index: dict[str, int] = {}
    repeated: dict[str, list[int]] | None = None
    names = _NAME_FORMS
    for line in raw_lines[1:]:
        if "\r" in line:
            fault = fault or f"bare CR in header line {line[:60]!r}"
            break
        if line[:1] in (" ", "\t"):
            if not items:
                fault = fault or "continuation line before any header"
                break
            name, value = items[-1]
            items[-1] = (name, f"{value} {line.strip(_LWS)}".strip(_LWS))
            continue
        # header-name HCOLON value: the name is a token, so the first colon ends it.
        name, colon, value = line.partition(":")
        forms = names.get(name)  # the name as written, blanks before the colon included
        if forms is None or not colon:
            name = name.rstrip(_LWS)
            if not colon or not grammar.is_token(name):
                fault = fault or f"malformed header line {line[:60]!r}"
                break
            forms = _name_forms(name)
        canonical, key = forms
        position = len(items)
        if key in index:
            repeated = _index_line(index, repeated, key, position)
        else:
            index[key] = position
        items.append((canonical, value.strip(_LWS)))
        keys.append(key)
    msg.headers = headers = Headers._parsed(items, keys)
    headers._index, headers._repeated = index, repeated

    if not _is_2_0(msg.version):
        raise SipParseError(f"unsupported version {msg.version}", partial, 505)
    if fault is not None:
        raise SipParseError(fault, partial)
    for name, key in _REQUIRED_KEYS:
        # A line holding only SP, HTAB and commas has no value (split_header_values).
        first = index.get(key)
        if first is None or not (
            items[first][1].strip(" \t,")
            or (
                repeated is not None
                and any(items[i][1].strip(" \t,") for i in repeated.get(key, ()))
            )
        ):
            raise SipParseError(f"missing {name} header", partial)
    if repeated is not None:
        for name, key in _SINGLE_KEYS:
            if key in repeated:
                raise SipParseError(f"more than one {name} header", partial)
    try:
        _number, method = msg.cseq
    except ValueError as exc:
        raise SipParseError(str(exc), partial) from None
    if isinstance(msg, Request) and method != msg.method:
        # The CSeq method is the request's own, ACK and CANCEL included
        # (§8.1.1.5, §17.1.1.3; RFC 4475 §3.1.2.17).
        raise SipParseError(f"CSeq method {method} does not match {msg.method}", partial)

    lengths = msg.headers.getall("Content-Length")
    if lengths:
        if not all(_is_digits(v) for v in lengths):
            bad = next(v for v in lengths if not _is_digits(v))
            raise SipParseError(f"malformed Content-Length {bad!r}", partial)
        values = {_bounded_int(v, MAX_MESSAGE_SIZE) for v in lengths}
        if len(values) > 1:
            raise SipParseError("conflicting Content-Length headers", partial)
        length = values.pop()
        if length is None or length > len(body):
            raise SipParseError(
                f"Content-Length {lengths[0]} exceeds the {len(body)} body bytes", partial
            )
        body = body[:length]
    elif stream:
        raise SipParseError("Content-Length is required on a stream transport", partial)
    msg.body = body
    return msg


def _is_2_0(version: str) -> bool:
    """SIP/2.0 as RFC 3261 reads the version: digits compared as written (``SIP/02.0`` is
    not 2.0), any case of ``SIP``."""
    if version == "SIP/2.0":
        return True
    major_minor = grammar.SIP_VERSION.fullmatch(version)
    return major_minor is not None and (major_minor.group(1), major_minor.group(2)) == ("2", "0")


KEEPALIVE_PING: Final = b"\r\n\r\n"
"""The RFC 5626 §3.5.1 keepalive on a stream: a double CRLF, answered by one CRLF."""


class StreamFramer:
    """Frame SIP messages from a byte stream (TCP/TLS) by Content-Length.

    Feed bytes with :meth:`feed`; iterate :meth:`messages` for every complete
    message (raw bytes).  A double-CRLF keepalive ping (RFC 5626) is yielded as
    :data:`KEEPALIVE_PING` so the receiver can answer it with a CRLF pong; other
    CR/LF bytes between messages (pongs, stray line ends) are skipped.  A framing
    fault raises :class:`SipParseError`; the connection should then be closed,
    since the stream cannot be resynchronised.
    """

    __slots__ = ("_buf", "max_size")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def messages(self) -> Iterator[bytes]:
        """Yield every complete message (or keepalive ping) buffered so far."""
        buf = self._buf
        while True:
            if buf.startswith(KEEPALIVE_PING):
                del buf[:4]
                yield KEEPALIVE_PING
                continue
            if buf and KEEPALIVE_PING.startswith(buf):
                return  # perhaps the start of a ping: wait for the rest
            i = 0
            while i < len(buf) and buf[i] in (0x0D, 0x0A):
                i += 1
            if i:
                del buf[:i]
            head_stop, body_start = head_end(buf)
            if head_stop < 0:
                if len(buf) > self.max_size:
                    raise SipParseError("headers exceed the maximum message size")
                return
            length = _content_length(bytes(buf[:head_stop]), self.max_size)
            total = body_start + length
            if total > self.max_size:
                raise SipParseError(f"message of {total} bytes exceeds {self.max_size}")
            if len(buf) < total:
                return
            message = bytes(buf[:total])
            del buf[:total]
            yield message


_CL_LINE: Final = re.compile(rb"\n(?:content-length|l)[ \t]*:([^\n]*)", re.IGNORECASE)


def _content_length(head: bytes, max_size: int) -> int:
    """The Content-Length of a header block; SipParseError when absent or unusable."""
    values = [v.strip(b" \t\r") for v in _CL_LINE.findall(head)]
    if not values:
        raise SipParseError("Content-Length is required on a stream transport")
    lengths: set[int | None] = set()
    for value in values:
        if not value.isdigit():  # bytes.isdigit() is ASCII-only
            raise SipParseError(f"malformed Content-Length {value[:20]!r}")
        lengths.add(_bounded_int(value.decode("ascii"), max_size))
    if len(lengths) > 1:
        raise SipParseError("conflicting Content-Length headers")
    length = lengths.pop()
    if length is None:
        raise SipParseError(f"Content-Length {values[0][:20]!r} exceeds {max_size}")
    return length
