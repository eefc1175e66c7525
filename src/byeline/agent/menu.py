"""The DTMF menu agent: keys pressed choose a route from the routes file.

It is the agent of the first release and the keypad path of the voice agent:
greet, wait for a key, reprompt on no input or an unknown key up to
``max_attempts``, then take the fallback route.  A media timeout takes the
fallback at once.  Every decision leaves through :func:`handback`.
"""

from __future__ import annotations

import asyncio
import logging

from ..edge.call import Call, EndedBy
from .handback import handback, load_prompt
from .routes import InputMode, Route, RouteDecision, Routes

log = logging.getLogger("byeline.agent")


class DtmfMenuAgent:
    """Route a call by the keys the caller presses."""

    def __init__(self, routes: Routes, *, no_input_timeout: float | None = None) -> None:
        self.routes = routes
        self.no_input_timeout = (
            no_input_timeout if no_input_timeout is not None else routes.no_input_timeout
        )

    async def __call__(self, call: Call) -> None:
        """Run the menu on ``call`` until it is handed back or the caller hangs up."""
        events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        call.on("dtmf", lambda digit: events.put_nowait(("dtmf", digit)))
        call.on("media_timeout", lambda: events.put_nowait(("media_timeout", "")))
        call.on("ended", lambda _result: events.put_nowait(("ended", "")))

        await self._prompt(call, self.routes.greeting.prompt)
        attempts = 0
        pressed = False
        while attempts < self.routes.max_attempts:
            attempts += 1
            try:
                kind, value = await asyncio.wait_for(events.get(), self.no_input_timeout)
            except TimeoutError:
                log.info("%s: no input (attempt %d)", call.call_id, attempts)
                if attempts < self.routes.max_attempts:
                    await self._prompt(call, self.routes.greeting.prompt)
                continue
            if kind == "ended":
                return
            if kind == "media_timeout":
                await self._decide(
                    call,
                    self.routes.fallback,
                    InputMode.NONE,
                    attempts,
                    "media_timeout",
                    ended_by=EndedBy.TIMEOUT,
                )
                return
            pressed = True
            route = self.routes.by_dtmf(value)
            if route is not None:
                await self._decide(call, route, InputMode.DTMF, attempts, route.name)
                return
            log.info("%s: key %r matches no route (attempt %d)", call.call_id, value, attempts)
            if attempts < self.routes.max_attempts:
                await self._prompt(call, self.routes.greeting.prompt)
        mode = InputMode.DTMF if pressed else InputMode.NONE
        await self._decide(
            call, self.routes.fallback, mode, attempts, "no_match" if pressed else "no_input"
        )

    async def _decide(
        self,
        call: Call,
        route: Route,
        mode: InputMode,
        attempts: int,
        intent: str,
        *,
        ended_by: EndedBy = EndedBy.AGENT,
    ) -> None:
        decision = RouteDecision(
            route=route,
            input_mode=mode,
            attempts=attempts,
            intent=intent,
            confidence=1.0 if mode is InputMode.DTMF else None,
        )
        await handback(call, decision, self.routes, ended_by=ended_by)

    async def _prompt(self, call: Call, prompt: object) -> None:
        if prompt is None or call.media is None or call.ended:
            return
        try:
            from pathlib import Path

            await call.media.play(load_prompt(Path(str(prompt))))
        except Exception as exc:
            log.warning("%s: prompt not played: %s", call.call_id, exc)


async def shutdown_handback(call: Call, routes: Routes) -> None:
    """Set the ``on_shutdown`` route on a call the edge is about to end."""
    decision = RouteDecision(route=routes.on_shutdown, input_mode=InputMode.NONE, intent="shutdown")
    call.update_attributes(decision.attributes(routes, call.attributes))
