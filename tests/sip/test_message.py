"""SIP message grammar and framing: parse, serialize, headers, stream framing, RFC 4475 torture."""

from __future__ import annotations

import contextlib
import csv
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byeline.sip import grammar
from byeline.sip import message as message_module
from byeline.sip.message import (
    COMPACT_FORMS,
    KEEPALIVE_PING,
    MAX_MESSAGE_SIZE,
    Headers,
    Message,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    branch_span,
    canonical_name,
    head_end,
    header_tag,
    parse_address,
    parse_cseq,
    parse_message,
    parse_uri,
    parse_via,
    split_header_values,
    via_is_valid,
)

RFC4475 = Path(__file__).resolve().parents[2].parent / "shared" / "rfc4475"

VIA = "SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-five9-1;rport"
FROM = '"Five9 IVR" <sip:+15551230000@five9.example>;tag=f9-tag'
TO = "<sip:agent@byeline.example>"
CALL_ID = "c0ffee-1@198.51.100.20"


def sip(*lines: str, body: bytes = b"", eol: str = "\r\n") -> bytes:
    """A message from its start line and header lines, blank line, then ``body``."""
    return (eol.join(lines) + eol + eol).encode() + body


def invite(*extra: str, body: bytes = b"", cl: int | None = -1, eol: str = "\r\n") -> bytes:
    """An INVITE as Five9 sends it; ``cl=-1`` computes Content-Length, None omits it."""
    lines = [
        "INVITE sip:agent@byeline.example SIP/2.0",
        f"Via: {VIA}",
        "Max-Forwards: 70",
        f"From: {FROM}",
        f"To: {TO}",
        f"Call-ID: {CALL_ID}",
        "CSeq: 1 INVITE",
        "Contact: <sip:five9@198.51.100.20:5060>",
        "X-CallANI: 5551230000",
        *extra,
    ]
    if cl is not None:
        lines.append(f"Content-Length: {len(body) if cl == -1 else cl}")
    return sip(*lines, body=body, eol=eol)


def response(status_line: str = "SIP/2.0 200 OK", *extra: str, body: bytes = b"") -> bytes:
    return sip(
        status_line,
        f"Via: {VIA}",
        f"From: {FROM}",
        f"To: {TO};tag=ours",
        f"Call-ID: {CALL_ID}",
        "CSeq: 1 INVITE",
        *extra,
        f"Content-Length: {len(body)}",
        body=body,
    )


def parse_error(data: bytes, *, stream: bool = False) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data, stream=stream)
    return info.value


def parse_request(data: bytes, *, stream: bool = False) -> Request:
    msg = parse_message(data, stream=stream)
    assert isinstance(msg, Request)
    return msg


def parse_response(data: bytes, *, stream: bool = False) -> Response:
    msg = parse_message(data, stream=stream)
    assert isinstance(msg, Response)
    return msg


SDP = b"v=0\r\no=- 1 1 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n"


# -- requests and responses ------------------------------------------------------------------


def test_parse_request_fields() -> None:
    msg = parse_request(invite(body=SDP))
    assert msg.method == "INVITE"
    assert msg.uri == "sip:agent@byeline.example"
    assert msg.version == "SIP/2.0"
    assert msg.first_line == "INVITE sip:agent@byeline.example SIP/2.0"
    assert msg.call_id == CALL_ID
    assert msg.cseq == (1, "INVITE")
    assert msg.from_tag == "f9-tag"
    assert msg.to_tag is None
    assert msg.top_via == VIA
    assert msg.branch == "z9hG4bK-five9-1"
    assert msg.body == SDP
    assert msg.headers.get("x-callani") == "5551230000"
    assert [name for name, _ in msg.headers] == [
        "Via",
        "Max-Forwards",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "X-CallANI",
        "Content-Length",
    ]


def test_parse_response_fields() -> None:
    msg = parse_response(response("SIP/2.0 486 Busy Here"))
    assert (msg.version, msg.status, msg.reason) == ("SIP/2.0", 486, "Busy Here")
    assert msg.first_line == "SIP/2.0 486 Busy Here"
    assert msg.to_tag == "ours"
    assert msg.body == b""


def test_header_values_are_stripped_and_may_be_empty() -> None:
    msg = parse_request(invite("Subject:   \t", "X-Pad:\t  padded \t"))
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("X-Pad") == "padded"


def test_space_before_colon_is_accepted() -> None:
    msg = parse_request(invite("X-Spaced \t: value"))
    assert msg.headers.get("X-Spaced") == "value"


def test_folded_header_lines_are_joined_with_one_space() -> None:
    data = invite("Subject: first", "   second", "\tthird  ", "X-After: yes")
    msg = parse_request(data)
    assert msg.headers.get("Subject") == "first second third"
    assert msg.headers.get("X-After") == "yes"


def test_continuation_before_any_header_is_an_error_with_partial() -> None:
    data = b"INVITE sip:a@b.example SIP/2.0\r\n folded\r\nVia: x\r\n\r\n"
    exc = parse_error(data)
    assert exc.reason == "continuation line before any header"
    assert exc.status == 400
    assert exc.partial is not None
    assert exc.partial.method == "INVITE"
    assert len(exc.partial.headers) == 0


@pytest.mark.parametrize(("compact", "canonical"), sorted(COMPACT_FORMS.items()))
def test_compact_forms_expand(compact: str, canonical: str) -> None:
    assert canonical_name(compact) == canonical
    assert canonical_name(compact.upper()) == canonical
    h = Headers([(compact, "x")])
    assert list(h) == [(canonical, "x")]
    assert h.get(canonical.upper()) == "x"
    assert h.get(compact.upper()) == "x"


def test_compact_form_message() -> None:
    data = sip(
        "OPTIONS sip:agent@byeline.example SIP/2.0",
        f"v: {VIA}",
        f"f: {FROM}",
        f"t: {TO}",
        f"i: {CALL_ID}",
        "CSeq: 7 OPTIONS",
        "m: <sip:five9@198.51.100.20>",
        "c: text/plain",
        "l: 2",
        body=b"hi--ignored",
    )
    msg = parse_request(data)
    assert msg.call_id == CALL_ID
    assert msg.top_via == VIA
    assert msg.headers.get("Contact") == "<sip:five9@198.51.100.20>"
    assert msg.headers.get("Content-Type") == "text/plain"
    assert msg.body == b"hi"


def test_canonical_name_keeps_other_spellings() -> None:
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("CSEQ") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("X-five9ANI") == "X-five9ANI"
    assert canonical_name("z") == "z"  # a single letter that is no compact form


