"""The handback step: routing result onto the call, goodbye, BYE.

The order is the whole point (DESIGN.md, LiveKit issue #404):

1. the result attributes are set on the call;
2. the goodbye is played, and we wait until it has left on the wire;
3. ``hangup()`` builds the BYE from the attributes as they are now.

Step 1 always happens before step 3, even when step 2 fails or the caller
hangs up during it.  A handback after the caller hung up does not raise: the
result says ``not_sent`` and the record keeps the routing result.
"""

from __future__ import annotations

import logging
import wave
from pathlib import Path

from ..edge.call import Call, CallResult, Delivery, EndedBy
from .routes import RouteDecision, Routes

log = logging.getLogger("byeline.agent")


async def handback(
    call: Call,
    decision: RouteDecision,
    routes: Routes,
    *,
    ended_by: EndedBy = EndedBy.AGENT,
    play_goodbye: bool = True,
) -> CallResult:
    """Hand the call back to Five9 with ``decision`` on the BYE."""
    # 1. Attributes first, always: even a call that is already over keeps its result.
    call.update_attributes(decision.attributes(routes, call.attributes))
    if call.ended:
        assert call.result is not None
        log.info("%s: handback after the caller hung up: result kept, not delivered", call.call_id)
        return call.result
    # 2. The goodbye, played to the end (barge-in is not honoured here: the route is decided).
    prompt = decision.route.prompt
    if play_goodbye and prompt is not None and call.media is not None:
        try:
            await call.media.play(load_prompt(prompt))
        except Exception as exc:  # a broken prompt must not cost the routing data
            log.warning("%s: goodbye prompt not played: %s", call.call_id, exc)
    # 3. The BYE, built from the attributes as they are now.
    result = await call.hangup(ended_by=ended_by)
    if result.delivery is not Delivery.DELIVERED:
        log.warning("%s: routing result %s", call.call_id, result.delivery.value)
    return result


def load_prompt(path: Path) -> bytes:
    """A prompt WAV as 8 kHz mono 16-bit PCM (the call's native audio)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2 or wav.getframerate() != 8000:
            raise ValueError(
                f"{path}: prompts must be 8 kHz mono 16-bit PCM WAV (got "
                f"{wav.getframerate()} Hz, {wav.getnchannels()} channel(s), "
                f"{8 * wav.getsampwidth()}-bit)"
            )
        return wav.readframes(wav.getnframes())
