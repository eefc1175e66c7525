"""The caller and called numbers the edge reads from From and To."""

from __future__ import annotations

import pytest

from byeline.edge.server import _from_host, _from_user, _to_user
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