def test_multiple_via_lines_and_comma_lists() -> None:
    data = sip(
        "BYE sip:agent@byeline.example SIP/2.0",
        "Via: SIP/2.0/UDP p1.example;branch=z9hG4bKp1, SIP/2.0/TCP p2.example;branch=z9hG4bKp2",
        "v: SIP/2.0/UDP uac.example;branch=z9hG4bKuac",
        f"From: {FROM}",
        f"To: {TO};tag=ours",
        f"Call-ID: {CALL_ID}",
        "CSeq: 2 BYE",
        "Content-Length: 0",
    )
    msg = parse_request(data)
    assert msg.vias() == [
        "SIP/2.0/UDP p1.example;branch=z9hG4bKp1",
        "SIP/2.0/TCP p2.example;branch=z9hG4bKp2",
        "SIP/2.0/UDP uac.example;branch=z9hG4bKuac",
    ]
    assert msg.headers.getall("Via") == [
        "SIP/2.0/UDP p1.example;branch=z9hG4bKp1, SIP/2.0/TCP p2.example;branch=z9hG4bKp2",
        "SIP/2.0/UDP uac.example;branch=z9hG4bKuac",
    ]
    assert msg.top_via == "SIP/2.0/UDP p1.example;branch=z9hG4bKp1"
    assert msg.branch == "z9hG4bKp1"


def test_top_via_skips_an_empty_first_line_and_branch_may_be_absent() -> None:
    msg = Message(Headers([("Via", " , "), ("Via", "SIP/2.0/UDP h.example;received=1.2.3.4")]))
    assert msg.top_via == "SIP/2.0/UDP h.example;received=1.2.3.4"
    assert msg.branch is None


def test_replace_first_renews_what_the_accessors_derived_from_that_header() -> None:
    req = parse_request(invite())
    assert (req.top_via, req.branch, req.cseq, req.from_tag) == (
        VIA,
        "z9hG4bK-five9-1",
        (1, "INVITE"),
        "f9-tag",
    )
    req.headers.replace_first("Via", "SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-2;rport=5060")
    assert req.top_via == "SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-2;rport=5060"
    assert req.branch == "z9hG4bK-2"
    assert (req.cseq, req.from_tag) == ((1, "INVITE"), "f9-tag")
    req.headers.replace_first("CSeq", "7 INVITE")
    req.headers.replace_first("From", "<sip:five9@example.com>;tag=other")
    assert (req.cseq, req.from_tag, req.branch) == ((7, "INVITE"), "other", "z9hG4bK-2")


def test_accessors_raise_key_error_when_headers_are_absent() -> None:
    msg = Message()
    with pytest.raises(KeyError):
        _ = msg.call_id
    with pytest.raises(KeyError):
        _ = msg.cseq
    with pytest.raises(KeyError):
        _ = msg.top_via
    assert msg.from_tag is None
    assert msg.to_tag is None
    with pytest.raises(NotImplementedError):
        msg.serialize()


def test_leading_crlfs_are_ignored() -> None:
    msg = parse_request(b"\r\n\r\n\n" + invite())
    assert msg.method == "INVITE"


def test_bare_lf_message_is_tolerated() -> None:
    msg = parse_request(invite(body=b"v=0\n", eol="\n"))
    assert msg.call_id == CALL_ID
    assert msg.headers.get("X-CallANI") == "5551230000"
    assert msg.body == b"v=0\n"


def test_mixed_line_ends_end_the_headers_at_the_first_empty_line() -> None:
    data = invite(body=b"ab\r\n\r\ncd", eol="\n").replace(b"\n\n", b"\n\r\n", 1)
    msg = parse_request(data)
    assert msg.body == b"ab\r\n\r\ncd"


def test_bare_lf_headers_with_crlf_inside_body() -> None:
    # The earliest blank line ends the headers, even when the body holds a CRLFCRLF.
    msg = parse_request(invite(body=b"x\r\n\r\ny", eol="\n"))
    assert msg.body == b"x\r\n\r\ny"


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\n\r\n", b"Via: x", b":", b" ", b"\xc3\xa9"]
        ),
        max_size=14,
    )
)
def test_the_crlf_shortcut_reads_the_head_as_the_general_reading_does(
    pieces: list[bytes],
) -> None:
    # parse_message reads an ASCII, CRLF-only head in one search (_crlf_lines); wherever it
    # answers, the head must end where head_end says and split into the same lines.
    data = b"".join(pieces)
    shortcut = message_module._crlf_lines(data)
    if shortcut is None:
        return
    stop, lines = shortcut
    assert stop == head_end(data)[0]
    head = data[:stop].decode("utf-8")
    assert lines == [line[:-1] if line.endswith("\r") else line for line in head.split("\n")]


def test_non_ascii_head_is_read_as_utf8() -> None:
    data = invite().replace(b'From: "Five9 IVR"', 'From: "José"'.encode(), 1)
    assert parse_request(data).headers.get("From", "").startswith('"José"')


def test_header_names_are_read_alike_the_first_time_and_after() -> None:
    # The parser remembers each name as written (blanks before the colon included).
    for _ in range(2):
        msg = parse_request(invite().replace(b"Max-Forwards:", b"mAX-fORWARDS \t:", 1))
        assert list(msg.headers).count(("Max-Forwards", "70")) == 1


def test_lowercase_version_is_accepted() -> None:
    data = invite().replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1)
    assert parse_request(data).version == "sip/2.0"


def test_utf8_reason_phrase() -> None:
    reason = "Très bien — но сто"
    msg = parse_response(response(f"SIP/2.0 200 {reason}"))
    assert msg.reason == reason
    assert msg.serialize().startswith(f"SIP/2.0 200 {reason}\r\n".encode())


@pytest.mark.parametrize(
    ("line", "reason"),
    [("SIP/2.0 100 ", ""), ("SIP/2.0 180", ""), ("SIP/2.0 200  OK ", " OK ")],
)
def test_reason_phrase_may_be_empty(line: str, reason: str) -> None:
    assert parse_response(response(line)).reason == reason


def test_header_bytes_must_be_utf8() -> None:
    exc = parse_error(invite("Subject: caf\xe9").replace("é".encode(), b"\xe9"))
    assert exc.reason.startswith("header bytes are not UTF-8 at offset ")
    assert exc.partial is None


@pytest.mark.parametrize("version", ["SIP/3.0", "SIP/2.1", "SIP/1.0", "SIP/02.0"])
def test_bad_version_in_request_gives_505_with_partial(version: str) -> None:
    exc = parse_error(invite().replace(b"SIP/2.0\r\n", f"{version}\r\n".encode(), 1))
    assert exc.status == 505
    assert exc.reason == f"unsupported version {version}"
    assert exc.partial is not None
    assert exc.partial.call_id == CALL_ID


