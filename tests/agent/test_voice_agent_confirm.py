"""The optional confirmation step (``confirm: true`` in the routes file), at text level."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_voice_agent import _TextSession  # the started text-only session of the agent tests

from byeline.agent.handback import HANDBACK_TOOL_NAME
from byeline.agent.intent_llm import confirm_question
from byeline.agent.routes import Routes, RoutesFileError, load_routes, parse_routes

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "byeline" / "examples"


@pytest.fixture
def confirming() -> Routes:
    return replace(load_routes(EXAMPLES / "routes.yaml"), confirm=True)


async def test_yes_hands_back_on_the_route_asked_about(confirming: Routes) -> None:
    async with _TextSession(confirming) as t:
        asked = await t.session.run(user_input="I have a question about my bill")
        question = asked.expect.next_event().is_message(role="assistant")
        billing = confirming.by_name("billing")
        assert billing is not None
        assert question.event().item.text_content == confirm_question(billing)
        assert "five9.route_value" not in t.call.attributes  # nothing decided yet
        result = await t.session.run(user_input="yes that's right")
        call = result.expect.next_event().is_function_call(name=HANDBACK_TOOL_NAME)
        assert json.loads(call.event().item.arguments)["route"] == "billing"
        assert t.call.attributes["five9.route_value"] == "Billing"


async def test_no_asks_again(confirming: Routes) -> None:
    async with _TextSession(confirming) as t:
        await t.session.run(user_input="sales please")
        result = await t.session.run(user_input="no")
        again = result.expect.next_event().is_message(role="assistant")
        assert again.event().item.text_content.startswith("Sorry about that.")
        assert "five9.route_value" not in t.call.attributes


def test_confirm_must_be_a_boolean() -> None:
    data = {
        "fallback": {"name": "g", "type": "skill_transfer", "value": "G"},
        "routes": [{"name": "b", "dtmf": "1", "type": "skill_transfer", "value": "B"}],
        "greeting": {"text": "hi"},
        "confirm": "sometimes",
    }
    with pytest.raises(RoutesFileError, match="confirm: must be true or false"):
        parse_routes(data)
    data["confirm"] = True
    assert parse_routes(data).confirm is True
