"""The recogniser bench's corpus and settings syntax (the measuring itself needs Festival)."""

from __future__ import annotations

from pathlib import Path

from bench_scripts import load

from byeline.agent.routes import load_routes

stt_accuracy = load("stt_accuracy")
ROUTES = Path(__file__).resolve().parents[2] / "src/byeline/examples/routes.yaml"


def test_every_expected_route_is_a_route_of_the_example_file() -> None:
    names = {route.name for route in load_routes(ROUTES).routes}
    expected = {route for _, route in stt_accuracy.CORPUS if route is not None}
    assert expected <= names
    assert expected == names  # every route is asked for at least once
    off_topic = [text for text, route in stt_accuracy.CORPUS if route is None]
    assert len(off_topic) == 8 and len(stt_accuracy.CORPUS) == 32


def test_settings_parse_to_pocketsphinx_option_types() -> None:
    name, options = stt_accuracy.parse_set("fast:ds=2,beam=1e-40,fwdflat=no,dict=x.dic")
    assert name == "fast"
    assert options == {"ds": 2, "beam": 1e-40, "fwdflat": False, "dict": "x.dic"}
    assert stt_accuracy.parse_set("shipped:") == ("shipped", {})