def test_bad_version_in_response_gives_505_without_partial() -> None:
    exc = parse_error(response("SIP/3.0 200 OK"))
    assert exc.status == 505
    assert exc.partial is None


def test_bad_version_wins_over_a_header_fault() -> None:
    data = b"OPTIONS sip:a@b.example SIP/7.0\r\nVia: x\r\nnot a header\r\n\r\n"
    exc = parse_error(data)
    assert exc.status == 505


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header_in_request(missing: str) -> None:
    data = b"\r\n".join(
        line for line in invite().split(b"\r\n") if not line.startswith(missing.encode() + b":")
    )
    exc = parse_error(data)
    assert exc.reason == f"missing {missing} header"
    assert exc.status == 400
    assert exc.partial is not None
    assert exc.partial.headers.get(missing) is None
    assert exc.partial.headers.get("X-CallANI") == "5551230000"


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header_in_response(missing: str) -> None:
    data = b"\r\n".join(
        line for line in response().split(b"\r\n") if not line.startswith(missing.encode() + b":")
    )
    exc = parse_error(data)
    assert exc.reason == f"missing {missing} header"
    assert exc.partial is None


@pytest.mark.parametrize("empty", ["Via: ", "Via: , ,", "Call-ID:", "From: \t"])
def test_empty_mandatory_header_counts_as_missing(empty: str) -> None:
    name = empty.split(":")[0]
    data = invite().replace(
        next(line for line in invite().split(b"\r\n") if line.startswith(name.encode() + b":")),
        empty.encode(),
    )
    assert parse_error(data).reason == f"missing {name} header"


@pytest.mark.parametrize("name", ["From", "To", "Call-ID", "CSeq"])
def test_single_valued_header_repeated_is_an_error(name: str) -> None:
    value = {"From": FROM, "To": TO, "Call-ID": "other@x", "CSeq": "1 INVITE"}[name]
    exc = parse_error(invite(f"{name}: {value}"))
    assert exc.reason == f"more than one {name} header"
    assert exc.partial is not None


def test_comma_inside_quoted_display_name_is_one_from() -> None:
    msg = parse_request(invite().replace(FROM.encode(), b'"Doe, John" <sip:j@x.example>;tag=1'))
    assert msg.from_tag == "1"


@pytest.mark.parametrize(
    ("cseq", "reason"),
    [
        ("1", "malformed CSeq '1'"),
        ("x INVITE", "malformed CSeq 'x INVITE'"),
        ("1 INVITE extra", "malformed CSeq '1 INVITE extra'"),
        ("-1 INVITE", "malformed CSeq '-1 INVITE'"),
        ("\u0663 INVITE", "malformed CSeq '\u0663 INVITE'"),
        ("\u00b2 INVITE", "malformed CSeq '\u00b2 INVITE'"),
        ("1 INV/ITE", "malformed CSeq '1 INV/ITE'"),
        ("2147483648 INVITE", "CSeq number out of range in '2147483648 INVITE'"),
        ("9" * 5000 + " INVITE", f"CSeq number out of range in '{'9' * 5000} INVITE'"),
    ],
)
def test_malformed_cseq(cseq: str, reason: str) -> None:
    exc = parse_error(invite().replace(b"CSeq: 1 INVITE", f"CSeq: {cseq}".encode()))
    assert exc.reason == reason
    assert exc.partial is not None


def test_cseq_limits() -> None:
    assert parse_cseq("2147483647 INVITE") == (2147483647, "INVITE")
    assert parse_cseq(" 0007   BYE ") == (7, "BYE")
    assert parse_cseq("0" * 6000 + "1 BYE") == (1, "BYE")
    with pytest.raises(ValueError, match="out of range"):
        parse_cseq("2147483648 BYE")


@pytest.mark.parametrize(
    ("method", "cseq_method"),
    [
        ("OPTIONS", "INVITE"),
        ("ACK", "INVITE"),
        ("INVITE", "ACK"),
        ("CANCEL", "INVITE"),
        ("BYE", "bye"),
    ],
)
def test_cseq_method_must_match_the_request(method: str, cseq_method: str) -> None:
    data = invite().replace(b"INVITE sip:", f"{method} sip:".encode(), 1)
    data = data.replace(b"CSeq: 1 INVITE", f"CSeq: 1 {cseq_method}".encode())
    exc = parse_error(data)
    assert exc.reason == f"CSeq method {cseq_method} does not match {method}"
    assert exc.partial is not None


@pytest.mark.parametrize("method", ["ACK", "CANCEL", "BYE", "NEWMETHOD"])
def test_cseq_method_matching_the_request(method: str) -> None:
    data = invite().replace(b"INVITE sip:", f"{method} sip:".encode(), 1)
    data = data.replace(b"CSeq: 1 INVITE", f"CSeq: 1 {method}".encode())
    assert parse_request(data).cseq == (1, method)


def test_response_cseq_method_is_free() -> None:
    assert parse_response(response().replace(b"1 INVITE", b"9 BYE")).cseq == (9, "BYE")


# -- Content-Length ------------------------------------------------------------------------


def test_content_length_truncates_a_longer_datagram() -> None:
    data = invite(body=SDP, cl=4)
    assert parse_request(data).body == b"v=0\r"


def test_content_length_zero_with_trailing_bytes() -> None:
    assert parse_request(invite(body=b"junk", cl=0)).body == b""


def test_shorter_body_than_content_length_is_an_error() -> None:
    exc = parse_error(invite(body=b"abc", cl=10))
    assert exc.reason == "Content-Length 10 exceeds the 3 body bytes"
    assert exc.partial is not None
    assert exc.partial.call_id == CALL_ID


def test_missing_content_length_on_datagram_takes_the_rest() -> None:
    assert parse_request(invite(body=SDP, cl=None)).body == SDP


def test_missing_content_length_on_stream_is_an_error() -> None:
    exc = parse_error(invite(body=SDP, cl=None), stream=True)
    assert exc.reason == "Content-Length is required on a stream transport"
    assert exc.partial is not None


def test_content_length_on_stream() -> None:
    assert parse_request(invite(body=SDP), stream=True).body == SDP


def test_conflicting_content_lengths() -> None:
    exc = parse_error(invite("l: 3", body=b"abcd", cl=4))
    assert exc.reason == "conflicting Content-Length headers"
    assert exc.partial is not None


def test_equal_content_lengths_written_differently_agree() -> None:
    assert parse_request(invite("l: 0004", body=b"abcdef", cl=4)).body == b"abcd"


