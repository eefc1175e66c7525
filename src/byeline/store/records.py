"""Read-side values: a stored call (:class:`CallRecord`) and one traced SIP message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One SIP message sent or received for a call, as stored in ``sip_messages``."""

    id: int
    call_id: str
    at: float
    """Epoch seconds when the message was sent or received."""
    direction: str
    """``in`` (received by byeline) or ``out`` (sent by byeline)."""
    transport: str
    peer: str
    """The other side, ``ip:port``."""
    first_line: str
    """Request line or status line, decoded for display."""
    raw: bytes
    """The message exactly as it crossed the wire."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; ``raw`` is decoded as UTF-8 with invalid bytes replaced."""
        return {
            "id": self.id,
            "call_id": self.call_id,
            "at": self.at,
            "direction": self.direction,
            "transport": self.transport,
            "peer": self.peer,
            "first_line": self.first_line,
            "raw": self.raw.decode("utf-8", errors="replace"),
        }


@dataclass(frozen=True, slots=True)
class TranscriptRecord:
    """One utterance of a call's conversation, as stored in ``transcripts``."""

    id: int
    call_id: str
    at: float
    """Epoch seconds when the utterance was heard or spoken."""
    role: str
    """Who spoke: ``caller`` or ``agent``."""
    text: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"at": self.at, "role": self.role, "text": self.text}


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One row of ``calls`` with its JSON columns decoded, and optionally its SIP trace.

    Timestamps are epoch seconds. JSON columns never stored read back as empty (``{}`` or
    ``[]``); whether BYE headers reached Five9 is told by :attr:`delivery`, not by emptiness.
    """

    call_id: str
    sip_call_id: str | None
    trunk_id: str | None
    rule_id: str | None
    caller: str | None
    callee: str | None
    five9_call_id: str | None
    five9_session_id: str | None
    transport: str | None
    remote: str | None
    started_at: float
    answered_at: float | None
    ended_at: float | None
    status: str
    ended_by: str | None
    final_code: int | None
    attributes: dict[str, Any]
    """The call's attributes at its last update."""
    route: dict[str, Any]
    """The result attributes set by the agent."""
    bye_headers: list[list[str]]
    """``[name, value]`` pairs actually sent on the BYE."""
    header_refusals: list[dict[str, Any]]
    """``{"name": ..., "reason": ...}`` for each header that was refused."""
    delivery: str | None
    delivery_code: int | None
    updated_at: float
    trace: list[TraceRecord] = field(default_factory=list)
    """SIP messages in time order (empty when not requested)."""
    transcript: list[TranscriptRecord] = field(default_factory=list)
    """Utterances in time order (empty when not requested)."""

    @classmethod
    def from_row(
        cls,
        row: Mapping[Any, Any],
        trace: list[TraceRecord] | None = None,
        transcript: list[TranscriptRecord] | None = None,
    ) -> CallRecord:
        """Build a record from a ``calls`` row mapping, decoding the JSON columns."""
        return cls(
            call_id=row["call_id"],
            sip_call_id=row["sip_call_id"],
            trunk_id=row["trunk_id"],
            rule_id=row["rule_id"],
            caller=row["caller"],
            callee=row["callee"],
            five9_call_id=row["five9_call_id"],
            five9_session_id=row["five9_session_id"],
            transport=row["transport"],
            remote=row["remote"],
            started_at=row["started_at"],
            answered_at=row["answered_at"],
            ended_at=row["ended_at"],
            status=row["status"],
            ended_by=row["ended_by"],
            final_code=row["final_code"],
            attributes=_decode(row["attributes"], dict),
            route=_decode(row["route"], dict),
            bye_headers=_decode(row["bye_headers"], list),
            header_refusals=_decode(row["header_refusals"], list),
            delivery=row["delivery"],
            delivery_code=row["delivery_code"],
            updated_at=row["updated_at"],
            trace=trace if trace is not None else [],
            transcript=transcript if transcript is not None else [],
        )

    def to_json(self, *, trace: bool = True) -> dict[str, Any]:
        """A JSON-ready dict of every column plus ``trace`` (a list of message dicts) and
        ``transcript``; ``trace=False`` leaves the two lists out (a summary)."""
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("trace", "transcript")
        }
        if trace:
            out["trace"] = [message.to_json() for message in self.trace]
            out["transcript"] = [line.to_json() for line in self.transcript]
        return out


def _decode(text: str | None, empty: type[Any]) -> Any:
    if text is None:
        return empty()
    return json.loads(text)
