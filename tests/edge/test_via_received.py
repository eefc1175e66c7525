"""``received`` and ``rport`` on the top Via (RFC 3261 §18.2.1, RFC 3581 §4): the two usual
Vias take a shortcut, which must give what splitting the parameters gives, for any Via."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byeline.edge.server import _via_with_received_split, via_with_received

SOURCE = ("198.51.100.7", 5062)


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        # Five9's and SIPp's: a bare rport, filled, and received added even for the same host.
        (
            "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport",
            "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport=5062;received=198.51.100.7",
        ),
        (
            "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK-1",
            "SIP/2.0/UDP 10.0.0.1:5060;rport=5062;branch=z9hG4bK-1;received=198.51.100.7",
        ),
        # No rport: received only when the host differs.
        ("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1", None),
        (
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1",
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;received=198.51.100.7",
        ),
        # The peer's own received and rport values are never trusted.
        (
            "SIP/2.0/UDP 10.0.0.1;received=203.0.113.9;rport=9;branch=z9hG4bK-1",
            "SIP/2.0/UDP 10.0.0.1;rport=5062;branch=z9hG4bK-1;received=198.51.100.7",
        ),
        (
            "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-1; RPORT",
            "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-1;rport=5062;received=198.51.100.7",
        ),
    ],
)
def test_via_with_received(via: str, expected: str | None) -> None:
    assert via_with_received(via, *SOURCE) == expected
    assert _via_with_received_split(via, *SOURCE) == expected


_PARAMS = st.lists(
    st.sampled_from(
        [
            "rport",
            "RPORT",
            " rport",
            "rport=1",
            "received",
            "received=1.2.3.4",
            "rportx",
            "x=rport",
            "branch=z9hG4bK-9",
            "lr",
            "",
            "=",
            " ",
            "\u0130",
            "received=198.51.100.7",
        ]
    ),
    max_size=6,
)


@given(
    st.sampled_from(
        ["SIP/2.0/UDP 198.51.100.7:5060", "SIP/2.0/UDP 10.0.0.1", "SIP/2.0/TCP rport.example"]
    ),
    _PARAMS,
)
@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
def test_the_shortcuts_agree_with_the_split(head: str, params: list[str]) -> None:
    via = ";".join([head, *params])
    assert via_with_received(via, *SOURCE) == _via_with_received_split(via, *SOURCE)