@pytest.mark.parametrize("value", ["-1", "abc", "4 ", "\u00b2", "\u0664", "1,2"])
def test_malformed_content_length(value: str) -> None:
    data = invite(body=b"abcd", cl=None).replace(b"\r\n\r\n", f"\r\nl: {value}x\r\n\r\n".encode())
    exc = parse_error(data)
    assert exc.reason == f"malformed Content-Length {(value + 'x').strip()!r}"


def test_enormous_content_length() -> None:
    digits = "9" * 5000
    exc = parse_error(
        invite(body=b"abc", cl=None).replace(b"\r\n\r\n", f"\r\nl: {digits}\r\n\r\n".encode())
    )
    assert exc.reason == f"Content-Length {digits} exceeds the 3 body bytes"


def test_oversize_datagram_is_refused() -> None:
    data = invite(body=b"x" * MAX_MESSAGE_SIZE)
    exc = parse_error(data)
    assert exc.reason == f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}"


# -- start line and header line faults ------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "HELLO",
        "INVITE sip:a@b.example",
        "INVITE\tsip:a@b.example\tSIP/2.0",
        "SIP/2.0 4294967301 better not break the receiver",
        "SIP/2.0 20 OK",
        "SIP/2.0 2000",
        "SIP/2.0 \u0662\u0660\u0660 OK",
        "SIP/2.0",
        "INV ITE sip:a@b.example SIP/2.0 extra",
        "INVITE  SIP/2.0",
        "\u00e9 sip:a@b.example SIP/2.0",
    ],
)
def test_malformed_start_line(line: str) -> None:
    exc = parse_error(sip(line, f"Via: {VIA}"))
    assert exc.reason == f"malformed start line {line!r}"
    assert exc.partial is None


@pytest.mark.parametrize("status", [99, 700, 0, 999])
def test_status_code_out_of_range(status: int) -> None:
    exc = parse_error(response(f"SIP/2.0 {status:03d} Odd"))
    assert exc.reason == f"status code {status} out of range"


def test_extra_spaces_in_request_line_are_tolerated() -> None:
    msg = parse_request(
        invite().replace(
            b"INVITE sip:agent@byeline.example SIP/2.0",
            b"INVITE  sip:agent@byeline.example   SIP/2.0  ",
        )
    )
    assert msg.first_line == "INVITE sip:agent@byeline.example SIP/2.0"


@pytest.mark.parametrize(
    "uri", ["<sip:agent@byeline.example>", "sip:agent@x; lr", "agent", "1sip:x"]
)
def test_malformed_request_uri_gives_partial(uri: str) -> None:
    data = invite().replace(b"sip:agent@byeline.example SIP", f"{uri} SIP".encode(), 1)
    exc = parse_error(data)
    assert exc.reason == f"malformed Request-URI {uri!r}"
    assert exc.status == 400
    assert exc.partial is not None
    assert exc.partial.uri == uri
    assert exc.partial.call_id == CALL_ID


def test_unknown_scheme_request_uri_is_well_formed() -> None:
    data = invite().replace(b"sip:agent@byeline.example SIP", b"soap.beep://192.0.2.1:3002 SIP", 1)
    assert parse_request(data).uri == "soap.beep://192.0.2.1:3002"


def test_malformed_header_line_keeps_the_headers_before_it() -> None:
    data = invite().replace(b"X-CallANI: 5551230000", b"X-CallANI 5551230000")
    exc = parse_error(data)
    assert exc.reason == "malformed header line 'X-CallANI 5551230000'"
    assert exc.partial is not None
    assert exc.partial.headers.get("Contact") == "<sip:five9@198.51.100.20:5060>"
    assert exc.partial.headers.get("X-CallANI") is None


def test_malformed_header_line_in_response_has_no_partial() -> None:
    exc = parse_error(response("SIP/2.0 200 OK", "@bad: x"))
    assert exc.reason == "malformed header line '@bad: x'"
    assert exc.partial is None


def test_bare_cr_inside_a_header_value_is_refused() -> None:
    exc = parse_error(invite("Subject: a\rX-Injected: b"))
    assert exc.reason == "bare CR in header line 'Subject: a\\rX-Injected: b'"
    assert exc.partial is not None
    assert exc.partial.headers.get("X-Injected") is None


def test_bare_cr_in_start_line_is_refused() -> None:
    exc = parse_error(b"INVITE sip:a@b\rx SIP/2.0\r\nVia: x\r\n\r\n")
    assert exc.reason == "bare CR in start line 'INVITE sip:a@b\\rx SIP/2.0'"


def test_no_blank_line_after_the_headers_keeps_a_partial() -> None:
    data = invite().rstrip(b"\r\n") + b"\r\n"
    exc = parse_error(data)
    assert exc.reason == "no blank line after the headers"
    assert exc.partial is not None
    assert exc.partial.headers.get("Content-Length") == "0"
    assert exc.partial.call_id == CALL_ID


def test_no_blank_line_in_response() -> None:
    exc = parse_error(b"SIP/2.0 200 OK\r\nVia: x")
    assert exc.reason == "no blank line after the headers"
    assert exc.partial is None


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n\r\n", b"\n"])
def test_empty_message(data: bytes) -> None:
    assert parse_error(data).reason == "empty message"


def test_partial_is_enough_to_answer_400() -> None:
    # The edge answers 400 from the partial: it must hold every header a response echoes.
    exc = parse_error(invite(body=b"abc", cl=99))
    assert exc.partial is not None
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        assert exc.partial.headers.get(name) is not None, name


# -- serialize -----------------------------------------------------------------------------


def test_serialize_round_trip_recomputes_content_length() -> None:
    msg = parse_request(invite("X-Empty:", body=SDP))
    msg.body = b"\x00binary\r\n\r\nbody"
    msg.headers.add("Content-Length", "999")
    data = msg.serialize()
    assert data.endswith(b"\r\nContent-Length: 15\r\n\r\n\x00binary\r\n\r\nbody")
    assert data.count(b"Content-Length") == 1
    again = parse_request(data, stream=True)
    assert again.first_line == msg.first_line
    assert list(again.headers) == [h for h in msg.headers if h[0] != "Content-Length"] + [
        ("Content-Length", "15")
    ]
    assert again.body == msg.body


def test_serialize_exact_response_bytes() -> None:
    r = Response(
        status=180,
        reason="Ringing",
        headers=Headers([("v", VIA), ("To", TO), ("l", "77")]),
    )
    assert r.serialize() == (
        f"SIP/2.0 180 Ringing\r\nVia: {VIA}\r\nTo: {TO}\r\nContent-Length: 0\r\n\r\n".encode()
    )


