"""LiveKit inbound trunk and dispatch rule files: loading, validation, trunk and rule selection.

The files are LiveKit's own: ``{"trunk": {...}}`` is the protojson of
``livekit.CreateSIPInboundTrunkRequest`` as ``lk sip inbound create FILE`` reads it, and
``{"dispatch_rule": {...}}`` the protojson of ``livekit.CreateSIPDispatchRuleRequest`` as
``lk sip dispatch create FILE`` reads it. The parsed protobuf message is kept inside the
:class:`Trunk` and :class:`DispatchRule` wrappers; there is no second schema here.

What is mirrored from LiveKit, and where it lives in LiveKit's source:

* Parsing: ``livekit-cli`` ``cmd/lk/proto.go`` uses ``protojson.UnmarshalOptions{AllowPartial:
  true}``: snake_case or lowerCamel field names, enum names or numbers, durations as ``"30s"``,
  unknown fields and duplicate fields rejected. One request per file (``lk`` takes several files
  as several arguments, never a JSON array), so an array is refused here too.
* Validation: ``livekit/protocol`` ``livekit/sip.go`` (``CreateSIPInboundTrunkRequest.Validate``,
  ``SIPInboundTrunkInfo.ValidateResult``, ``SIPMediaConfig.Validate``,
  ``CreateSIPDispatchRuleRequest.Validate``) and ``livekit/sip_validation.go`` (header name and
  value rules, ``ForbiddenSipHeaderNames``). LiveKit stops at the first problem; byeline collects
  all of them.
* Trunk selection: ``livekit/protocol`` ``sip/sip.go`` (``MatchTrunkDetailed``,
  ``matchAddrMasks``, ``matchNumbers``, ``ValidateTrunksIter``) and ``NormalizeNumber`` in
  ``livekit/sip.go``; the authentication decision from ``livekit/sip``
  ``pkg/service/psrpc.go`` (a password is asked only when username AND password are set).
* Dispatch rule selection: ``sip/sip.go`` (``MatchDispatchRuleIter``, ``DispatchRulePriority``,
  ``DispatchRuleValidator``) and room naming in ``EvaluateDispatchRule``.

Where byeline is stricter than LiveKit it says so in the message and in the docstring; a file
byeline accepts is always accepted by LiveKit.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from livekit.protocol import sip as lk_sip

__all__ = [
    "BYELINE_RESERVED_HEADER_NAMES",
    "LIVEKIT_FORBIDDEN_HEADER_NAMES",
    "RESERVED_HEADER_NAMES",
    "DispatchRule",
    "DispatchRuleSet",
    "MatchResult",
    "Trunk",
    "TrunkFileError",
    "TrunkMatch",
    "TrunkMatchResult",
    "TrunkSet",
    "header_name_problem",
    "header_value_problem",
    "load_dispatch_rule",
    "load_trunk",
    "masked_caller",
    "normalize_number",
    "parse_dispatch_rule",
    "parse_trunk",
    "room_name",
    "validate",
    "validate_file",
]


class TrunkFileError(ValueError):
    """A trunk or dispatch rule file LiveKit (or byeline) would refuse.

    ``problems`` holds every problem found, one line each, prefixed with the file and the field
    (``trunk.json: trunk.headers["Via"]: header name is reserved ...``).
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------------------------
# Header grammar (livekit/protocol livekit/sip_validation.go)
# --------------------------------------------------------------------------------------------

# RFC 3261 section 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" /
# "'" / "~"). LiveKit's tokenCharacters is exactly this set.
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")

MAX_HEADER_NAME_LENGTH: Final = 255
MAX_HEADER_VALUE_BYTES: Final = 1024

#: LiveKit's ``ForbiddenSipHeaderNames``: refused as static header names by ``lk`` and the server.
LIVEKIT_FORBIDDEN_HEADER_NAMES: Final[frozenset[str]] = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "allow",
        "allow-events",
        "call-id",
        "contact",
        "content-encoding",
        "content-length",
        "content-type",
        "cseq",
        "event",
        "expires",
        "from",
        "max-forwards",
        "record-route",
        "refer-to",
        "reply-to",
        "k",
        "l",
        "m",
        "o",
        "r",
        "t",
        "u",
        "v",
    }
)

#: Names byeline also refuses, beyond LiveKit's list. LiveKit only warns about ``to`` and ``via``
#: ("will be rejected in a future release") and misses the routing headers and the compact forms
#: ``f`` (From), ``i`` (Call-ID), ``c`` (Content-Type), ``e`` (Content-Encoding) and ``x``
#: (Session-Expires). A peer parses any of them as the real header, so letting an attribute value
#: become one would let it rewrite the dialog.
BYELINE_RESERVED_HEADER_NAMES: Final[frozenset[str]] = frozenset(
    {
        "via",
        "to",
        "route",
        "f",
        "i",
        "c",
        "e",
        "x",
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
        "proxy-require",
        "require",
        "rseq",
        "rack",
        "session-expires",
    }
)

#: Every header name byeline refuses to send from configuration or attributes (lower case).
RESERVED_HEADER_NAMES: Final[frozenset[str]] = (
    LIVEKIT_FORBIDDEN_HEADER_NAMES | BYELINE_RESERVED_HEADER_NAMES
)


def header_name_problem(name: str, *, reserved: bool) -> str | None:
    """Return why ``name`` is not an acceptable header name, or ``None``.

    Mirrors LiveKit's ``ValidateHeaderName``: not empty, at most 255 characters, RFC 3261 token
    characters only; with ``reserved`` the name must not be one of :data:`RESERVED_HEADER_NAMES`
    (LiveKit's ``restrictNames``, widened by byeline).
    """
    if name == "":
        return "header name must not be empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_HEADER_NAME_LENGTH:
        return f"header name is too long (max {MAX_HEADER_NAME_LENGTH} characters)"
    if not _TOKEN_RE.fullmatch(name):
        bad = next(ch for ch in name if not _TOKEN_RE.fullmatch(ch))
        return f"header name is not an RFC 3261 token (character {bad!r} not allowed)"
    if reserved:
        lower = name.lower()
        if lower in LIVEKIT_FORBIDDEN_HEADER_NAMES:
            return "header name is reserved (forbidden in static headers)"
        if lower in BYELINE_RESERVED_HEADER_NAMES:
            return (
                "header name is reserved (forbidden in static headers; "
                "byeline refuses it, the SIP stack owns this header)"
            )
    return None


