"""The offline intent engine, as a LiveKit Agents ``llm.LLM``.

It reads the conversation the session gives every LLM and answers as an LLM would: a tool call
to :data:`~byeline.agent.handback.handback_tool` with the chosen route when the caller's latest
words match a route's phrases well enough, else a reprompt.  Because it is an ``llm.LLM``, an
OpenAI-compatible model replaces it by configuration with no change to the agent.

Rules, all from the routes file:

- the caller's words are scored against every route's ``phrases`` (and its name): normalised
  tokens, each phrase token found exactly, by prefix ("bills" ~ "bill") or fuzzily
  (``difflib`` ratio >= 0.8); a phrase scores the share of its tokens found, a route its best
  phrase.  Two routes close to each other halve the confidence (the caller was ambiguous);
- confidence >= ``threshold`` → ``handback(route=..., intent=..., confidence=...)``;
- otherwise a reprompt, until ``max_attempts`` answers (user turns plus the no-input and
  unknown-key notes the routing agent writes, see :data:`NOTE_PREFIX`) were used: then
  ``handback`` with the fallback route;
- after the handback tool's output, the goodbye it asks for, word for word.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from livekit.agents import llm
from livekit.agents.llm import ChatChunk, ChatContext, ChoiceDelta, FunctionToolCall
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.agents.utils import shortuuid

from .handback import HANDBACK_TOOL_NAME
from .routes import Route, Routes

__all__ = [
    "NOTE_PREFIX",
    "IntentLLM",
    "IntentMatch",
    "IntentReply",
    "no_input_note",
    "no_match_note",
    "normalise",
]

#: Notes the routing agent adds to the conversation (role ``system``) for an attempt without
#: words: a no-input timeout, an unknown key.  Each counts as an attempt.
NOTE_PREFIX = "[byeline]"
_NO_INPUT = f"{NOTE_PREFIX} no input:"
_NO_MATCH = f"{NOTE_PREFIX} no match:"

_STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "i'm",
        "im",
        "me",
        "my",
        "to",
        "for",
        "of",
        "about",
        "and",
        "or",
        "please",
        "want",
        "wanna",
        "need",
        "would",
        "like",
        "talk",
        "speak",
        "speaking",
        "with",
        "is",
        "it",
        "this",
        "that",
        "so",
        "um",
        "uh",
        "yeah",
        "hi",
        "hello",
    ]
)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_FUZZY = 0.8


def no_input_note(seconds: float) -> str:
    """The note for a no-input timeout."""
    return f"{_NO_INPUT} the caller said nothing for {seconds:g} seconds"


def no_match_note(what: str) -> str:
    """The note for an input that chose nothing (e.g. an unknown key)."""
    return f"{_NO_MATCH} {what}"


def normalise(text: str) -> list[str]:
    """Lower-case ASCII tokens without stop words (accents folded, punctuation dropped)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return [t for t in _TOKEN.findall(folded) if t not in _STOP_WORDS]


def _token_score(wanted: str, heard: list[str]) -> float:
    best = 0.0
    for token in heard:
        if token == wanted:
            return 1.0
        if (
            len(wanted) >= 4
            and len(token) >= 4
            and (token.startswith(wanted) or wanted.startswith(token))
        ):
            best = max(best, 0.9)
            continue
        ratio = difflib.SequenceMatcher(None, wanted, token).ratio()
        if ratio >= _FUZZY:
            best = max(best, ratio)
    return best


@dataclass(frozen=True)
class IntentMatch:
    """The best route for some words, and how sure."""

    route: Route | None
    confidence: float
    phrase: str | None = None


@dataclass(frozen=True)
class IntentReply:
    """What the engine answers: a tool call (``route``) or words to say (``text``)."""

    text: str = ""
    route: Route | None = None
    intent: str | None = None
    confidence: float | None = None