def test_serialize_exact_request_bytes() -> None:
    r = Request(
        method="BYE",
        uri="sip:f9@x.example",
        headers=Headers([("X-RouteReason", "a b")]),
        body=b"hi",
    )
    assert (
        r.serialize()
        == b"BYE sip:f9@x.example SIP/2.0\r\nX-RouteReason: a b\r\nContent-Length: 2\r\n\r\nhi"
    )


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "a\rb"])
def test_serialize_refuses_line_breaks_in_values(value: str) -> None:
    r = Request(method="BYE", uri="sip:x@y", headers=Headers([("X-RouteReason", value)]))
    with pytest.raises(ValueError, match="line break in the value of header X-RouteReason"):
        r.serialize()


@pytest.mark.parametrize("name", ["X Route", "X:Route", "", "X\r\nY"])
def test_serialize_refuses_non_token_names(name: str) -> None:
    r = Request(method="BYE", uri="sip:x@y", headers=Headers([(name, "v")]))
    with pytest.raises(ValueError, match="is not a token"):
        r.serialize()


def test_serialize_refuses_line_breaks_in_the_start_line() -> None:
    with pytest.raises(ValueError, match="line break in start line"):
        Response(status=200, reason="OK\r\nX-Evil: 1").serialize()
    with pytest.raises(ValueError, match="line break in start line"):
        Request(method="BYE", uri="sip:x@y\n").serialize()


def test_serialize_keeps_quoted_pair_controls() -> None:
    # NUL, BEL and DEL are legal inside a quoted-pair (RFC 4475 §3.1.1.2).
    to = '"BEL:\\\x07 NUL:\\\x00" <sip:x@y>'
    r = Response(headers=Headers([("To", to)]))
    assert f"To: {to}\r\n".encode() in r.serialize()


# -- Headers ------------------------------------------------------------------------------


def test_headers_are_case_insensitive() -> None:
    h = Headers([("call-id", "a"), ("X-Five9", "1"), ("x-five9", "2")])
    assert h.get("CALL-ID") == "a"
    assert h.get("i") == "a"
    assert "Call-Id" in h
    assert "X-FIVE9" in h
    assert "Missing" not in h
    assert 42 not in h
    assert h.get("Missing") is None
    assert h.get("Missing", "dflt") == "dflt"
    assert h.getall("X-FIVE9") == ["1", "2"]
    assert list(h) == [("Call-ID", "a"), ("X-Five9", "1"), ("x-five9", "2")]
    assert len(h) == 3


def test_headers_set_replaces_in_place() -> None:
    h = Headers([("X-A", "1"), ("Via", "v1"), ("X-B", "2"), ("v", "v2"), ("X-C", "3")])
    h.set("VIA", "only")
    assert list(h) == [("X-A", "1"), ("Via", "only"), ("X-B", "2"), ("X-C", "3")]
    h.set("X-New", "n")
    assert list(h)[-1] == ("X-New", "n")
    h.set("x-new", "m")
    assert h.getall("X-NEW") == ["m"]
    assert list(h)[-1] == ("x-new", "m")


def test_headers_remove_add_copy_repr() -> None:
    h = Headers([("Route", "<sip:a;lr>"), ("To", "t"), ("Route", "<sip:b;lr>")])
    c = h.copy()
    h.remove("route")
    assert list(h) == [("To", "t")]
    assert c.getall("Route") == ["<sip:a;lr>", "<sip:b;lr>"]
    c.add("t", "second")
    assert c.getall("To") == ["t", "second"]
    assert len(h) == 1
    h.remove("Absent")
    assert repr(h) == "Headers([('To', 't')])"


def test_headers_values_split_respecting_quotes_and_brackets() -> None:
    h = Headers(
        [
            ("Contact", '"Doe, John" <sip:j@x.example;a=1,2>;q=0.5, <sip:k@y.example>'),
            ("Contact", "sip:z@z.example"),
        ]
    )
    assert h.values("Contact") == [
        '"Doe, John" <sip:j@x.example;a=1,2>;q=0.5',
        "<sip:k@y.example>",
        "sip:z@z.example",
    ]
    assert h.values("Absent") == []


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("", []),
        ("   ", []),
        (",", []),
        (" , a ,, b , ", ["a", "b"]),
        ("a", ["a"]),
        ('"a\\", b" <x>, c', ['"a\\", b" <x>', "c"]),
        ('"a\\\\", b', ['"a\\\\"', "b"]),
        ("<a,<b,c>>, d", ["<a,<b,c>>", "d"]),
        ("a>, b", ["a>", "b"]),
        ('"unterminated, x', ['"unterminated, x']),
    ],
)
def test_split_header_values(value: str, parts: list[str]) -> None:
    assert split_header_values(value) == parts


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        (None, None),
        ("<sip:a@b>", None),
        ("<sip:a@b;tag=in-uri>", None),
        ("<sip:a@b;tag=in-uri>;tag=out", "out"),
        ("sip:a@b;tag=1", "1"),
        ('"x;tag=q" <sip:a@b> ; TAG = abc ;foo', "abc"),
        ("<sip:a@b>;xtag=1", None),
        ("<sip:a@b>;tag=a1;other=2", "a1"),
        ("<sip:a@b>;tag=", None),
    ],
)
def test_header_tag(value: str | None, tag: str | None) -> None:
    assert header_tag(value) == tag


def test_structured_parsers_delegate_to_sipmessage() -> None:
    addr = parse_address('"Five9" <sip:+15551230000@five9.example:5060;transport=tcp>;tag=x')
    assert str(addr.uri) == "sip:+15551230000@five9.example:5060;transport=tcp"
    assert addr.parameters["tag"] == "x"
    uri = parse_uri("sips:agent@[2001:db8::1]:5061")
    assert (uri.scheme, uri.user, uri.port) == ("sips", "agent", 5061)
    via = parse_via(VIA)
    assert via.transport == "UDP"
    assert via.parameters["branch"] == "z9hG4bK-five9-1"
    with pytest.raises(ValueError):
        parse_uri("not a uri")


# -- StreamFramer ---------------------------------------------------------------------------


def frame(chunks: list[bytes], max_size: int = MAX_MESSAGE_SIZE) -> list[bytes]:
    """Feed ``chunks`` one at a time and collect what comes out after each."""
    framer = StreamFramer(max_size)
    out: list[bytes] = []
    for chunk in chunks:
        framer.feed(chunk)
        out.extend(framer.messages())
    return out


def test_framer_byte_by_byte() -> None:
    data = invite(body=SDP)
    framer = StreamFramer()
    for i in range(len(data) - 1):
        framer.feed(data[i : i + 1])
        assert list(framer.messages()) == [], i
    framer.feed(data[-1:])
    assert list(framer.messages()) == [data]
    assert list(framer.messages()) == []