def header_value_problem(value: str) -> str | None:
    """Return why ``value`` is not an acceptable static header value, or ``None``.

    Mirrors LiveKit's ``ValidateHeaderValue``: empty is fine; at most 1024 bytes; printable ASCII
    (0x20-0x7E), HTAB, or any non-ASCII character (LiveKit's ``headerValuesCharacters`` has
    ``AddUTF8``). CR, LF, NUL, other C0 controls and DEL are refused.
    """
    if value == "":
        return None
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "header value is not valid UTF-8 (lone surrogate)"
    if size > MAX_HEADER_VALUE_BYTES:
        return f"header value is too long ({size} bytes, max {MAX_HEADER_VALUE_BYTES})"
    for ch in value:
        code = ord(ch)
        if code == 0x09 or 0x20 <= code <= 0x7E or code >= 0x80:
            continue
        what = _CONTROL_NAMES.get(code, f"U+{code:04X}")
        return f"header value contains a control character ({what}); only printable allowed"
    return None


_CONTROL_NAMES: Final = {0x00: "NUL", 0x0A: "LF", 0x0D: "CR", 0x7F: "DEL"}


# --------------------------------------------------------------------------------------------
# Phone numbers (livekit/protocol livekit/sip.go NormalizeNumber)
# --------------------------------------------------------------------------------------------

_NUMBER_RE: Final = re.compile(r"\+?[0-9\- ()]+")
_NUMBER_STRIP: Final = str.maketrans("", "", " -()")


def normalize_number(number: str) -> str:
    """Normalise a phone number as LiveKit's ``NormalizeNumber`` does.

    Empty stays empty. Anything that is not ``+``-optional digits with spaces, dashes and
    parentheses is returned unchanged (SIP user names such as ``five9`` stay as they are).
    Otherwise the formatting characters are removed and a ``+`` is added when missing, so
    ``"1 (800) 555-0100"`` and ``"+18005550100"`` compare equal.
    """
    if number == "":
        return ""
    if number.isascii():
        # The usual forms, digits with or without the "+", without the regular expression.
        if number.isdigit():
            return "+" + number
        if number[0] == "+" and number[1:].isdigit():
            return number
    # Go's \d is ASCII-only; Python's would accept other scripts' digits.
    if not _NUMBER_RE.fullmatch(number):
        return number
    number = number.translate(_NUMBER_STRIP)
    return number if number.startswith("+") else "+" + number


# --------------------------------------------------------------------------------------------
# JSON → protobuf, with errors that name the field
# --------------------------------------------------------------------------------------------

_M = TypeVar("_M", bound=Message)


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # protojson refuses a field given twice; json.loads would silently keep the last one.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Go's decoder refuses them.
    raise ValueError(f"{name} is not valid JSON")