class IntentLLM(llm.LLM[None]):
    """Route-phrase matching that speaks the LLM protocol (tool calls and text)."""

    def __init__(
        self,
        routes: Routes,
        *,
        threshold: float = 0.6,
        reprompt_no_match: str = "Sorry, I didn't get that.",
        reprompt_no_input: str = "Sorry, I didn't hear anything.",
    ) -> None:
        super().__init__()
        self.routes = routes
        self.threshold = threshold
        self.reprompt_no_match = reprompt_no_match
        self.reprompt_no_input = reprompt_no_input
        self._phrases: list[tuple[Route, str, list[str]]] = []
        for route in routes.routes:
            for phrase in (route.name, *route.phrases):
                tokens = normalise(phrase) or phrase.lower().split()
                self._phrases.append((route, phrase, tokens))

    @property
    def model(self) -> str:
        """The engine's name in metrics."""
        return "byeline-intent"

    @property
    def provider(self) -> str:
        """The provider in metrics."""
        return "byeline"

    # -- the decision, pure -----------------------------------------------------------------------

    def match(self, text: str) -> IntentMatch:
        """Score ``text`` against every route's phrases."""
        heard = normalise(text)
        if not heard:
            return IntentMatch(None, 0.0)
        per_route: dict[str, tuple[float, Route, str]] = {}
        for route, phrase, tokens in self._phrases:
            score = sum(_token_score(t, heard) for t in tokens) / len(tokens)
            if score > per_route.get(route.name, (0.0, route, ""))[0]:
                per_route[route.name] = (score, route, phrase)
        ranked = sorted(per_route.values(), key=lambda item: item[0], reverse=True)
        if not ranked or ranked[0][0] <= 0:
            return IntentMatch(None, 0.0)
        best, route, phrase = ranked[0]
        second = ranked[1][0] if len(ranked) > 1 else 0.0
        confidence = best if best - second >= 0.25 else best / 2
        return IntentMatch(route, round(confidence, 3), phrase)

    def reply(self, chat_ctx: ChatContext, tool_names: set[str]) -> IntentReply:
        """The answer to the conversation so far."""
        can_hand_back = HANDBACK_TOOL_NAME in tool_names
        items = chat_ctx.items
        attempts = 0
        last: Any = None
        for item in items:
            if item.type == "message" and item.role == "user":
                attempts += 1
                last = item
            elif item.type == "message" and item.role == "system":
                if (item.text_content or "").startswith(NOTE_PREFIX):
                    attempts += 1
                    last = item
            elif (
                item.type in ("function_call", "function_call_output")
                and item.name == HANDBACK_TOOL_NAME
            ):
                last = item
        if last is None:
            return IntentReply()
        if last.type == "function_call_output":
            return IntentReply(text=_say_exactly(last.output) if not last.is_error else "")
        if last.type == "function_call":
            return IntentReply()  # its output is not there yet
        last_index = items.index(last)
        if any(i.type == "message" and i.role == "assistant" for i in items[last_index + 1 :]):
            return IntentReply()  # already answered
        greeting = self.routes.greeting.text
        if last.role == "system":
            is_no_input = (last.text_content or "").startswith(_NO_INPUT)
            intent = "no_input" if is_no_input else "no_match"
            sorry = self.reprompt_no_input if is_no_input else self.reprompt_no_match
            if attempts >= self.routes.max_attempts and can_hand_back:
                return IntentReply(route=self.routes.fallback, intent=intent)
            return IntentReply(text=f"{sorry} {greeting}")
        said = last.text_content or ""
        if self.routes.confirm:
            asked = _confirming(items[:last_index], self.routes)
            if asked is not None:
                answer = _yes_or_no(said)
                if answer is True and can_hand_back:
                    return IntentReply(route=asked, intent=asked.name, confidence=1.0)
                if answer is False:
                    if attempts >= self.routes.max_attempts and can_hand_back:
                        return IntentReply(route=self.routes.fallback, intent="not_confirmed")
                    return IntentReply(text=f"Sorry about that. {greeting}")
        found = self.match(said)
        if found.route is not None and found.confidence >= self.threshold and can_hand_back:
            if self.routes.confirm:
                return IntentReply(text=confirm_question(found.route))
            return IntentReply(
                route=found.route, intent=found.route.name, confidence=found.confidence
            )
        if attempts >= self.routes.max_attempts and can_hand_back:
            return IntentReply(
                route=self.routes.fallback, intent="no_match", confidence=found.confidence
            )
        return IntentReply(text=f"{self.reprompt_no_match} {greeting}")

    # -- llm.LLM ----------------------------------------------------------------------------------

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        """One answer, streamed as a single chunk."""
        tool_names = {t.id for t in (tools or [])}
        if tool_choice == "none":
            tool_names = set()
        return _IntentStream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=conn_options,
            tool_names=tool_names,
        )


class _IntentStream(llm.LLMStream):
    def __init__(
        self,
        engine: IntentLLM,
        *,
        chat_ctx: ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        tool_names: set[str],
    ) -> None:
        super().__init__(engine, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._engine = engine
        self._tool_names = tool_names

    async def _run(self) -> None:
        answer = self._engine.reply(self._chat_ctx, self._tool_names)
        request_id = shortuuid("intent_")
        if answer.route is not None:
            arguments: dict[str, Any] = {"route": answer.route.name, "intent": answer.intent}
            if answer.confidence is not None:
                arguments["confidence"] = answer.confidence
            call = FunctionToolCall(
                name=HANDBACK_TOOL_NAME,
                arguments=json.dumps(arguments),
                call_id=shortuuid("call_"),
            )
            delta = ChoiceDelta(role="assistant", tool_calls=[call])
        else:
            delta = ChoiceDelta(role="assistant", content=answer.text)
        self._event_ch.send_nowait(ChatChunk(id=request_id, delta=delta))


_CONFIRM = re.compile(r"^Just to confirm: (?P<name>.+?)\. Is that right\?$")
_YES = frozenset({"yes", "yeah", "yep", "yup", "right", "correct", "sure", "ok", "okay", "please"})
_NO = frozenset({"no", "nope", "wrong", "not", "nah", "incorrect"})


def confirm_question(route: Route) -> str:
    """What the agent asks before handing back on ``route`` (``confirm: true``)."""
    return f"Just to confirm: {route.name}. Is that right?"


def _confirming(items: list[Any], routes: Routes) -> Route | None:
    """The route the agent's last message asked the caller to confirm, if it was a question."""
    for item in reversed(items):
        if item.type == "message" and item.role == "assistant":
            m = _CONFIRM.match((item.text_content or "").strip())
            return routes.by_name(m.group("name")) if m else None
    return None


def _yes_or_no(text: str) -> bool | None:
    words = set(re.findall(r"[a-z']+", text.lower()))
    if words & _NO:
        return False
    if words & _YES:
        return True
    return None


def _say_exactly(output: str) -> str:
    try:
        doc = json.loads(output)
    except ValueError:
        return ""
    say = doc.get("say_exactly") if isinstance(doc, dict) else None
    return say if isinstance(say, str) else ""