def test_framer_coalesced_messages_with_bodies() -> None:
    a = invite(body=b"first\r\n\r\nbody")
    b = response(body=b"")
    c = invite(body=SDP)
    assert frame([a + b + c[:30], c[30:]]) == [a, b, c]


def test_framer_keepalives() -> None:
    m = invite()
    assert frame([KEEPALIVE_PING]) == [KEEPALIVE_PING]
    assert frame([b"\r\n", b"\r", b"\n"]) == [KEEPALIVE_PING]  # a ping split across reads
    assert frame([b"\r\n"]) == []  # a pong (or half a ping): nothing yet
    assert frame([b"\r\n", m]) == [m]  # a pong before a message
    assert frame([KEEPALIVE_PING + b"\r\n" + m + KEEPALIVE_PING]) == [
        KEEPALIVE_PING,
        m,
        KEEPALIVE_PING,
    ]
    assert frame([b"\n\n\r" + m]) == [m]


def test_framer_compact_content_length_and_bare_lf_head() -> None:
    m = invite(body=b"abc", cl=None, eol="\n").replace(b"\n\n", b"\nl: 3\n\n", 1)
    assert frame([m + m]) == [m, m]
    assert parse_request(m, stream=True).body == b"abc"


def test_framer_waits_for_the_body() -> None:
    m = invite(body=SDP)
    framer = StreamFramer()
    framer.feed(m[:-1])
    assert list(framer.messages()) == []
    framer.feed(m[-1:] + m[:10])
    assert list(framer.messages()) == [m]


def test_framer_requires_content_length() -> None:
    with pytest.raises(SipParseError, match=r"^Content-Length is required on a stream transport$"):
        frame([invite(cl=None)])


@pytest.mark.parametrize(
    ("cl_lines", "error"),
    [
        ("Content-Length: -1", "malformed Content-Length b'-1'"),
        ("Content-Length: \u00b2", "malformed Content-Length b'\\xc2\\xb2'"),
        ("Content-Length: 1\r\nl: 2", "conflicting Content-Length headers"),
        ("Content-Length: " + "9" * 5000, "Content-Length b'99999999999999999999' exceeds 65535"),
    ],
)
def test_framer_content_length_faults(cl_lines: str, error: str) -> None:
    data = invite(cl=None).replace(b"\r\n\r\n", f"\r\n{cl_lines}\r\n\r\n".encode())
    with pytest.raises(SipParseError) as info:
        frame([data])
    assert info.value.reason == error


def test_framer_equal_content_lengths_agree() -> None:
    data = invite(body=b"abcd", cl=4).replace(b"\r\n\r\n", b"\r\nl: 04\r\n\r\n")
    assert frame([data]) == [data]


def test_framer_oversize_message() -> None:
    data = invite(body=b"x" * 100)
    with pytest.raises(SipParseError) as info:
        frame([data[:50], data[50:]], max_size=len(data) - 1)
    assert info.value.reason == f"message of {len(data)} bytes exceeds {len(data) - 1}"
    assert frame([data], max_size=len(data)) == [data]


def test_framer_oversize_headers() -> None:
    framer = StreamFramer(max_size=100)
    framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: " + b"y" * 73)
    assert list(framer.messages()) == []  # 100 bytes: still possible
    framer.feed(b"y")
    with pytest.raises(SipParseError, match=r"^headers exceed the maximum message size$"):
        list(framer.messages())


# -- RFC 4475 torture messages ---------------------------------------------------------------

# Our verdict on each message, datagram transport: None = parses, else (status, partial?).
# "invalid" messages the parser accepts are ones RFC 4475 lets a liberal parser take, or
# faults in structured values (URIs, name-addr, Via, Date) that only the layer that reads
# that value can see; the edge reads From/To/Contact/Via with sipmessage and refuses there.
EXPECTED: dict[str, tuple[int, bool] | None] = {
    # valid: all parse
    "wsinv.dat": None,
    "intmeth.dat": None,
    "esc01.dat": None,
    "escnull.dat": None,
    "esc02.dat": None,
    "lwsdisp.dat": None,
    "longreq.dat": None,
    "dblreq.dat": None,
    "semiuri.dat": None,
    "transports.dat": None,
    "mpart01.dat": None,
    "unreason.dat": None,
    "noreason.dat": None,
    # invalid
    "badinv01.dat": None,  # empty Via/Contact params: structured-value fault (Via parser)
    "clerr.dat": (400, True),
    "ncl.dat": (400, True),
    "scalar02.dat": (400, True),
    "scalarlg.dat": (400, False),  # a response: dropped
    "quotbal.dat": None,  # To display name: structured-value fault
    "ltgtruri.dat": (400, True),
    "lwsruri.dat": (400, True),
    "lwsstart.dat": None,  # extra SP tolerated, never forwarded (we re-serialize)
    "trws.dat": None,  # same
    "escruri.dat": None,  # an endpoint may ignore the escaped headers
    "baddate.dat": None,  # Date is not read by byeline
    "regbadct.dat": None,  # Contact: structured-value fault (registrar only)
    "badaspec.dat": None,  # To/From addr-spec spaces: structured-value fault
    "baddn.dat": (400, True),  # the archive copy lacks the blank line after the headers
    "badvers.dat": (505, True),
    "mismatch01.dat": (400, True),
    "mismatch02.dat": (400, True),
    "bigcode.dat": (400, False),
    # transaction / application / backcompat layers
    "badbranch.dat": None,
    "insuf.dat": (400, True),
    "unkscm.dat": None,
    "novelsc.dat": None,
    "unksm2.dat": None,
    "bext01.dat": None,
    "invut.dat": None,
    "regaut01.dat": None,
    "multi01.dat": (400, True),
    "mcl01.dat": (400, True),
    "bcast.dat": None,
    "zeromf.dat": None,
    "cparam01.dat": None,
    "cparam02.dat": None,
    "regescrt.dat": None,
    "sdp01.dat": None,
    "inv2543.dat": None,  # over a stream it has no Content-Length: 400
}


