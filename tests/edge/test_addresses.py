"""The caller and called numbers the edge reads from From and To, and a Via's sent-by."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byeline.edge.server import (
    _address_uri,
    _address_user_host,
    _from_host,
    _from_user,
    _sent_by,
    _sent_by_grammar,
    _to_user,
)
from byeline.sip.message import Request, parse_message


def invite(from_value: str, to_value: str = "<sip:+18005550100@192.0.2.1>") -> Request:
    data = (
        "INVITE sip:+18005550100@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1\r\n"
        f"From: {from_value}\r\nTo: {to_value}\r\n"
        "Call-ID: c1@five9\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


@pytest.mark.parametrize(
    ("from_value", "user", "host"),
    [
        ('"Five9" <sip:+15551234567@five9.com>;tag=abc', "+15551234567", "five9.com"),
        # A ">" inside a quoted parameter value (RFC 3261 gen-value) must not cut the address.
        ('<sip:+15551234567@five9.com>;tag=abc;x="a>b"', "+15551234567", "five9.com"),
        ('"A" <sip:+1555@h.example>;tag=1;foo="q>"', "+1555", "h.example"),
        ("sip:+1555@h.example;tag=2", "+1555", "h.example"),
    ],
)
def test_from_user_and_host(from_value: str, user: str, host: str) -> None:
    request = invite(from_value)
    assert _from_user(request) == user
    assert _from_host(request) == host


def test_to_user_with_a_quoted_parameter() -> None:
    assert _to_user(invite("<sip:a@h>;tag=1", '<sip:+18005550100@h>;x="<>"')) == "+18005550100"


def _full_parse(value: str) -> tuple[str | None, str] | None:
    """What the full sipmessage parse says (None: it does not parse)."""
    try:
        uri = _address_uri(value)
    except ValueError:
        return None
    return uri.user, uri.host


def _fast(value: str) -> tuple[str | None, str] | None:
    try:
        return _address_user_host(value)
    except ValueError:
        return None


FROM_VALUES = [
    '"Five9" <sip:+15551234567@five9.com>;tag=abc',
    "<sips:alice@example.com:5061;transport=tls>;tag=1",
    "<sip:a;b?c=d@h.example>",
    "<sip:al%20ice@h.example>",  # an escape: the full parse unquotes it
    "<sip:user:secret@h.example>",  # a password
    "<SIP:upper@h.example>",
    "<sip:@h.example>",
    "<sip:a@>",
    "<sip:a@b@c>",
    "<sip:a@h.example",
    '"<sip:x@y>" <sip:real@h.example>;tag=2',
    "<tel:+15551234>",
    "<sip:a b@h.example>",
    '"unterminated <sip:a@h.example>',
]


@pytest.mark.parametrize("value", FROM_VALUES)
def test_user_and_host_agree_with_the_full_parse(value: str) -> None:
    assert _fast(value) == _full_parse(value)


@given(
    st.text(alphabet='sip:<>@"; abc+1%2', max_size=40).map(lambda t: f"<sip:{t}")
    | st.text(alphabet='sip:<>@"; abc+1%2', max_size=40)
)
@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
def test_user_and_host_agree_with_the_full_parse_on_any_text(value: str) -> None:
    assert _fast(value) == _full_parse(value)


@pytest.mark.parametrize(
    ("via", "sent_by"),
    [
        ("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport", "198.51.100.7:5060"),
        ("SIP/2.0/TCP Host.Example.COM;branch=z9hG4bK-2", "host.example.com"),
        ("SIP / 2.0 / UDP  h.example : 5070 ;branch=z9hG4bK-3", "h.example:5070"),
        ("SIP/2.0/UDP [2001:DB8::1]:5060", "[2001:db8::1]:5060"),
        ("garbage", ""),
    ],
)
def test_sent_by(via: str, sent_by: str) -> None:
    assert _sent_by(via) == sent_by


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["SIP/2.0/UDP", "SIP/2.0/TLS", "SIP/2.0/WSS", "sip/2.0/udp", "SIP/2.0/X"]),
    st.text(alphabet=" \t\r\nAz09.:[];=-/", max_size=30),
)
def test_sent_by_fast_path_agrees_with_the_grammar(protocol: str, rest: str) -> None:
    via = f"{protocol} {rest}"
    assert _sent_by(via) == _sent_by_grammar(via)
