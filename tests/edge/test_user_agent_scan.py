"""The User-Agent scan that drops scanners before parsing, held to the expression it replaced."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from byeline.edge.server import user_agent_value

# The expression the edge used: the first User-Agent line's raw value, case-insensitive.
REFERENCE = re.compile(rb"\r\n(?:user-agent)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)

HEAD = (
    b"OPTIONS sip:100@10.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1\r\n"
    b"User-Agent: friendly-scanner\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def reference(data: bytes, head_end: int) -> bytes | None:
    match = REFERENCE.search(data, 0, head_end)
    return None if match is None else match.group(1)


def test_finds_the_value() -> None:
    assert user_agent_value(HEAD, len(HEAD)) == b"friendly-scanner"


def test_any_case_and_blanks_around_the_colon() -> None:
    data = b"INVITE sip:x SIP/2.0\r\nuSeR-aGeNt \t:\t SIPVicious 0.3 \r\n\r\n"
    assert user_agent_value(data, len(data)) == b"SIPVicious 0.3 "


def test_only_within_the_head() -> None:
    head_end = HEAD.index(b"User-Agent")
    assert user_agent_value(HEAD, head_end) is None


def test_a_name_that_only_starts_alike_is_skipped() -> None:
    data = b"INVITE sip:x SIP/2.0\r\nUser-Agentx: a\r\nUser-Agent: b\r\n\r\n"
    assert user_agent_value(data, len(data)) == b"b"


def test_value_up_to_the_head_end() -> None:
    data = b"INVITE sip:x SIP/2.0\r\nUser-Agent: abcdef"
    assert user_agent_value(data, len(data) - 2) == b"abcd"


PIECES = st.sampled_from(
    [
        b"\r\n",
        b"\n",
        b"\r",
        b"User-Agent",
        b"user-agent",
        b"USER-AGENT",
        b":",
        b" ",
        b"\t",
        b"x",
        b"ua",
    ]
)


@given(st.lists(PIECES | st.binary(max_size=4), max_size=24), st.integers(0, 200))
def test_same_as_the_regular_expression(parts: list[bytes], cut: int) -> None:
    data = b"".join(parts)
    head_end = min(cut, len(data))
    assert user_agent_value(data, head_end) == reference(data, head_end)