def torture_index() -> list[dict[str, str]]:
    if not (RFC4475 / "INDEX.tsv").is_file():
        pytest.skip(f"RFC 4475 torture messages not found at {RFC4475}")
    with (RFC4475 / "INDEX.tsv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def torture(name: str) -> bytes:
    path = RFC4475 / name
    if not path.is_file():
        pytest.skip(f"RFC 4475 torture message {path} not found")
    return path.read_bytes()


def test_torture_index_is_covered() -> None:
    rows = torture_index()
    assert sorted(r["file"] for r in rows) == sorted(EXPECTED)
    valid = {r["file"] for r in rows if r["category"] == "valid"}
    assert all(EXPECTED[f] is None for f in valid)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_verdict(name: str) -> None:
    data = torture(name)
    expected = EXPECTED[name]
    if expected is None:
        assert isinstance(parse_message(data), Request | Response)
    else:
        exc = parse_error(data)
        assert (exc.status, exc.partial is not None) == expected, exc.reason


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_never_breaks_the_stream_path(name: str) -> None:
    data = torture(name)
    try:
        messages = frame([data, b"\r\n\r\n"])
    except SipParseError:
        return
    for m in messages:
        with contextlib.suppress(SipParseError):
            parse_message(m, stream=True)


def test_torture_valid_details() -> None:
    wsinv = parse_request(torture("wsinv.dat"))
    assert wsinv.headers.get("NewFangledHeader") == ("newfangled value continued newfangled value")
    assert wsinv.vias() == [
        "SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw",
        "SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8",
        "SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
    ]
    assert (wsinv.to_tag, wsinv.from_tag, wsinv.cseq) == ("1918181833n", "98asjd8", (9, "INVITE"))
    assert len(wsinv.body) == 150
    intmeth = parse_request(torture("intmeth.dat"))
    assert intmeth.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert intmeth.from_tag == "_token~1'+`*%!-."
    dblreq = parse_request(torture("dblreq.dat"))
    assert (dblreq.method, dblreq.body) == ("REGISTER", b"")
    assert dblreq.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # from compact "I:"
    mpart = parse_request(torture("mpart01.dat"))
    assert len(mpart.body) == int(mpart.headers.get("Content-Length") or "-1")
    assert b"\x00" in mpart.body
    unreason = parse_response(torture("unreason.dat"))
    assert unreason.status == 200
    assert unreason.reason.startswith("= 2**3 * 5**2 но сто девяносто девять")
    noreason = parse_response(torture("noreason.dat"))
    assert (noreason.status, noreason.reason) == (100, "")
    semiuri = parse_request(torture("semiuri.dat"))
    assert semiuri.uri == "sip:user;par=u%40example.net@example.com"


def test_torture_bad_version_is_505() -> None:
    exc = parse_error(torture("badvers.dat"))
    assert exc.reason == "unsupported version SIP/7.0"


def test_torture_rfc2543_invite_needs_content_length_on_a_stream() -> None:
    exc = parse_error(torture("inv2543.dat"), stream=True)
    assert exc.reason == "Content-Length is required on a stream transport"


# -- properties -----------------------------------------------------------------------------

BASES = [
    invite(body=SDP),
    invite("Subject: folded", "  line", "v: SIP/2.0/TCP b.example;branch=z9hG4bKb", eol="\n"),
    response("SIP/2.0 183 Session Progress", "Record-Route: <sip:p.example;lr>", body=SDP),
    b"\r\n\r\n" + response("SIP/2.0 100 "),
]


# Values that have broken SIP parsers: non-ASCII digits (str.isdigit() is true for
# them), numbers too long for int(), signs, unbalanced quotes and brackets.
NASTY = [
    "",
    "\u00b2",
    "\u0663",
    "1\u00b2 INVITE",
    "\u0661 INVITE",
    "9" * 5000,
    "9" * 5000 + " INVITE",
    "-1",
    "4294967296 INVITE",
    "1 ACK",
    ",",
    "<",
    '"',
    '"a\\',
    ";tag=",
    "SIP/2.0/UDP",
    "\x00",
]


READ_HEADERS = [b"content-length", b"l", b"cseq", b"via", b"from", b"to", b"call-id"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup", "value"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b"\n",
                        b"\r",
                        b" ",
                        b":",
                        b",",
                        b"\x00",
                        b"\xff",
                        b"\t",
                        b"9" * 20,
                        "\u00b2".encode(),  # isdigit() but not int()-able
                        "\u0663".encode(),  # an Arabic-Indic digit
                    ]
                )
            )
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "dup":
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        else:
            # Give a header that the parser reads (or any line) a nasty value.
            lines = bytes(data).split(b"\r\n")
            target = draw(st.sampled_from([*READ_HEADERS, None]))
            i = (
                next(
                    (k for k, line in enumerate(lines) if line.lower().startswith(target + b":")),
                    draw(st.integers(0, len(lines) - 1)),
                )
                if target
                else draw(st.integers(0, len(lines) - 1))
            )
            name = target or lines[i].split(b":", 1)[0]
            value = draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=12)))
            lines[i] = name + b": " + value.encode()
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def parses_or_refuses(data: bytes) -> None:
    for stream in (False, True):
        try:
            msg = parse_message(data, stream=stream)
        except SipParseError as exc:
            assert exc.status in (400, 505)
            assert exc.partial is None or isinstance(exc.partial, Request)
            continue
        # What parsed can be written back and reads the same (header values as parsed).
        try:
            again = parse_message(msg.serialize(), stream=True)
        except ValueError:
            continue
        assert again.first_line == msg.first_line
        assert again.body == msg.body


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_parse_or_raise(data: bytes) -> None:
    parses_or_refuses(data)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_parse_or_raise(data: bytes) -> None:
    parses_or_refuses(data)