def _read_json(path: str | Path) -> tuple[str, Any]:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TrunkFileError([f"{source}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise TrunkFileError([f"{source}: not UTF-8 text: {exc.reason}"]) from exc
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKeyError as exc:
        raise TrunkFileError([f"{source}: duplicate JSON key {str(exc)!r}"]) from exc
    except json.JSONDecodeError as exc:
        raise TrunkFileError(
            [f"{source}: invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
        ) from exc
    except ValueError as exc:
        raise TrunkFileError([f"{source}: invalid JSON: {exc}"]) from exc
    return source, data


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _field_problems(data: Any, desc: Any, path: str) -> Iterator[str]:
    """Yield unknown and doubly-given fields of ``data`` against the message descriptor.

    json_format stops at the first unknown field and words it as a Python exception; walking the
    descriptor lets every unknown field be reported with its path.
    """
    if not isinstance(data, dict):
        return  # a type error: json_format reports it with its own words
    seen: dict[int, str] = {}
    for key, value in data.items():
        field = desc.fields_by_name.get(key)
        if field is None:
            field = next((f for f in desc.fields if f.json_name == key), None)
        if field is None:
            yield f"{_join(path, key)}: unknown field (not in {desc.full_name})"
            continue
        if field.number in seen:
            yield f"{_join(path, key)}: field given twice (also as {seen[field.number]!r})"
            continue
        seen[field.number] = key
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        sub = field.message_type
        if sub.full_name.startswith("google.protobuf."):
            continue  # well-known types (Duration, Timestamp...) have their own JSON form
        sub_path = _join(path, key)
        if sub.GetOptions().map_entry:
            value_field = sub.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE and isinstance(value, dict):
                for k, v in value.items():
                    yield from _field_problems(v, value_field.message_type, f"{sub_path}[{k!r}]")
        elif _is_repeated(field):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    yield from _field_problems(item, sub, f"{sub_path}[{i}]")
        else:
            yield from _field_problems(value, sub, sub_path)


def _is_repeated(field: Any) -> bool:
    # FieldDescriptor.label is gone from recent protobuf releases; is_repeated replaces it.
    is_repeated = getattr(field, "is_repeated", None)
    if isinstance(is_repeated, bool):
        return is_repeated
    return bool(getattr(field, "label", 0) == 3)  # LABEL_REPEATED


_PARSE_PREFIX_RE: Final = re.compile(r"^Failed to parse (\w+) field: ")
_PARSE_AT_RE: Final = re.compile(r"\s+at [\w.\[\]\"']+\.*$")


def _parse_error_message(message: str) -> str:
    """Turn json_format's nested message into ``field.path: problem``."""
    first = message.splitlines()[0] if message else message
    fields: list[str] = []
    while m := _PARSE_PREFIX_RE.match(first):
        fields.append(m.group(1))
        first = first[m.end() :]
    first = _PARSE_AT_RE.sub("", first).rstrip(".")
    return f"{'.'.join(fields)}: {first}" if fields else first


def _parse_message(data: Any, message: _M, source: str) -> _M:
    if not isinstance(data, dict):
        kind = "an array" if isinstance(data, list) else f"a JSON {type(data).__name__}"
        raise TrunkFileError(
            [
                f"{source}: expected one JSON object ({message.DESCRIPTOR.name}), got {kind}; "
                "like `lk`, byeline reads one request per file"
            ]
        )
    problems = [f"{source}: {p}" for p in _field_problems(data, message.DESCRIPTOR, "")]
    if problems:
        raise TrunkFileError(problems)
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise TrunkFileError([f"{source}: {_parse_error_message(str(exc))}"]) from exc
    return message


# --------------------------------------------------------------------------------------------
# Validation (livekit/protocol livekit/sip.go)
# --------------------------------------------------------------------------------------------

MAX_MEDIA_TIMEOUT: Final = timedelta(minutes=10)  # LiveKit's MaxSIPMediaTimeout


def _map_key(path: str, key: str) -> str:
    return f"{path}[{json.dumps(key)}]"


def _media_problems(info: Any, path: str) -> list[str]:
    # SIPMediaConfig.Validate
    if not info.HasField("media"):
        return []
    media = info.media
    out: list[str] = []
    for i, codec in enumerate(media.codecs):
        where = f"{path}.media.codecs[{i}].name"
        if codec.name == "":
            out.append(f"{where}: missing codec name")
        elif any(ch in codec.name for ch in " \t\n\r"):
            out.append(f"{where}: invalid codec name (contains whitespace)")
        elif "/" in codec.name:
            out.append(f"{where}: codec name must not contain '/'")
    if media.HasField("media_timeout"):
        timeout = media.media_timeout.ToTimedelta()
        if timeout < timedelta(0):
            out.append(f"{path}.media.media_timeout: media_timeout must not be negative")
        elif timeout > MAX_MEDIA_TIMEOUT:
            out.append(f"{path}.media.media_timeout: media_timeout must not exceed 10m0s")
    return out


_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
_DOTTED_NUMERIC_RE: Final = re.compile(r"[0-9.]+")


def _address_problem(entry: str) -> str | None:
    """Why an ``allowed_addresses`` entry is unusable, or ``None``.

    LiveKit does not check these on create; at call time (``matchAddrMasks``) it silently drops
    entries it cannot use, and a trunk whose entries are all dropped allows every address.
    byeline refuses such entries instead. Accepted forms are those LiveKit matches: an IP
    address, a CIDR prefix, or a host name compared with the From URI host.
    """
    if entry == "":
        return "empty address"
    if _INVALID_MASK_CHARS & set(entry) or "://" in entry:
        return (
            "not an IP address, CIDR prefix or host name "
            "(LiveKit silently ignores such entries, which can open the trunk to everyone)"
        )
    if "/" in entry:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return "not a valid CIDR prefix (LiveKit would never match it)"
        return None
    try:
        ipaddress.ip_address(entry)
    except ValueError:
        pass
    else:
        return None
    if entry.startswith("[") and entry.endswith("]"):
        # LiveKit compares the bracketed form with the From host verbatim.
        try:
            ipaddress.IPv6Address(entry[1:-1])
        except ValueError:
            return "not a valid bracketed IPv6 address"
        return None
    if _DOTTED_NUMERIC_RE.fullmatch(entry):
        return "not a valid IP address"
    if not _HOSTNAME_RE.fullmatch(entry):
        return (
            "not an IP address, CIDR prefix or host name "
            "(LiveKit silently ignores such entries, which can open the trunk to everyone)"
        )
    return None


def _static_header_problems(headers: Mapping[str, str], path: str) -> list[str]:
    out: list[str] = []
    for name in sorted(headers):
        where = _map_key(path, name)
        problem = header_name_problem(name, reserved=True) or header_value_problem(headers[name])
        if problem:
            out.append(f"{where}: {problem}")
    return out


def _attributes_to_headers_problems(mapping: Mapping[str, str], path: str) -> list[str]:
    out: list[str] = []
    by_lower: dict[str, str] = {}
    for attr in sorted(mapping):
        header = mapping[attr]
        where = _map_key(path, attr)
        if attr == "":
            out.append(f"{where}: attribute name must not be empty")
        # LiveKit checks these names without restriction; byeline refuses reserved targets
        # because check_header would refuse every header they produce at send time.
        if problem := header_name_problem(header, reserved=True):
            out.append(f"{where}: {json.dumps(header)}: {problem}")
            continue
        other = by_lower.get(header.lower())
        if other is not None:
            # Go map order would pick the winner at random in LiveKit.
            out.append(
                f"{where}: header {json.dumps(header)} is also mapped from attribute "
                f"{json.dumps(other)} (byeline refuses it: which value goes out would be "
                "arbitrary)"
            )
        by_lower[header.lower()] = attr
    return out


def _headers_to_attributes_problems(mapping: Mapping[str, str], path: str) -> list[str]:
    out: list[str] = []
    for header in sorted(mapping):
        where = _map_key(path, header)
        if problem := header_name_problem(header, reserved=False):
            out.append(f"{where}: {problem}")
        if mapping[header] == "":
            out.append(f"{where}: attribute name must not be empty")
    return out


def _trunk_info_problems(info: lk_sip.SIPInboundTrunkInfo, path: str) -> list[str]:
    out: list[str] = []
    has_auth = info.auth_username != "" or info.auth_password != ""
    if not has_auth and not info.allowed_addresses and not info.numbers:
        out.append(
            f"{path}: for security, one of the fields must be set: "
            "auth_username+auth_password, allowed_addresses or numbers"
        )
    if (info.auth_username == "") != (info.auth_password == ""):
        missing = "auth_password" if info.auth_password == "" else "auth_username"
        out.append(
            f"{path}.{missing}: must be set together with "
            f"{'auth_username' if missing == 'auth_password' else 'auth_password'} "
            "(byeline refuses it: LiveKit would accept calls without asking for credentials)"
        )
    out += _media_problems(info, path)
    out += _static_header_problems(info.headers, f"{path}.headers")
    out += _attributes_to_headers_problems(
        info.attributes_to_headers, f"{path}.attributes_to_headers"
    )
    out += _headers_to_attributes_problems(
        info.headers_to_attributes, f"{path}.headers_to_attributes"
    )
    for i, entry in enumerate(info.allowed_addresses):
        if problem := _address_problem(entry):
            out.append(f"{path}.allowed_addresses[{i}]: {entry!r}: {problem}")
    return out


def _dispatch_info_problems(info: lk_sip.SIPDispatchRuleInfo, path: str) -> list[str]:
    out: list[str] = []
    if not info.HasField("rule") or info.rule.WhichOneof("rule") is None:
        out.append(
            f"{_join(path, 'rule')}: missing rule "
            "(one of dispatch_rule_direct, dispatch_rule_individual, dispatch_rule_callee)"
        )
    out += _media_problems(info, path or "dispatch_rule")
    return out


def validate(message: Message, *, source: str = "<memory>") -> list[str]:
    """Return every problem LiveKit's ``Validate()`` (plus byeline's stricter rules) finds.

    ``message`` is a ``CreateSIPInboundTrunkRequest``, ``SIPInboundTrunkInfo``,
    ``CreateSIPDispatchRuleRequest`` or ``SIPDispatchRuleInfo``. An empty list means valid.
    Each line reads ``SOURCE: FIELD: PROBLEM``.
    """
    problems: list[str]
    if isinstance(message, lk_sip.CreateSIPInboundTrunkRequest):
        if not message.HasField("trunk"):
            problems = ['trunk: missing trunk (the file must hold {"trunk": {...}})']
        else:
            problems = []
            if message.trunk.sip_trunk_id:
                problems.append("trunk.sip_trunk_id: trunk id must not be set")
            problems += _trunk_info_problems(message.trunk, "trunk")
    elif isinstance(message, lk_sip.SIPInboundTrunkInfo):
        problems = _trunk_info_problems(message, "trunk")
    elif isinstance(message, lk_sip.CreateSIPDispatchRuleRequest):
        if message.HasField("dispatch_rule"):
            problems = []
            if _has_flat_dispatch_fields(message):
                problems.append(
                    "dispatch_rule: the file also sets top-level rule fields, which LiveKit "
                    "ignores when dispatch_rule is present (byeline refuses the mix)"
                )
            if message.dispatch_rule.sip_dispatch_rule_id:
                problems.append("dispatch_rule.sip_dispatch_rule_id: rule id must not be set")
            problems += _dispatch_info_problems(message.dispatch_rule, "dispatch_rule")
        else:
            problems = _dispatch_info_problems(_flat_dispatch_info(message), "")
    elif isinstance(message, lk_sip.SIPDispatchRuleInfo):
        problems = _dispatch_info_problems(message, "dispatch_rule")
    else:
        raise TypeError(f"cannot validate {type(message).__name__}")
    return [f"{source}: {p}" for p in problems]


# The deprecated top-level fields of CreateSIPDispatchRuleRequest (LiveKit's DispatchRuleInfo()).
_FLAT_DISPATCH_FIELDS: Final = (
    "rule",
    "trunk_ids",
    "hide_phone_number",
    "inbound_numbers",
    "name",
    "metadata",
    "attributes",
    "room_preset",
    "room_config",
)


def _has_flat_dispatch_fields(req: lk_sip.CreateSIPDispatchRuleRequest) -> bool:
    return any(
        bool(getattr(req, name)) if name not in ("rule", "room_config") else req.HasField(name)
        for name in _FLAT_DISPATCH_FIELDS
    )


def _flat_dispatch_info(req: lk_sip.CreateSIPDispatchRuleRequest) -> lk_sip.SIPDispatchRuleInfo:
    # Mirrors CreateSIPDispatchRuleRequest.DispatchRuleInfo() for the legacy flat form.
    info = lk_sip.SIPDispatchRuleInfo(
        trunk_ids=list(req.trunk_ids),
        inbound_numbers=list(req.inbound_numbers),
        hide_phone_number=req.hide_phone_number,
        name=req.name,
        metadata=req.metadata,
        attributes=dict(req.attributes),
        room_preset=req.room_preset,
    )
    if req.HasField("rule"):
        info.rule.CopyFrom(req.rule)
    if req.HasField("room_config"):
        info.room_config.CopyFrom(req.room_config)
    return info


# --------------------------------------------------------------------------------------------
# Trunks
# --------------------------------------------------------------------------------------------


def _derived_id(prefix: str, name: str, source: str) -> str:
    # LiveKit assigns random ids on create (ST_..., SDR_...). A file has none, so byeline derives
    # a stable one from the name (or the file name): editing numbers keeps the id, which keeps
    # dispatch rules' trunk_ids and call records pointing at the same trunk.
    basis = name or Path(source).name
    return prefix + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True, eq=False)
class Trunk:
    """A validated LiveKit inbound trunk (``livekit.SIPInboundTrunkInfo``).

    ``info`` is the protobuf message itself; the properties below are read-only views on it.
    ``id`` is derived (see :func:`load_trunk`) because LiveKit forbids ids in create requests.
    """

    info: lk_sip.SIPInboundTrunkInfo
    id: str
    source: str

    @property
    def trunk_id(self) -> str:
        """Same as :attr:`id` (LiveKit's field name)."""
        return self.id

    @property
    def name(self) -> str:
        """The trunk's ``name``, or its id when the name is empty."""
        return self.info.name or self.id

    @property
    def auth_username(self) -> str:
        """Digest username ("" when the trunk does not authenticate)."""
        return str(self.info.auth_username)

    @property
    def auth_password(self) -> str:
        """Digest password."""
        return str(self.info.auth_password)

    @property
    def auth_realm(self) -> str:
        """Digest realm ("" lets the edge choose)."""
        return str(self.info.auth_realm)

    @property
    def numbers(self) -> list[str]:
        """Called numbers this trunk answers; empty means any number."""
        return list(self.info.numbers)

    @property
    def allowed_addresses(self) -> list[str]:
        """Source IPs, CIDR prefixes or From hosts allowed; empty means any."""
        return list(self.info.allowed_addresses)

    @property
    def allowed_numbers(self) -> list[str]:
        """Caller numbers allowed; empty means any."""
        return list(self.info.allowed_numbers)

    @property
    def needs_auth(self) -> bool:
        """Digest authentication is asked only when both username and password are set.

        Mirrors ``livekit/sip`` ``pkg/service/psrpc.go`` (``AuthPassword`` needs both).
        """
        return self.info.auth_username != "" and self.info.auth_password != ""

    @property
    def headers(self) -> dict[str, str]:
        """Static headers added to the 200 OK."""
        return dict(self.info.headers)

    @property
    def headers_to_attributes(self) -> dict[str, str]:
        """INVITE header name → participant attribute name."""
        return dict(self.info.headers_to_attributes)

    @property
    def attributes_to_headers(self) -> dict[str, str]:
        """Participant attribute name → header name on 200 OK, final responses and BYE."""
        return dict(self.info.attributes_to_headers)

    @property
    def include_headers(self) -> int:
        """``livekit.SIPHeaderOptions`` value (``SIP_NO_HEADERS``, ``SIP_X_HEADERS``...)."""
        return int(self.info.include_headers)


def parse_trunk(data: Any, *, source: str = "<memory>", trunk_id: str | None = None) -> Trunk:
    """Build a :class:`Trunk` from decoded JSON (``{"trunk": {...}}``); raise TrunkFileError."""
    req = _parse_message(data, lk_sip.CreateSIPInboundTrunkRequest(), source)
    problems = validate(req, source=source)
    if problems:
        raise TrunkFileError(problems)
    info = lk_sip.SIPInboundTrunkInfo()
    info.CopyFrom(req.trunk)
    tid = trunk_id or _derived_id("ST_", info.name, source)
    info.sip_trunk_id = tid
    return Trunk(info=info, id=tid, source=source)


def load_trunk(path: str | Path, *, trunk_id: str | None = None) -> Trunk:
    """Read a LiveKit inbound trunk file as ``lk sip inbound create FILE`` would.

    The id is ``trunk_id`` when given, else ``ST_`` + 12 hex digits of SHA-256 of the trunk name
    (of the file name when the name is empty). Raises :class:`TrunkFileError` with every problem.
    """
    source, data = _read_json(path)
    if isinstance(data, dict) and "trunk" not in data and "dispatch_rule" in data:
        raise TrunkFileError([f"{source}: this is a dispatch rule file, not a trunk file"])
    return parse_trunk(data, source=source, trunk_id=trunk_id)


class TrunkMatchResult(enum.Enum):
    """Outcome of inbound trunk selection; :attr:`status` is the SIP status byeline answers."""

    MATCHED = "matched"
    NO_TRUNK = "no_trunk"
    ADDRESS_NOT_ALLOWED = "address_not_allowed"
    CALLER_NOT_ALLOWED = "caller_not_allowed"
    CONFLICT = "conflict"

    @property
    def status(self) -> int:
        """200 for MATCHED, 404 NO_TRUNK, 403 for a refusing trunk, 503 CONFLICT."""
        return _MATCH_STATUS[self]


_MATCH_STATUS: Final = {
    TrunkMatchResult.MATCHED: 200,
    TrunkMatchResult.NO_TRUNK: 404,
    TrunkMatchResult.ADDRESS_NOT_ALLOWED: 403,
    TrunkMatchResult.CALLER_NOT_ALLOWED: 403,
    # LiveKit fails the auth lookup on ambiguity and livekit/sip answers 503 "Try again later".
    TrunkMatchResult.CONFLICT: 503,
}


#: Short alias used by the edge server.
MatchResult = TrunkMatchResult


@dataclass(frozen=True, eq=False)
class TrunkMatch:
    """Result of :meth:`TrunkSet.match`: the trunk (when MATCHED) and whether to ask for auth."""

    result: TrunkMatchResult
    trunk: Trunk | None = None
    needs_auth: bool = False
    reason: str = ""

    # Written out so that mypyc compiles it (the one @dataclass generates runs interpreted).
    def __init__(
        self,
        result: TrunkMatchResult,
        trunk: Trunk | None = None,
        needs_auth: bool = False,
        reason: str = "",
    ) -> None:
        object.__setattr__(self, "result", result)
        object.__setattr__(self, "trunk", trunk)
        object.__setattr__(self, "needs_auth", needs_auth)
        object.__setattr__(self, "reason", reason)

    @property
    def sip_status(self) -> int:
        """SIP status to answer the INVITE with when it is not accepted (200 when MATCHED)."""
        return self.result.status


class _TrunkRule:
    """What :meth:`TrunkSet.match` reads of one trunk, taken out of its protobuf once.

    Per INVITE, reading the repeated fields and normalising every listed number again cost more
    than the rest of the match. The sets give the answers of LiveKit's ``matchNumbers`` and of
    :func:`_addresses_match` (a test checks them against an entry-by-entry reading).
    """

    def __init__(self, trunk: Trunk) -> None:
        info = trunk.info
        self.trunk = trunk
        self.numbers: frozenset[str] = frozenset(info.numbers)
        self.numbers_normalized: frozenset[str] = frozenset(
            normalize_number(n) for n in info.numbers
        )
        self.allowed_numbers: frozenset[str] = frozenset(info.allowed_numbers)
        self.allowed_numbers_normalized: frozenset[str] = frozenset(
            normalize_number(n) for n in info.allowed_numbers
        )
        self.masks: tuple[str, ...] = tuple(info.allowed_addresses)
        # (source IP, From host) -> allowed: a trunk sees the same few peers for every call.
        self._addresses: dict[tuple[str, str], bool] = {}

    def allows_address(self, source_ip: str, caller_host: str) -> bool:
        key = (source_ip, caller_host)
        known = self._addresses.get(key)
        if known is None:
            known = _addresses_match(source_ip, caller_host, self.masks)
            if len(self._addresses) >= 1024:  # a flood of sources must not grow it
                self._addresses.clear()
            self._addresses[key] = known
        return known


class TrunkSet:
    """The trunks byeline serves, selected per INVITE as LiveKit selects them.

    Construction refuses conflicting trunks as LiveKit's ``ValidateTrunksIter`` does on create
    (two trunks for the same called number without distinct ``allowed_numbers``, two default
    trunks without ``allowed_numbers``) and duplicate ids.
    """

    def __init__(self, trunks: Iterable[Trunk]) -> None:
        self.trunks: tuple[Trunk, ...] = tuple(trunks)
        problems = _trunk_conflicts(self.trunks)
        if problems:
            raise TrunkFileError(problems)
        self._rules: tuple[_TrunkRule, ...] = tuple(_TrunkRule(t) for t in self.trunks)

    def __iter__(self) -> Iterator[Trunk]:
        return iter(self.trunks)

    def __len__(self) -> int:
        return len(self.trunks)

    def by_id(self, trunk_id: str) -> Trunk | None:
        """The trunk with this id, if any."""
        return next((t for t in self.trunks if t.id == trunk_id), None)

    def match(
        self,
        called_number: str,
        caller_number: str,
        source_ip: str,
        *,
        caller_host: str = "",
    ) -> TrunkMatch:
        """Select the trunk for an INVITE, mirroring LiveKit's ``MatchTrunkDetailed``.

        A trunk is skipped when the caller is not in its ``allowed_numbers`` or the source is
        not in its ``allowed_addresses`` (IP, CIDR, or ``caller_host`` equal to a host-name
        entry). Among the rest, a trunk listing the called number wins (compared verbatim or
        after :func:`normalize_number`); failing that, the single trunk with no ``numbers``.
        Two specific trunks, or two default trunks, matching is a CONFLICT (LiveKit fails the
        lookup and answers 503).

        Differences: LiveKit treats an unparsable source address as allowed; byeline raises
        ``ValueError`` (the edge always knows the peer address). When no trunk is left, LiveKit
        answers 404 without saying why; byeline reports ADDRESS_NOT_ALLOWED or
        CALLER_NOT_ALLOWED (403) when a trunk for the called number exists but refused this
        call, else NO_TRUNK (404).
        """
        _ip(source_ip)  # ValueError when it is not an address
        called_norm = normalize_number(called_number)
        specific: Trunk | None = None
        defaults: list[Trunk] = []
        refused: list[tuple[int, TrunkMatchResult, Trunk]] = []
        caller_norm = normalize_number(caller_number)
        for rule in self._rules:
            trunk = rule.trunk
            for_number = not rule.numbers or (
                called_number in rule.numbers or called_norm in rule.numbers_normalized
            )
            # Same order as LiveKit: calling number first, then source address.
            if rule.allowed_numbers and not (
                caller_number in rule.allowed_numbers
                or caller_norm in rule.allowed_numbers_normalized
            ):
                if for_number:
                    refused.append(
                        (0 if rule.numbers else 1, TrunkMatchResult.CALLER_NOT_ALLOWED, trunk)
                    )
                continue
            if not rule.allows_address(source_ip, caller_host):
                if for_number:
                    refused.append(
                        (0 if rule.numbers else 1, TrunkMatchResult.ADDRESS_NOT_ALLOWED, trunk)
                    )
                continue
            if not rule.numbers:
                defaults.append(trunk)
            elif for_number:
                if specific is not None:
                    return TrunkMatch(
                        TrunkMatchResult.CONFLICT,
                        reason=f"multiple SIP trunks matched for {called_number!r}: "
                        f"{specific.name!r} and {trunk.name!r}",
                    )
                specific = trunk
        if specific is not None:
            return TrunkMatch(TrunkMatchResult.MATCHED, specific, specific.needs_auth)
        if len(defaults) > 1:
            return TrunkMatch(
                TrunkMatchResult.CONFLICT,
                reason=f"multiple default SIP trunks matched for {called_number!r}: "
                + ", ".join(repr(t.name) for t in defaults),
            )
        if defaults:
            return TrunkMatch(TrunkMatchResult.MATCHED, defaults[0], defaults[0].needs_auth)
        if refused:
            # The most specific refusing trunk explains the refusal.
            _, result, trunk = min(refused, key=lambda r: r[0])
            what = "caller number" if result is TrunkMatchResult.CALLER_NOT_ALLOWED else "source"
            return TrunkMatch(result, reason=f"trunk {trunk.name!r} does not allow this {what}")
        return TrunkMatch(
            TrunkMatchResult.NO_TRUNK, reason=f"no SIP trunk for called number {called_number!r}"
        )


@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address``, cached: a trunk sees the same few peers for every call."""
    return ipaddress.ip_address(text)


@functools.lru_cache(maxsize=4096)
def _address_matches(source_ip: str, mask: str) -> bool:
    # matchAddrMask: an entry without "/" is an exact address, otherwise a prefix.
    # Keyed by strings: an ipaddress object's hash runs in Python (hex of its integer).
    ip = _ip(source_ip)
    try:
        if "/" not in mask:
            return ip == _ip(mask)
        return ip in ipaddress.ip_network(mask, strict=False)
    except ValueError:
        return False


_INVALID_MASK_CHARS: Final = frozenset("()+*;, \t\n\r")


def _addresses_match(source_ip: str, host: str, masks: Sequence[str]) -> bool:
    # matchAddrMasks: unusable entries are dropped first; no entries left allows everyone.
    usable = [m for m in masks if not (_INVALID_MASK_CHARS & set(m)) and "://" not in m]
    if not usable:
        return True
    return any((host != "" and m == host) or _address_matches(source_ip, m) for m in usable)


def _trunk_conflicts(trunks: Sequence[Trunk]) -> list[str]:
    # ValidateTrunksIter: bucket by normalised called number, then by normalised allowed number.
    out: list[str] = []
    ids: dict[str, Trunk] = {}
    for t in trunks:
        if t.id in ids:
            out.append(f"{t.source}: trunk id {t.id!r} is also used by {ids[t.id].source}")
        ids[t.id] = t
    buckets: dict[str, dict[str, Trunk]] = {}
    for t in trunks:
        keys = list(dict.fromkeys(normalize_number(n) for n in t.info.numbers)) or [""]
        for key in keys:
            by_inbound = buckets.setdefault(key, {})
            inbound = list(dict.fromkeys(normalize_number(n) for n in t.info.allowed_numbers))
            for ikey in inbound or [""]:
                other = by_inbound.get(ikey)
                if other is not None and other.id != t.id:
                    nums = repr(list(t.info.numbers)) if t.info.numbers else "<any>"
                    if ikey == "":
                        out.append(
                            f"{t.source}: conflicting inbound SIP trunks {other.name!r} and "
                            f"{t.name!r}, using the same number(s) {nums} without "
                            "allowed_numbers set"
                        )
                    else:
                        out.append(
                            f"{t.source}: conflicting inbound SIP trunks {other.name!r} and "
                            f"{t.name!r}, using the same number(s) {nums} and allowed number "
                            f"{ikey!r}"
                        )
                    continue
                by_inbound[ikey] = t
    return out


# --------------------------------------------------------------------------------------------
# Dispatch rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DispatchRule:
    """A validated LiveKit dispatch rule (``livekit.SIPDispatchRuleInfo``)."""

    info: lk_sip.SIPDispatchRuleInfo
    id: str
    source: str

    @property
    def rule_id(self) -> str:
        """Same as :attr:`id` (LiveKit's ``sip_dispatch_rule_id``)."""
        return self.id

    @property
    def name(self) -> str:
        """The rule's ``name``, or its id when the name is empty."""
        return self.info.name or self.id

    @property
    def kind(self) -> str:
        """``"direct"``, ``"individual"`` or ``"callee"``."""
        which = self.info.rule.WhichOneof("rule") or ""
        return which.removeprefix("dispatch_rule_")

    @property
    def pin(self) -> str:
        """The rule's PIN ("" when open)."""
        return _room_and_pin(self.info)[1]

    @property
    def room(self) -> str:
        """Room name (direct) or room prefix (individual, callee)."""
        return _room_and_pin(self.info)[0]

    @property
    def trunk_ids(self) -> list[str]:
        """Trunks this rule is limited to; empty means any trunk."""
        return list(self.info.trunk_ids)

    @property
    def hide_phone_number(self) -> bool:
        """Hide the caller's number from attributes, identity and room name."""
        return bool(self.info.hide_phone_number)

    @property
    def attributes(self) -> dict[str, str]:
        """Attributes given to the caller's participant."""
        return dict(self.info.attributes)

    @property
    def metadata(self) -> str:
        """Metadata given to the caller's participant."""
        return str(self.info.metadata)

    @property
    def agents(self) -> list[str]:
        """Agent names to dispatch into the room (``room_config.agents[].agent_name``)."""
        return [a.agent_name for a in self.info.room_config.agents]

    @property
    def priority(self) -> int:
        """LiveKit's ``DispatchRulePriority``: lower wins."""
        return dispatch_rule_priority(self.info)


def _room_and_pin(info: lk_sip.SIPDispatchRuleInfo) -> tuple[str, str]:
    # GetPinAndRoom
    kind = info.rule.WhichOneof("rule")
    if kind == "dispatch_rule_direct":
        return info.rule.dispatch_rule_direct.room_name, info.rule.dispatch_rule_direct.pin
    if kind == "dispatch_rule_individual":
        r = info.rule.dispatch_rule_individual
        return r.room_prefix, r.pin
    if kind == "dispatch_rule_callee":
        return info.rule.dispatch_rule_callee.room_prefix, info.rule.dispatch_rule_callee.pin
    return "", ""


_LAST_PRIORITY: Final = 2**31 - 1


def dispatch_rule_priority(info: lk_sip.SIPDispatchRuleInfo) -> int:
    """LiveKit's ``DispatchRulePriority``: PIN rules first, then direct < individual < callee;
    +1000 each for no ``inbound_numbers`` and no ``numbers``."""
    kind = info.rule.WhichOneof("rule")
    base = {"dispatch_rule_direct": 0, "dispatch_rule_individual": 1, "dispatch_rule_callee": 2}
    if kind not in base:
        return _LAST_PRIORITY
    _, pin = _room_and_pin(info)
    priority = base[kind] + (0 if pin else 100)
    if not info.inbound_numbers:
        priority += 1000
    if not info.numbers:
        priority += 1000
    return priority


def _sort_key(rule: DispatchRule) -> tuple[int, str]:
    # hasHigherPriority: priority, then room name/prefix for a predictable order.
    return (rule.priority, rule.room)


def parse_dispatch_rule(
    data: Any, *, source: str = "<memory>", rule_id: str | None = None
) -> DispatchRule:
    """Build a :class:`DispatchRule` from decoded JSON; raise TrunkFileError.

    Accepts ``{"dispatch_rule": {...}}`` and the older flat form whose rule fields are
    top-level (``lk sip create-dispatch-rule`` and LiveKit's ``DispatchRuleInfo()`` accept it).
    """
    req = _parse_message(data, lk_sip.CreateSIPDispatchRuleRequest(), source)
    problems = validate(req, source=source)
    if problems:
        raise TrunkFileError(problems)
    info = lk_sip.SIPDispatchRuleInfo()
    info.CopyFrom(req.dispatch_rule if req.HasField("dispatch_rule") else _flat_dispatch_info(req))
    rid = rule_id or _derived_id("SDR_", info.name, source)
    info.sip_dispatch_rule_id = rid
    return DispatchRule(info=info, id=rid, source=source)


def load_dispatch_rule(path: str | Path, *, rule_id: str | None = None) -> DispatchRule:
    """Read a LiveKit dispatch rule file as ``lk sip dispatch create FILE`` would.

    The id is ``rule_id`` when given, else ``SDR_`` + 12 hex digits of SHA-256 of the rule name
    (of the file name when the name is empty).
    """
    source, data = _read_json(path)
    if isinstance(data, dict) and "trunk" in data and "dispatch_rule" not in data:
        raise TrunkFileError([f"{source}: this is a trunk file, not a dispatch rule file"])
    return parse_dispatch_rule(data, source=source, rule_id=rule_id)


class DispatchRuleSet:
    """Dispatch rules selected per call as LiveKit's ``MatchDispatchRuleIter`` selects them.

    Construction refuses rules that collide on (PIN, trunk, inbound number, number), as
    LiveKit's ``DispatchRuleValidator`` does.
    """

    def __init__(self, rules: Iterable[DispatchRule]) -> None:
        self.rules: tuple[DispatchRule, ...] = tuple(rules)
        problems = _rule_conflicts(self.rules)
        if problems:
            raise TrunkFileError(problems)

    def __iter__(self) -> Iterator[DispatchRule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def select(
        self,
        trunk_id: str | None,
        called_number: str,
        caller_number: str,
        *,
        pin: str = "",
        no_pin: bool = False,
    ) -> DispatchRule | None:
        """Pick the rule for a call, or ``None`` when no rule applies (LiveKit drops the call).

        ``inbound_numbers`` (caller) and ``numbers`` (called) are compared verbatim, not
        normalised, exactly as LiveKit does. PIN filtering: ``no_pin`` skips PIN rules; a sent
        ``pin`` keeps only rules with that PIN. Rules naming ``trunk_id`` in ``trunk_ids`` win
        over rules without ``trunk_ids``; within each group the lowest
        :func:`dispatch_rule_priority` wins, ties broken by room name.
        """
        specific: list[DispatchRule] = []
        default: list[DispatchRule] = []
        for rule in self.rules:
            info = rule.info
            if info.inbound_numbers and caller_number not in info.inbound_numbers:
                continue
            if info.numbers and called_number not in info.numbers:
                continue
            if info.rule.WhichOneof("rule") is None:
                continue
            if no_pin:
                if rule.pin:
                    continue
            elif pin and rule.pin != pin:
                continue
            if not info.trunk_ids:
                default.append(rule)
            elif trunk_id is not None and trunk_id in info.trunk_ids:
                specific.append(rule)
        for group in (specific, default):
            if group:
                return min(group, key=_sort_key)
        return None


def _rule_conflicts(rules: Sequence[DispatchRule]) -> list[str]:
    out: list[str] = []
    by_key: dict[tuple[str, str, str, str], DispatchRule] = {}
    ids: dict[str, DispatchRule] = {}
    for r in rules:
        if r.id in ids:
            out.append(f"{r.source}: dispatch rule id {r.id!r} is also used by {ids[r.id].source}")
        ids[r.id] = r
        for trunk in list(r.info.trunk_ids) or [""]:
            for inbound in list(r.info.inbound_numbers) or [""]:
                for number in list(r.info.numbers) or [""]:
                    key = (r.pin, trunk, normalize_number(inbound), normalize_number(number))
                    other = by_key.get(key)
                    if other is not None:
                        out.append(
                            f"{r.source}: dispatch rule for the same trunk, inbound number, "
                            f"number, and PIN combination already exists in dispatch rule "
                            f"{other.id!r} {other.name!r}"
                        )
                        break
                    by_key[key] = r
    return out


def masked_caller(caller_number: str) -> str:
    """The caller number as LiveKit shows it with ``hide_phone_number``: its last 4 characters
    (the last 1 when it has 4 or fewer)."""
    n = 4 if len(caller_number) > 4 else 1
    return caller_number[-n:] if caller_number else caller_number


def room_name(rule: DispatchRule, caller: str, called: str, random_suffix: str) -> str:
    """The room a call goes to, as LiveKit's ``EvaluateDispatchRule`` names it.

    * direct: ``room_name``.
    * individual: ``[room_prefix + "_"] + caller + "_" + random_suffix`` (the suffix is left out
      with ``no_randomness``); the caller is masked when ``hide_phone_number`` is set.
    * callee: ``[room_prefix + "_"] + called`` (+ ``"_" + random_suffix`` with ``randomize``).
    """
    info = rule.info
    kind = info.rule.WhichOneof("rule")
    if kind == "dispatch_rule_direct":
        return info.rule.dispatch_rule_direct.room_name
    if kind == "dispatch_rule_individual":
        ind = info.rule.dispatch_rule_individual
        who = masked_caller(caller) if info.hide_phone_number else caller
        room = f"{ind.room_prefix}_{who}" if ind.room_prefix else who
        return room if ind.no_randomness else f"{room}_{random_suffix}"
    if kind == "dispatch_rule_callee":
        cal = info.rule.dispatch_rule_callee
        room = f"{cal.room_prefix}_{called}" if cal.room_prefix else called
        return f"{room}_{random_suffix}" if cal.randomize else room
    raise ValueError(f"dispatch rule {rule.name!r} has no rule")


# --------------------------------------------------------------------------------------------
# CLI entry point
# --------------------------------------------------------------------------------------------


def validate_file(path: str | Path, *, routes_path: str | Path | None = None) -> list[str]:
    """Validate a trunk or dispatch rule file as LiveKit would; return every problem.

    The kind is told by the top-level key: ``trunk`` or ``dispatch_rule`` (or the flat
    dispatch form's fields). With ``routes_path`` the routes file is validated too and, for a
    trunk, each routes result attribute must be mapped by the trunk's
    ``attributes_to_headers``. An empty list means valid.
    """
    try:
        source, data = _read_json(path)
    except TrunkFileError as exc:
        return list(exc.problems)
    problems: list[str] = []
    trunk: Trunk | None = None
    flat = set(lk_sip.CreateSIPDispatchRuleRequest.DESCRIPTOR.fields_by_name) | {
        f.json_name for f in lk_sip.CreateSIPDispatchRuleRequest.DESCRIPTOR.fields
    }
    try:
        if not isinstance(data, dict):
            parse_trunk(data, source=source)  # raises: one JSON object per file
        elif "trunk" in data:
            trunk = parse_trunk(data, source=source)
        elif data and set(data) <= flat:
            parse_dispatch_rule(data, source=source)
        else:
            problems.append(
                f'{source}: neither a trunk file ({{"trunk": {{...}}}}) nor a dispatch rule '
                'file ({"dispatch_rule": {...}})' + f"; top-level keys: {sorted(data)}"
            )
    except TrunkFileError as exc:
        problems += exc.problems
    if routes_path is not None:
        # Imported here: the agent layer builds on the edge, not the other way round.
        from byeline.agent.routes import RoutesFileError, check_routes_against_trunk, load_routes

        try:
            routes = load_routes(routes_path)
        except RoutesFileError as routes_exc:  # its own name: mypyc types `exc` once
            problems += routes_exc.problems
        else:
            if trunk is not None:
                problems += check_routes_against_trunk(routes, trunk)
    return problems
