"""Five9's vocabulary: call variables sent to the agent (ToIVA) and read back (FromIVA).

Five9 users name the headers in the IVR script, so the names vary.  Two sets are
common: the ``X-Call*`` set Five9 users configure with Set Variable before the
transfer, and the lowercase names of Five9's IVA template.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping

CAV_STYLES = ("five9", "five9-template")


def default_call_variables(
    *, ani: str, dnis: str, style: str = "five9", campaign: str = "Inbound Support"
) -> dict[str, str]:
    """The ToIVA headers a Five9 IVR sends, with ids generated per call."""
    call_id = str(300000000000 + secrets.randbelow(10**11))
    session_id = secrets.token_hex(16).upper()
    if style == "five9-template":
        return {
            "X-five9ani": ani,
            "X-five9dnis": dnis,
            "X-five9callid": call_id,
            "X-five9sessionid": session_id,
        }
    if style != "five9":
        raise ValueError(f"--cav-style {style!r}: expected one of {', '.join(CAV_STYLES)}")
    return {
        "X-CallANI": ani,
        "X-CallDNIS": dnis,
        "X-CallID": call_id,
        "X-CallSessionID": session_id,
        "X-CallCampaign": campaign,
        "X-CallStartTimestamp": str(int(time.time() * 1000)),
        "X-CallDomainID": "131072",
    }


def merge_call_variables(
    defaults: Mapping[str, str], overrides: Iterable[tuple[str, str]]
) -> dict[str, str]:
    """``--cav NAME=VALUE`` on top of the defaults; names compare case-insensitively."""
    out = dict(defaults)
    for name, value in overrides:
        for existing in list(out):
            if existing.lower() == name.lower():
                del out[existing]
        out[name] = value
    return out


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    """``NAME=VALUE`` from ``--cav`` or ``--expect``; ValueError naming the option."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"{option} {text!r}: expected NAME=VALUE")
    return name.strip(), value


class FromIVA:
    """What Five9 makes of the BYE's ``X-`` headers: a list of key/value pairs.

    ``get(name)`` is ``GET(FromIVA, name)`` (case-insensitive, first value);
    :meth:`tostring` is one string of the whole list, like ``TOSTRING(FromIVA)``
    — the exact byte format of Five9's TOSTRING is not reproduced.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.pairs: list[tuple[str, str]] = list(pairs)

    def get(self, name: str) -> str | None:
        """``GET(FromIVA, name)``."""
        lname = name.lower()
        return next((v for k, v in self.pairs if k.lower() == lname), None)

    def tostring(self) -> str:
        """All pairs in one string, ``name=value`` joined by ``;``."""
        return ";".join(f"{k}={v}" for k, v in self.pairs)

    def as_dict(self) -> dict[str, str]:
        """The pairs as a dict (first value of each name)."""
        out: dict[str, str] = {}
        for k, v in self.pairs:
            out.setdefault(k, v)
        return out

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def __repr__(self) -> str:
        return f"FromIVA({self.pairs!r})"