def chunks_of(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        yield data[last:cut]
        last = cut
    yield data[last:]


@settings(max_examples=500)
@given(
    st.lists(st.one_of(mutated(), st.sampled_from(BASES), st.just(b"\r\n")), max_size=4),
    st.lists(st.integers(0, 5000), max_size=6),
    st.integers(50, 2000),
)
def test_framer_frames_or_raises(parts: list[bytes], cuts: list[int], max_size: int) -> None:
    framer = StreamFramer(max_size)
    data = b"".join(parts)
    try:
        for chunk in chunks_of(data, cuts):
            framer.feed(chunk)
            for message in framer.messages():
                assert message == KEEPALIVE_PING or len(message) <= max_size
                with contextlib.suppress(SipParseError):
                    parse_message(message, stream=True)
    except SipParseError:
        pass


@settings(max_examples=100)
@given(
    st.lists(st.sampled_from(BASES[:3]), min_size=1, max_size=4),
    st.lists(st.integers(0, 5000), max_size=8),
)
def test_framer_recovers_exact_messages(messages: list[bytes], cuts: list[int]) -> None:
    # Stream bases all carry Content-Length; any chunking gives the same messages back.
    stream = b"".join(m.lstrip(b"\r\n") for m in messages)
    expected = [m.lstrip(b"\r\n") for m in messages]
    assert frame(list(chunks_of(stream, cuts))) == expected


def test_grammar_split_request_line_is_linear() -> None:
    # 64 KiB of spaces must not make a backtracking regex spin.
    assert grammar.split_request_line("A" + " " * 65000 + "b") is None
    assert grammar.split_request_line("A" + " " * 65000 + "SIP/2.0") is None
    assert grammar.split_request_line("A  b  SIP/2.0  ") == ("A", "b", "SIP/2.0")
    assert grammar.split_request_line("A b c SIP/2.0") == ("A", "b c", "SIP/2.0")


def test_headers_index_follows_changes() -> None:
    """Lookups before and after add/set/remove see the same lines as a fresh Headers."""
    h = Headers([("Via", "a"), ("X-A", "1")])
    assert h.getall("via") == ["a"]  # builds the index
    h.add("v", "b")  # compact form, added after the index exists
    h.add("X-B", "2")
    assert h.getall("Via") == ["a", "b"] and h.get("x-b") == "2"
    h.set("X-A", "3")
    assert h.get("X-A") == "3" and h.getall("Via") == ["a", "b"]
    h.remove("Via")
    assert h.getall("Via") == [] and list(h) == [("X-A", "3"), ("X-B", "2")]
    h.set("Via", "c")
    assert h.get("v") == "c"
    fresh = Headers()
    fresh.add("X-C", "4")  # no index yet: built on the first lookup
    assert fresh.get("x-c") == "4"


def test_structured_parses_are_cached_only_for_values_of_ordinary_length() -> None:
    from byeline.sip import message

    short = "sip:+18005550100@198.51.100.7:5060"
    assert parse_uri(short) is parse_uri(short)  # shared: sipmessage's values are frozen
    before = message._cached_uri.cache_info().currsize
    long_uri = "sip:" + "a" * 5000 + "@example.com"
    assert parse_uri(long_uri).user == "a" * 5000
    assert message._cached_uri.cache_info().currsize == before  # a 5 kB key is never kept


VIAS = [
    "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-123-1-0;rport",
    "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc",
    "SIP/2.0/TCP [2001:db8::1]:5060;received=192.0.2.1;branch=z9hG4bK.x~y!z",
    "SIP/2.0/UDP pc33.example.com;BRANCH = z9hG4bK776",
    'SIP/2.0/UDP 127.0.0.1;foo="a;branch=b";branch=z9hG4bKq',
    # invalid: a branch that is not a token, no branch value, bad sent-by, bad protocol
    'SIP/2.0/UDP 127.0.0.1;branch="quoted"',
    "SIP/2.0/UDP 127.0.0.1;branch=a@b",
    "SIP/2.0/UDP 127.0.0.1;branch=",
    "SIP/2.0/UDP ;branch=z9hG4bK1",
    "SIP/2.0 127.0.0.1;branch=z9hG4bK1",
    "SIP/2.0/UDP 127.0.0.1:99999999999;branch=z9hG4bK1",
    "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1;;",
]


@pytest.mark.parametrize("via", VIAS)
def test_via_is_valid_agrees_with_a_full_parse(via: str) -> None:
    try:
        parse_via(via)
        expected = True
    except ValueError:
        expected = False
    assert via_is_valid(via) is expected


_TAG_REFERENCE = re.compile(r";\s*tag\s*=\s*([^;,\s>]+)", re.IGNORECASE)


def _tag_reference(value: str) -> str | None:
    gt = value.rfind(">")
    m = _TAG_REFERENCE.search(value, gt + 1 if gt >= 0 else 0)
    return m.group(1) if m else None


@pytest.mark.parametrize(
    "value",
    [
        "<sip:a@b>;TAG=x;tag=y",
        "<sip:a@b>;foo=1;tag=2",
        "<sip:a@b>;tag=x y",
        "<sip:a@b>;tag=\u00a0x",
        "<sip:a@b>;tag=x\u2003;y",
        "<sip:a@b>;tag=;tag=z",
        "<sip:a@b>;tag=a,b",
        "sip:a@b;tag=1>",
    ],
)
def test_header_tag_agrees_with_the_grammar(value: str) -> None:
    assert header_tag(value) == _tag_reference(value)


@given(st.text(alphabet="<>;,= \t\u00a0tagTAGxy1", max_size=30))
@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
def test_header_tag_agrees_with_the_grammar_on_any_text(value: str) -> None:
    assert header_tag(value) == _tag_reference(value)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b":", b" "]), max_size=40))
def test_head_end_agrees_with_the_blank_line_grammar(parts: list[bytes]) -> None:
    """The substring fast path finds the same first empty line as ``\\r?\\n\\r?\\n``."""
    data = b"".join(parts)
    m = message_module._HEAD_END.search(data)
    expected = (-1, -1) if m is None else m.span()
    assert head_end(data) == expected
    assert head_end(bytearray(data)) == expected


_BRANCH_REFERENCE = re.compile(r";\s*branch\s*=\s*([^;,\s]+)", re.IGNORECASE)


def _branch_reference(value: str) -> tuple[int, int] | None:
    m = _BRANCH_REFERENCE.search(value)
    return (m.start(1), m.end(1)) if m else None


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport",
        "SIP/2.0/UDP h:5060;branch=z9hG4bK1",
        "SIP/2.0/UDP h;rport;branch=z9hG4bK2",
        "SIP/2.0/UDP h;Branch=z9hG4bK3;branch=z9hG4bK4",
        "SIP/2.0/UDP h; branch=z9hG4bK5",
        "SIP/2.0/UDP h;branch= z9hG4bK6",
        "SIP/2.0/UDP h;branch=;branch=z9hG4bK7",
        "SIP/2.0/UDP h;branch=a,b",
        "SIP/2.0/UDP h;branch=a b",
        "SIP/2.0/UDP h;branch=a\u2003b",
        "SIP/2.0/UDP h;branch=a\x1cb",
        "SIP/2.0/UDP h;branch=\u00e9t\u00e9",
        "SIP/2.0/UDP h",
    ],
)
def test_branch_span_agrees_with_the_grammar(value: str) -> None:
    assert branch_span(value) == _branch_reference(value)


@given(st.text(alphabet=";,= \t\x1c\u00a0\u2003branchBRANCHz9hG4bK1é", max_size=40))
@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
def test_branch_span_agrees_with_the_grammar_on_any_text(value: str) -> None:
    assert branch_span(value) == _branch_reference(value)


@given(st.text(alphabet=";,= \t\x1cbranchz9hG4bK1", max_size=20))
@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
def test_branch_span_agrees_after_the_usual_prefix(rest: str) -> None:
    value = f"SIP/2.0/UDP 10.0.0.1:5060;branch={rest}"
    assert branch_span(value) == _branch_reference(value)
